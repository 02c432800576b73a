"""The one config type of a trial: hyperparameters of the model, the optimizer and the data path.

Search spaces produce plain dicts. `TrainConfig.from_dict` validates them at the start of a trial,
and every error names the key and the allowed values.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from trainable.errors import UserError

DEPTHS = (18, 34, 50)
STEMS = ("torchvision", "dilated", "cifar")
SCHEDULERS = ("cosine", "plateau")
AUGMENTATIONS = ("basic", "randaugment", "erasing")  # basic: random crop with padding + flip


class ConfigError(UserError):
    """An invalid config value. The message is one line naming the key and the allowed values."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run. One epoch is one pass over the training split."""

    # model
    depth: int = 18
    stem: str = "cifar"
    dropout: float = 0.0  # probability of the Dropout before the final Linear layer

    # optimization: SGD with momentum, as in every run of the reference report
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1  # per batch, not scaled with batch size
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    label_smoothing: float = 0.0

    # learning-rate schedule: cosine (T_max = epochs) or ReduceLROnPlateau on validation accuracy
    scheduler: str = "cosine"
    plateau_factor: float = 0.1
    plateau_patience: int = 10  # epochs without improvement before the lr is reduced
    plateau_cooldown: int = 0  # epochs after a reduction before counting resumes
    plateau_eps: float = 1e-8  # lr changes smaller than this are ignored

    # augmentation: "none", or any "+"-joined combination of AUGMENTATIONS;
    # the parameters of an augmentation apply only when it is in the combination
    augment: str = "basic"
    randaugment_ops: int = 2  # RandAugment num_ops
    randaugment_magnitude: int = 9  # 0..30, the scale of torchvision's RandAugment
    erasing_p: float = 0.5  # RandomErasing probability per image
    erasing_scale_min: float = 0.02  # erased fraction of the image area
    erasing_scale_max: float = 0.33

    # data split and reproducibility
    val_fraction: float = 0.1  # share of trainval held out, stratified by class
    seed: int = 0

    # warm start: a checkpoint whose model weights initialize this run (pretrain, then fine-tune)
    init_from: str | None = None

    def __post_init__(self) -> None:
        for problem in _problems(self):
            raise ConfigError(problem)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a plain dict, rejecting unknown keys and wrong types."""
        if not isinstance(values, dict):
            raise ConfigError(f"a config must be a JSON object of hyperparameters, got {values!r}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown config key {unknown[0]!r}; known keys: {', '.join(sorted(known))}"
            )
        return cls(**{key: _coerce(known[key], value) for key, value in values.items()})

    @property
    def augmentations(self) -> frozenset[str]:
        return frozenset() if self.augment == "none" else frozenset(self.augment.split("+"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"config is not valid JSON ({err}); fix the file") from None
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> TrainConfig:
        return self.from_dict({**self.to_dict(), **changes})


def _coerce(spec: dataclasses.Field, value: Any) -> Any:
    """Accept JSON's and Optuna's spellings of a field's type: 1.0 for an int, 1 for a float."""
    kind = spec.type
    name = spec.name
    if value is None and "None" in kind:
        return None
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            return value
        elif isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind.startswith("str"):
        if isinstance(value, str):
            return value
    expected = kind.replace(" | None", " or null")
    raise ConfigError(f"config key {name!r} must be {expected}, got {value!r}")


def _problems(config: TrainConfig) -> list[str]:
    """Return every rule the config breaks, as one-line messages, in field order."""
    problems = []

    def check(ok: bool, key: str, rule: str) -> None:
        if not ok:
            problems.append(f"config key {key!r} = {getattr(config, key)!r} is invalid: {rule}")

    def finite(key: str) -> bool:
        value = getattr(config, key)
        return isinstance(value, (int, float)) and math.isfinite(value)

    check(config.depth in DEPTHS, "depth", f"allowed values are {', '.join(map(str, DEPTHS))}")
    check(config.stem in STEMS, "stem", f"allowed values are {', '.join(STEMS)}")
    check(finite("dropout") and 0 <= config.dropout < 1, "dropout", "must be in [0, 1)")
    check(config.epochs >= 1, "epochs", "must be at least 1")
    check(config.batch_size >= 1, "batch_size", "must be at least 1")
    check(finite("lr") and config.lr > 0, "lr", "must be a positive number")
    check(finite("momentum") and 0 <= config.momentum < 1, "momentum", "must be in [0, 1)")
    check(finite("weight_decay") and config.weight_decay >= 0, "weight_decay", "must be >= 0")
    check(not config.nesterov or config.momentum > 0, "nesterov", "Nesterov needs momentum > 0")
    check(
        finite("label_smoothing") and 0 <= config.label_smoothing < 1,
        "label_smoothing",
        "must be in [0, 1)",
    )
    check(
        config.scheduler in SCHEDULERS,
        "scheduler",
        f"allowed values are {', '.join(SCHEDULERS)}",
    )
    check(
        finite("plateau_factor") and 0 < config.plateau_factor < 1,
        "plateau_factor",
        "must be in (0, 1)",
    )
    check(config.plateau_patience >= 0, "plateau_patience", "must be >= 0")
    check(config.plateau_cooldown >= 0, "plateau_cooldown", "must be >= 0")
    check(finite("plateau_eps") and config.plateau_eps >= 0, "plateau_eps", "must be >= 0")
    parts = config.augment.split("+") if isinstance(config.augment, str) else [None]
    check(
        config.augment == "none"
        or (all(part in AUGMENTATIONS for part in parts) and len(set(parts)) == len(parts)),
        "augment",
        f"use none or a +-joined combination of {', '.join(AUGMENTATIONS)}",
    )
    check(1 <= config.randaugment_ops <= 14, "randaugment_ops", "must be in 1..14")
    check(0 <= config.randaugment_magnitude <= 30, "randaugment_magnitude", "must be in 0..30")
    check(finite("erasing_p") and 0 < config.erasing_p <= 1, "erasing_p", "must be in (0, 1]")
    check(
        finite("erasing_scale_min") and 0 < config.erasing_scale_min <= config.erasing_scale_max,
        "erasing_scale_min",
        "must be > 0 and <= erasing_scale_max",
    )
    check(
        finite("erasing_scale_max") and config.erasing_scale_max < 1,
        "erasing_scale_max",
        "must be < 1",
    )
    check(
        finite("val_fraction") and 0 < config.val_fraction < 1,
        "val_fraction",
        "must be in (0, 1)",
    )
    return problems
