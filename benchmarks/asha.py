"""ASHA's savings: epochs run by ASHA over epochs run by FIFO, on the same fixed configs.

The configs are sampled once from the resnet_family space with spaces.sample_configs and
restricted to cheap ones (depth 18, batch size at least 128). Both searches go through
search.tuner.build_tuner with a space whose initial points are exactly those configs, so the
only difference is the scheduler that build_scheduler picks: ASHA, or FIFO for fixed trials.
"""

from __future__ import annotations

import json
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
    outcome.notes.append(_trial_table(*runs[0][1:]))

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
    bounds = []
    if fraction_row.met is False:
        bounds.append(
            "ASHA's asynchronous rungs: a trial that reaches a rung is compared only with the "
            "results recorded there before it (the first one always continues), so the early "
            "trials run longer than a synchronous halving would let them"
        )
    if accuracy_row.met is False:
        bounds.append(
            "ASHA's early stopping itself: a config that learns slowly in its first epochs "
            "falls below a rung's cutoff and stops, although FIFO's longer run shows it ends "
            "best (see the per-config table); a larger grace period trades epochs for that risk"
        )
    outcome.bound = "; ".join(bounds)
    return outcome


def _config_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def _trial_table(asha: list[dict], fifo: list[dict]) -> str:
    """Return a markdown table: each config's epochs and val_acc under ASHA and under FIFO."""
    fifo_by_config = {_config_key(trial["config"]): trial for trial in fifo}
    lines = [
        "First seed, each config (sorted by FIFO's best val_acc): epochs ASHA gave it, its "
        "val_acc at ASHA's last epoch, FIFO's val_acc at that epoch, FIFO's best.",
        "",
        "| config | ASHA epochs | ASHA last val_acc | FIFO val_acc, same epoch | FIFO best |",
        "|---|---|---|---|---|",
    ]
    rows = []
    for trial in asha:
        twin = fifo_by_config.get(_config_key(trial["config"]))
        if twin is None or not trial["val_acc"]:
            continue
        epoch = trial["epochs"]
        same_epoch = twin["val_acc"][epoch - 1] if len(twin["val_acc"]) >= epoch else float("nan")
        config = trial["config"]
        label = (
            f"{config['stem']}, batch {config['batch_size']}, lr {config['lr']:.3g}, "
            f"{config['scheduler']}, {config['augment']}"
        )
        rows.append((twin["best_val_acc"], label, epoch, trial["val_acc"][-1], same_epoch))
    for best, label, epoch, last, same_epoch in sorted(rows, reverse=True):
        lines.append(f"| {label} | {epoch} | {last:.4f} | {same_epoch:.4f} | {best:.4f} |")
    return "\n".join(lines)
