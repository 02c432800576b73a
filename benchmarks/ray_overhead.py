"""Ray overhead: a search of K fixed trials against the same configs trained without Ray.

The Ray side goes through the search code path: search.tuner.build_tuner with a space of fixed
trials, so FIFO schedules them and OptunaSearch proposes the configs as initial points. Trials
run the product's trainable, which reads the dataset from the object store and reports a
checkpoint every epoch, two at a time on a local Ray started for the run. The direct side
trains the same configs with Trainer and fit in a pool of two spawned processes, one torch
thread each, without checkpoints.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    CpuMonitor,
    Outcome,
    Row,
    Settings,
    fixed_space,
    median,
    spread,
    start_local_ray,
    target_row,
    timed,
    trial_epochs,
)
from search.options import Budget
from spaces.registry import SpaceContext
from trainable.config import TrainConfig
from trainable.data import load_dataset, stratified_split
from trainable.loop import TrainData, Trainer, fit

logger = logging.getLogger(__name__)

TARGET = "<= 1.15"
CONCURRENCY = 2
# Each digits epoch of ResNet18 (cifar stem, batch 128) takes about 5 s on one thread of the
# benchmark machine, so 4 epochs make a trial of about 20 s.
EPOCHS = 4
LEARNING_RATES = (0.05, 0.1, 0.02, 0.2, 0.03, 0.08)


def trial_configs(count: int) -> list[dict[str, Any]]:
    base = TrainConfig(depth=18, stem="cifar", batch_size=128, augment="basic", epochs=EPOCHS)
    return [base.replace(lr=lr).to_dict() for lr in LEARNING_RATES[:count]]


def train_directly(config: dict[str, Any], cache_dir: Path) -> dict[str, float]:
    """Train one config as a trial would, without Ray; runs in a pool process."""
    torch.set_num_threads(1)  # as the trainable does for a 1-CPU trial
    started = time.perf_counter()
    dataset = load_dataset(None, cache_dir, progress=False)
    train_config = TrainConfig.from_dict(config)
    train_idx, val_idx = stratified_split(
        dataset.labels, train_config.val_fraction, train_config.seed
    )
    data = TrainData(dataset.images, dataset.labels, train_idx, val_idx, dataset.num_classes)
    trainer = Trainer(train_config, data, device="cpu")
    fit(trainer)
    seconds = time.perf_counter() - started

    # One checkpoint write, the part of the Ray side's per-epoch work that the direct side skips.
    with tempfile.TemporaryDirectory() as folder:
        save_seconds, _ = timed(lambda: trainer.save(Path(folder) / "checkpoint.pt"))
    return {
        "seconds": seconds,
        "save_seconds": save_seconds,
        "val_acc": trainer.history[-1]["val_acc"],
    }


def run_directly(
    configs: list[dict[str, Any]], cache_dir: Path
) -> tuple[float, list[dict], dict[str, float]]:
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with CpuMonitor() as cpu:
        with concurrent.futures.ProcessPoolExecutor(CONCURRENCY, mp_context=context) as pool:
            trials = list(pool.map(train_directly, configs, [cache_dir] * len(configs)))
    return time.perf_counter() - started, trials, cpu.seconds_by_role()


def run_with_ray(
    configs: list[dict[str, Any]], cache_dir: Path, storage: Path, name: str
) -> dict[str, Any]:
    import ray

    from search.tuner import build_tuner

    dataset = load_dataset(None, cache_dir, progress=False)
    space = fixed_space("benchmark-fixed", configs, fixed_trials=True)
    started = time.perf_counter()
    try:
        with CpuMonitor() as cpu:
            start_local_ray(CONCURRENCY)
            ray_started = time.perf_counter()
            tuner = build_tuner(
                space=space,
                context=SpaceContext(max_epochs=EPOCHS),
                budget=Budget(len(configs), EPOCHS, grace_period=EPOCHS, reduction_factor=3),
                dataset=dataset,
                cpus=1.0,
                gpus=0.0,
                name=name,
                storage=str(storage),
                max_concurrent=CONCURRENCY,
                time_budget=None,
                max_failures=0,
            )
            grid = tuner.fit()
            finished = time.perf_counter()
    finally:
        ray.shutdown()
    trials = trial_epochs(grid)
    return {
        "cpu": cpu.seconds_by_role(),
        "seconds": finished - started,
        "startup_seconds": ray_started - started,
        "trials": trials,
        "errors": grid.num_errors,
    }


def measure(settings: Settings) -> Outcome:
    outcome = Outcome("ray_overhead", "Ray Tune overhead (search code path over direct training)")
    count = 2 if settings.quick else 6
    configs = trial_configs(count)
    load_dataset(None, settings.cache_dir, progress=False)  # writes the digits once
    storage = settings.work_dir / "ray_results"

    # Alternate the two sides, so that a change in the machine's load hits both.
    direct, with_ray, without_startup, trial_seconds = [], [], [], {"direct": [], "ray": []}
    save_seconds, cpu_direct, cpu_ray = [], [], []
    for repetition in range(settings.repetitions):
        seconds, trials, cpu = run_directly(configs, settings.cache_dir)
        cpu_direct.append(cpu)
        direct.append(seconds)
        trial_seconds["direct"] += [trial["seconds"] for trial in trials]
        save_seconds += [trial["save_seconds"] for trial in trials]

        name = f"overhead-{repetition}"
        shutil.rmtree(storage / name, ignore_errors=True)
        ray_run = run_with_ray(configs, settings.cache_dir, storage, name)
        if ray_run["errors"]:
            raise RuntimeError(f"{ray_run['errors']} Ray trials failed; see {storage / name}")
        cpu_ray.append(ray_run["cpu"])
        with_ray.append(ray_run["seconds"])
        without_startup.append(ray_run["seconds"] - ray_run["startup_seconds"])
        trial_seconds["ray"] += [trial["seconds"] for trial in ray_run["trials"]]

    ratios = [a / b for a, b in zip(with_ray, direct, strict=True)]
    ratios_without = [a / b for a, b in zip(without_startup, direct, strict=True)]
    row = target_row(
        "ray_overhead",
        median(ratios),
        "",
        TARGET,
        f"{median(with_ray):.1f} / {median(direct):.1f} s, Ray start-up included",
    )
    outcome.keys["ray_overhead"] = row.value
    outcome.keys["ray_overhead_without_startup"] = median(ratios_without)
    outcome.rows += [
        row,
        Row(
            "ray_overhead_without_startup",
            median(ratios_without),
            "",
            detail=f"{median(without_startup):.1f} / {median(direct):.1f} s",
        ),
        Row("search wall time with Ray", median(with_ray), "s", detail=spread(with_ray)),
        Row("wall time without Ray", median(direct), "s", detail=spread(direct)),
        Row(
            "trial time in Ray (time_total_s)",
            median(trial_seconds["ray"]),
            "s",
            detail=spread(trial_seconds["ray"]),
        ),
        Row(
            "trial time without Ray",
            median(trial_seconds["direct"]),
            "s",
            detail=spread(trial_seconds["direct"]),
        ),
        Row("one checkpoint write", median(save_seconds), "s", detail=spread(save_seconds)),
    ]
    outcome.method = (
        f"{count} trials x {EPOCHS} epochs of ResNet18 (cifar stem, batch 128, basic "
        f"augmentation) on the digits, {CONCURRENCY} at a time, one CPU and one torch thread "
        "per trial. Ray side: ray.init(num_cpus=2, include_dashboard=False), then "
        "build_tuner with a space of fixed trials (FIFO, OptunaSearch initial points), "
        "tuner.fit; the key includes the start-up, the second key leaves it out. Direct side: "
        "a spawn process pool of 2 (start-up included) running load_dataset, Trainer and fit. "
        f"{settings.repetitions} repetitions, sides alternating; values are medians of the "
        "per-repetition ratios."
    )
    cpu_totals = [median([sum(run.values()) for run in runs]) for runs in (cpu_direct, cpu_ray)]
    outcome.rows.append(
        Row(
            "CPU seconds with Ray / without Ray",
            cpu_totals[1] / cpu_totals[0],
            "",
            detail=f"{cpu_totals[1]:.0f} / {cpu_totals[0]:.0f} s, all processes of each side; "
            "less sensitive to other jobs than wall time",
        )
    )
    outcome.notes.append(_cpu_table(cpu_direct, cpu_ray))
    if not row.met:
        startup = median([a - b for a, b in zip(with_ray, without_startup, strict=True)])
        per_trial = median(trial_seconds["ray"]) - median(trial_seconds["direct"])
        outcome.profile = (
            f"Ray start-up (ray.init): {startup:.1f} s per search.\n"
            f"Trial time in Ray minus trial time without Ray: {per_trial:+.1f} s per trial "
            f"({EPOCHS} epochs; each Ray epoch also writes and reports a checkpoint of "
            f"{median(save_seconds):.2f} s write time).\n"
            f"Rest (trial scheduling, actor start-up, experiment state syncs): "
            f"{median(with_ray) - startup - median(direct):.1f} s minus the per-trial "
            "difference times the trial waves."
        )
        outcome.bound = (
            "fixed costs of Ray (start-up and actor start per trial) and the checkpoint written "
            "every epoch; they shrink relative to longer trials"
        )
    return outcome


def _cpu_table(direct: list[dict[str, float]], with_ray: list[dict[str, float]]) -> str:
    """Return a markdown table of CPU seconds per process role, median over repetitions."""
    roles = list(dict.fromkeys(role for run in with_ray + direct for role in run))
    lines = [
        "CPU seconds by process (user + system, median over repetitions; the sampling thread "
        "adds a little to the driver):",
        "",
        "| process | without Ray | with Ray |",
        "|---|---|---|",
    ]
    for role in roles:
        cells = []
        for runs in (direct, with_ray):
            values = [run[role] for run in runs if role in run]
            cells.append(f"{median(values):.1f}" if values else "-")
        lines.append(f"| {role} | {cells[0]} | {cells[1]} |")
    totals = [median([sum(run.values()) for run in runs]) for runs in (direct, with_ray)]
    lines.append(f"| total | {totals[0]:.1f} | {totals[1]:.1f} |")
    return "\n".join(lines)
