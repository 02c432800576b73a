"""``finetune``: stage 2 of the report's recipe, searched.

Every trial starts from the weights of one stage-1 checkpoint and keeps its architecture, and the
search varies what the report changed in stage 2: augmentation, learning rate and scheduler.
"""

from __future__ import annotations

import functools
from typing import Any

import optuna

from spaces.registry import DefineByRun, SearchSpace, SpaceContext, register
from spaces.resnet_family import suggest_augmentation, suggest_scheduler

# Stage 2 adds augmentation, so "none" is not offered.
AUGMENT_CHOICES = ["basic", "randaugment", "erasing", "randaugment+erasing"]
# Stage 2 keeps the architecture and the optimizer settings the report did not change. It also
# keeps stage 1's split (val_fraction and seed): another split would put images that stage 1
# trained on into the validation set.
KEPT_FROM_STAGE1 = (
    "depth", "stem", "dropout", "batch_size", "momentum", "weight_decay", "val_fraction", "seed",
)  # fmt: skip


def finetune(context: SpaceContext, trial: optuna.Trial) -> dict[str, Any]:
    base = context.base.to_dict()
    constants: dict[str, Any] = {
        **{name: base[name] for name in KEPT_FROM_STAGE1},
        "epochs": context.max_epochs,
        "init_from": context.init_from,
    }
    trial.suggest_float("lr", 1e-4, 0.3, log=True)
    suggest_scheduler(trial, constants)
    suggest_augmentation(trial, AUGMENT_CHOICES)
    return constants


def define(context: SpaceContext) -> DefineByRun:
    if context.base is None or context.init_from is None:
        raise ValueError("the finetune space needs the stage-1 config and checkpoint")
    return functools.partial(finetune, context)  # picklable, for Ray's searcher checkpoints


def initial_points(context: SpaceContext) -> list[dict[str, Any]]:
    # The report's champion recipe: lr 0.1, plateau (factor 0.3, cooldown 5), both augmentations.
    return [
        {
            "lr": 0.1,
            "scheduler": "plateau",
            "plateau_factor": 0.3,
            "plateau_patience": 10,
            "plateau_cooldown": 5,
            "augment": "randaugment+erasing",
            "randaugment_ops": 2,
            "randaugment_magnitude": 9,
            "erasing_p": 0.5,
            "erasing_scale_max": 0.33,
        }
    ]


SPACE = register(
    SearchSpace(
        name="finetune",
        summary="stage 2 of the two-stage recipe: from --init-from, search augmentation, "
        "lr and scheduler",
        define=define,
        initial_points=initial_points,
        needs_init_from=True,
    )
)
