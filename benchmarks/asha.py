"""ASHA's savings: epochs run by ASHA over epochs run by FIFO, on the same fixed configs.

The configs are sampled once from the resnet_family space with spaces.sample_configs and
restricted to cheap ones (depth 18, batch size at least 128). Both searches go through
search.tuner.build_tuner with a space whose initial points are exactly those configs, so the
only difference is the scheduler that build_scheduler picks: ASHA, or FIFO for fixed trials.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

import ray

from benchmarks.common import (
    Outcome,
    Row,
    Settings,
    fixed_space,
    median,
    start_local_ray,
    target_row,
    trial_epochs,
)
from search.options import Budget
from search.tuner import build_tuner
from spaces import SpaceContext, get_space, sample_configs
from trainable.data import load_dataset

logger = logging.getLogger(__name__)

TARGET = "<= 0.34"
ACCURACY_TOLERANCE = 0.01  # ASHA's best val_acc may be at most 1 point below FIFO's
TRIALS = 12
BUDGET = Budget(samples=TRIALS, max_epochs=9, grace_period=1, reduction_factor=3)
MIN_BATCH_SIZE = 128
CONCURRENCY = 2


def cheap_configs(seed: int) -> list[dict[str, Any]]:
    """Sample TRIALS configs of resnet_family and make them cheap: depth 18, batch >= 128."""
    context = SpaceContext(max_epochs=BUDGET.max_epochs, seed=seed)
    configs = sample_configs(get_space("resnet_family"), context, TRIALS)
    return [
        {**config, "depth": 18, "batch_size": max(MIN_BATCH_SIZE, config["batch_size"])}
        for config in configs
    ]


def run_search(configs: list[dict[str, Any]], settings: Settings, name: str, asha: bool) -> list:
    storage = settings.work_dir / "ray_results"
    shutil.rmtree(storage / name, ignore_errors=True)
    tuner = build_tuner(
        space=fixed_space(name, configs, fixed_trials=not asha),
        context=SpaceContext(max_epochs=BUDGET.max_epochs),
        budget=BUDGET,
        dataset=load_dataset(None, settings.cache_dir, progress=False),
        cpus=1.0,
        gpus=0.0,
        name=name,
        storage=str(storage),
        max_concurrent=CONCURRENCY,
        time_budget=None,
        max_failures=0,
    )
    grid = tuner.fit()
    if grid.num_errors:
        raise RuntimeError(f"{grid.num_errors} trials of {name} failed; see {storage / name}")
    return trial_epochs(grid)


def measure(settings: Settings) -> Outcome:
    outcome = Outcome("asha", "ASHA epochs over FIFO epochs, same configs")
    seeds = [0] if settings.quick else [0, 1, 2]
    runs = []
    start_local_ray(CONCURRENCY)
    try:
        for seed in seeds:
            configs = cheap_configs(seed)
            asha = run_search(configs, settings, f"asha-seed{seed}", asha=True)
            fifo = run_search(configs, settings, f"fifo-seed{seed}", asha=False)
            runs.append((seed, asha, fifo))
    finally:
        ray.shutdown()

    fractions, asha_best, fifo_best = [], [], []
    table = ["| seed | ASHA epochs | FIFO epochs | ASHA best val_acc | FIFO best val_acc |"]
    table.append("|---|---|---|---|---|")
    for seed, asha, fifo in runs:
        asha_epochs = sum(trial["epochs"] for trial in asha)
        fifo_epochs = sum(trial["epochs"] for trial in fifo)
        fractions.append(asha_epochs / fifo_epochs)
        asha_best.append(max(trial["best_val_acc"] for trial in asha))
        fifo_best.append(max(trial["best_val_acc"] for trial in fifo))
        table.append(
            f"| {seed} | {asha_epochs} | {fifo_epochs} | {asha_best[-1]:.4f} | {fifo_best[-1]:.4f} |"
        )
        epochs_by_trial = ", ".join(str(trial["epochs"]) for trial in asha)
        outcome.notes.append(f"seed {seed}: epochs of each ASHA trial: {epochs_by_trial}.")
    outcome.notes.insert(0, "\n".join(table))

    fraction_row = target_row(
        "asha_epoch_fraction", median(fractions), "", TARGET, f"{len(seeds)} seed(s)"
    )
    gap = median(fifo_best) - median(asha_best)
    accuracy_row = Row(
        "asha_best_val_acc - fifo_best_val_acc",
        -gap,
        "",
        target=f">= {-ACCURACY_TOLERANCE}",
        met=gap <= ACCURACY_TOLERANCE,
    )
    outcome.keys.update(
        asha_epoch_fraction=fraction_row.value,
        asha_best_val_acc=median(asha_best),
        fifo_best_val_acc=median(fifo_best),
    )
    outcome.rows += [
        fraction_row,
        Row("asha_best_val_acc", median(asha_best), ""),
        Row("fifo_best_val_acc", median(fifo_best), ""),
        accuracy_row,
    ]
    outcome.method = (
        f"{TRIALS} configs sampled with spaces.sample_configs(resnet_family) per seed, then "
        f"depth set to 18 and batch size raised to at least {MIN_BATCH_SIZE}; the digits; "
        f"max_t {BUDGET.max_epochs}, grace period {BUDGET.grace_period}, reduction factor "
        f"{BUDGET.reduction_factor:g}; {CONCURRENCY} trials at a time, one CPU each. Both "
        "searches through build_tuner (ASHA, or FIFO for fixed trials). Epochs are the last "
        "epoch each trial reported; best val_acc is the highest any trial reported at any "
        "epoch, the epoch whose checkpoint the search keeps. Seeds: "
        f"{', '.join(map(str, seeds))}; values are medians over seeds."
    )
    if fraction_row.met is False or accuracy_row.met is False:
        outcome.bound = (
            "asynchronous promotion: while a rung has fewer than reduction_factor results, "
            "ASHA promotes the trials that reach it first; with 2 trials at a time the early "
            "trials continue before enough results exist to stop them"
        )
        outcome.profile = "\n".join(outcome.notes[1:])
    return outcome
