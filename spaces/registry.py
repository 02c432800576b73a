"""The registry of named search spaces.

A space is an Optuna define-by-run function: it calls ``trial.suggest_*`` for each searched
hyperparameter, only for the choices that need it (plateau parameters only with the plateau
scheduler), and returns the constants of the trial. Both the suggested values and the constants
are keys of ``TrainConfig``, so a trial's config is valid as it comes out of the space.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from trainable.config import TrainConfig
from trainable.errors import UserError

DefineByRun = Callable[[optuna.Trial], dict[str, Any]]


# Conditional hyperparameters: each exists in a config only when its condition holds.
_CONDITIONS: dict[str, Callable[[dict[str, Any]], bool]] = {
    **dict.fromkeys(
        ["plateau_factor", "plateau_patience", "plateau_cooldown", "plateau_eps"],
        lambda config: config.get("scheduler") == "plateau",
    ),
    **dict.fromkeys(
        ["randaugment_ops", "randaugment_magnitude"],
        lambda config: "randaugment" in config.get("augment", ""),
    ),
    **dict.fromkeys(
        ["erasing_p", "erasing_scale_min", "erasing_scale_max"],
        lambda config: "erasing" in config.get("augment", ""),
    ),
}


def parameter_applies(name: str, config: dict[str, Any]) -> bool:
    """Tell whether a hyperparameter takes effect in a config (plateau_* only with plateau)."""
    condition = _CONDITIONS.get(name)
    return condition is None or condition(config)


class UnknownSpaceError(UserError):
    """A space name that is not registered."""


@dataclass(frozen=True)
class SpaceContext:
    """Settings of the search that a space builds its trials from."""

    max_epochs: int
    seed: int = 0
    # One validation split for every trial, so their validation accuracies are comparable.
    val_fraction: float = 0.1
    base: TrainConfig | None = None  # the stage-1 config that a fine-tune space starts from
    init_from: str | None = None  # the stage-1 checkpoint (absolute path)


@dataclass(frozen=True)
class SearchSpace:
    name: str
    summary: str
    define: Callable[[SpaceContext], DefineByRun]
    initial_points: Callable[[SpaceContext], list[dict[str, Any]]]
    needs_init_from: bool = False
    # A space of fixed trials runs each point once, with no early stopping, under one budget.
    fixed_trials: bool = False


_SPACES: dict[str, SearchSpace] = {}


def register(space: SearchSpace) -> SearchSpace:
    _SPACES[space.name] = space
    return space


def get_space(name: str) -> SearchSpace:
    if name not in _SPACES:
        raise UnknownSpaceError(
            f"unknown search space {name!r}; known spaces: {', '.join(sorted(_SPACES))} "
            "(see --list-spaces)"
        )
    return _SPACES[name]


def all_spaces() -> dict[str, SearchSpace]:
    return dict(_SPACES)


def sample_configs(space: SearchSpace, context: SpaceContext, count: int) -> list[dict]:
    """Sample configs from a space with Optuna's TPE sampler, as the search would, without Ray.

    Each trial is told a dummy value so that TPE moves past its random start-up trials.
    """
    sampler = optuna.samplers.TPESampler(seed=context.seed, multivariate=True, group=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    define = space.define(context)
    configs = []
    for number in range(count):
        trial = study.ask()
        constants = define(trial)
        configs.append({**trial.params, **constants})
        study.tell(trial, (number * 7919 % 101) / 100)
    return configs
