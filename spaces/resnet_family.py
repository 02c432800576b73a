"""``resnet_family``: the report's knobs searched jointly.

Ranges contain every value the report used, so its runs can be evaluated first as they were.
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
from trainable.config import DEPTHS, STEMS
from trainable.presets import get_preset

# Weight decay is searched on a log scale; values under this threshold mean no weight decay,
# so 0 (used by several of the report's runs) stays reachable.
WEIGHT_DECAY_RANGE = (1e-6, 0.1)
WEIGHT_DECAY_ZERO_BELOW = 1e-5
AUGMENT_CHOICES = ["none", "basic", "randaugment", "erasing", "randaugment+erasing"]
# The report's best single-stage runs, tried before TPE proposes its own.
INITIAL_PRESETS = ("resnet34_aug", "modresnet", "resnet50_stage1")


def suggest_optimizer(trial: optuna.Trial, constants: dict[str, Any]) -> None:
    trial.suggest_int("batch_size", 16, 1024, log=True)
    trial.suggest_float("lr", 1e-4, 0.3, log=True)
    trial.suggest_float("momentum", 0.5, 0.99)
    weight_decay = trial.suggest_float("weight_decay", *WEIGHT_DECAY_RANGE, log=True)
    if weight_decay < WEIGHT_DECAY_ZERO_BELOW:
        constants["weight_decay"] = 0.0


def suggest_scheduler(trial: optuna.Trial, constants: dict[str, Any]) -> None:
    if trial.suggest_categorical("scheduler", ["cosine", "plateau"]) == "plateau":
        trial.suggest_float("plateau_factor", 0.1, 0.5)
        trial.suggest_int("plateau_patience", 0, 10)
        trial.suggest_int("plateau_cooldown", 0, 5)
        constants["plateau_eps"] = 0.0  # the report's plateau runs set eps 0


def suggest_augmentation(trial: optuna.Trial, choices: list[str]) -> None:
    augment = trial.suggest_categorical("augment", choices)
    if "randaugment" in augment:
        trial.suggest_int("randaugment_ops", 1, 3)
        trial.suggest_int("randaugment_magnitude", 1, 20)
    if "erasing" in augment:
        trial.suggest_float("erasing_p", 0.1, 0.7)
        trial.suggest_float("erasing_scale_max", 0.1, 0.4)


def space_point(config: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Return a config as a point of the space: the searched names that apply to it."""
    point = {name: config[name] for name in names if parameter_applies(name, config)}
    if point.get("weight_decay") == 0.0:
        point["weight_decay"] = WEIGHT_DECAY_RANGE[0]  # means 0, see WEIGHT_DECAY_ZERO_BELOW
    return point


SEARCHED = [
    "depth", "stem", "dropout", "batch_size", "lr", "momentum", "weight_decay", "scheduler",
    "plateau_factor", "plateau_patience", "plateau_cooldown", "augment", "randaugment_ops",
    "randaugment_magnitude", "erasing_p", "erasing_scale_max",
]  # fmt: skip


def resnet_family(context: SpaceContext, trial: optuna.Trial) -> dict[str, Any]:
    constants: dict[str, Any] = {
        "epochs": context.max_epochs,
        "seed": context.seed,
        "val_fraction": context.val_fraction,
    }
    trial.suggest_categorical("depth", list(DEPTHS))
    trial.suggest_categorical("stem", list(STEMS))
    trial.suggest_float("dropout", 0.0, 0.9)
    suggest_optimizer(trial, constants)
    suggest_scheduler(trial, constants)
    suggest_augmentation(trial, AUGMENT_CHOICES)
    return constants


def define(context: SpaceContext) -> DefineByRun:
    # A partial of a module-level function pickles, as Ray's searcher checkpoints require.
    return functools.partial(resnet_family, context)


def initial_points(context: SpaceContext) -> list[dict[str, Any]]:
    return [space_point(get_preset(name).config.to_dict(), SEARCHED) for name in INITIAL_PRESETS]


SPACE = register(
    SearchSpace(
        name="resnet_family",
        summary="depth, stem, dropout, optimizer, scheduler and augmentation of the ResNet "
        "family searched jointly; the report's best runs first",
        define=define,
        initial_points=initial_points,
    )
)
