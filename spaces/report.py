"""``report``: the reference report's single-stage runs as fixed trials under one budget.

Each name takes only the values the report used, the report's runs are the initial points, and
the search runs exactly one trial per run with no early stopping. So the comparison is the
report's, on the user's data and epoch budget. Epochs, seed and the validation split are the
search's, the same for every run, so the runs are compared on one validation set.
"""

from __future__ import annotations

import functools
from typing import Any

import optuna

from spaces.registry import (
    DefineByRun,
    SearchSpace,
    SpaceContext,
    parameter_applies,
    register,
)
from trainable.config import TrainConfig
from trainable.presets import PRESETS

SINGLE_STAGE_RUNS = [name for name, preset in PRESETS.items() if preset.stage1 is None]
# Choices come before the names that depend on them, so conditions can be checked in order.
_SET_BY_SEARCH = ("epochs", "seed", "val_fraction", "init_from")
_NAMES = [name for name in TrainConfig().to_dict() if name not in _SET_BY_SEARCH]
_ORDERED = sorted(_NAMES, key=lambda name: not parameter_applies(name, {}))


def runs() -> list[dict[str, Any]]:
    return [PRESETS[name].config.to_dict() for name in SINGLE_STAGE_RUNS]


def report(context: SpaceContext, trial: optuna.Trial) -> dict[str, Any]:
    report_runs = runs()
    chosen: dict[str, Any] = {}
    for name in _ORDERED:
        if not parameter_applies(name, chosen):
            continue
        values = {run[name] for run in report_runs if parameter_applies(name, run)}
        values = sorted(values, key=repr)
        if len(values) == 1:
            chosen[name] = values[0]
        else:
            chosen[name] = trial.suggest_categorical(name, values)
    constants = {name: value for name, value in chosen.items() if name not in trial.params}
    return {
        **constants,
        "epochs": context.max_epochs,
        "seed": context.seed,
        "val_fraction": context.val_fraction,
    }


def define(context: SpaceContext) -> DefineByRun:
    return functools.partial(report, context)  # picklable, for Ray's searcher checkpoints


def initial_points(context: SpaceContext) -> list[dict[str, Any]]:
    return [{name: run[name] for name in _NAMES if parameter_applies(name, run)} for run in runs()]


SPACE = register(
    SearchSpace(
        name="report",
        summary=f"the reference report's {len(SINGLE_STAGE_RUNS)} single-stage runs as fixed "
        "trials, each for --max-epochs with no early stopping",
        define=define,
        initial_points=initial_points,
        fixed_trials=True,
    )
)
