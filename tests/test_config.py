"""Tests of TrainConfig: JSON round trip, rejected keys and values, and type coercion."""

from __future__ import annotations

import dataclasses
import json

import pytest

from trainable.config import ConfigError, TrainConfig

FIELD_NAMES = [field.name for field in dataclasses.fields(TrainConfig)]


# --- JSON round trip ---------------------------------------------------------------------------


def test_config_json_round_trip_defaults() -> None:
    config = TrainConfig()

    assert TrainConfig.from_json(config.to_json()) == config


def test_config_json_round_trip_every_field_changed() -> None:
    # Each value differs from its default, so a field that the round trip drops or renames
    # falls back to the default and the comparison fails.
    config = TrainConfig(
        depth=50,
        stem="dilated",
        dropout=0.875,
        epochs=7,
        batch_size=33,
        lr=0.0125,
        momentum=0.7,
        weight_decay=1e-4,
        nesterov=True,
        label_smoothing=0.1,
        scheduler="plateau",
        plateau_factor=0.3,
        plateau_patience=2,
        plateau_cooldown=5,
        plateau_eps=0.0,
        augment="randaugment+erasing",
        randaugment_ops=3,
        randaugment_magnitude=14,
        erasing_p=0.25,
        erasing_scale_min=0.05,
        erasing_scale_max=0.2,
        val_fraction=0.01,
        seed=42,
        init_from="runs/stage1/checkpoint.pt",
    )
    defaults = TrainConfig()

    restored = TrainConfig.from_json(config.to_json())

    for name in FIELD_NAMES:
        assert getattr(config, name) != getattr(defaults, name), f"{name} keeps its default"
    assert restored == config


def test_config_to_json_is_plain_object() -> None:
    values = json.loads(TrainConfig(lr=0.5).to_json())

    assert sorted(values) == sorted(FIELD_NAMES)
    assert values["lr"] == 0.5


def test_config_from_dict_partial_keeps_defaults() -> None:
    config = TrainConfig.from_dict({"depth": 34, "lr": 0.01})

    assert config == TrainConfig(depth=34, lr=0.01)


def test_config_from_json_invalid_json_raises() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        TrainConfig.from_json("{'depth': 18}")


@pytest.mark.parametrize("values", [[1, 2], "depth", 18, None])
def test_config_from_dict_non_object_raises(values) -> None:
    with pytest.raises(ConfigError, match="JSON object"):
        TrainConfig.from_dict(values)


# --- unknown keys ------------------------------------------------------------------------------


def test_config_unknown_key_names_key_and_known_keys() -> None:
    with pytest.raises(ConfigError) as raised:
        TrainConfig.from_dict({"depth": 18, "learning_rate": 0.1})

    message = str(raised.value)
    assert "'learning_rate'" in message
    for name in FIELD_NAMES:
        assert name in message, f"known key {name} is not listed"


# --- out-of-range values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("lr", -0.1, "must be a positive number"),
        ("lr", 0.0, "must be a positive number"),
        ("lr", float("nan"), "must be a positive number"),
        ("lr", float("inf"), "must be a positive number"),
        ("dropout", 1.0, "must be in [0, 1)"),
        ("dropout", 1.5, "must be in [0, 1)"),
        ("dropout", -0.1, "must be in [0, 1)"),
        ("depth", 20, "allowed values are 18, 34, 50"),
        ("depth", 101, "allowed values are 18, 34, 50"),
        ("stem", "imagenet", "allowed values are torchvision, dilated, cifar"),
        ("stem", "CIFAR", "allowed values are torchvision, dilated, cifar"),
        ("augment", "flip", "use none or a +-joined combination of basic, randaugment, erasing"),
        (
            "augment",
            "erasing+erasing",
            "use none or a +-joined combination of basic, randaugment, erasing",
        ),
        ("augment", "", "use none or a +-joined combination of basic, randaugment, erasing"),
        (
            "augment",
            "none+basic",
            "use none or a +-joined combination of basic, randaugment, erasing",
        ),
        ("scheduler", "step", "allowed values are cosine, plateau"),
        ("epochs", 0, "must be at least 1"),
        ("batch_size", 0, "must be at least 1"),
        ("momentum", 1.0, "must be in [0, 1)"),
        ("weight_decay", -1e-4, "must be >= 0"),
        ("label_smoothing", 1.0, "must be in [0, 1)"),
        ("plateau_factor", 1.0, "must be in (0, 1)"),
        ("plateau_factor", 0.0, "must be in (0, 1)"),
        ("plateau_patience", -1, "must be >= 0"),
        ("plateau_cooldown", -1, "must be >= 0"),
        ("randaugment_ops", 0, "must be in 1..14"),
        ("randaugment_magnitude", 31, "must be in 0..30"),
        ("erasing_p", 0.0, "must be in (0, 1]"),
        ("erasing_scale_max", 1.0, "must be < 1"),
        ("val_fraction", 0.0, "must be in (0, 1)"),
        ("val_fraction", 1.0, "must be in (0, 1)"),
    ],
)
def test_config_out_of_range_names_key_and_allowed(key: str, value, allowed: str) -> None:
    with pytest.raises(ConfigError) as raised:
        TrainConfig.from_dict({key: value})

    message = str(raised.value)
    assert f"config key {key!r}" in message
    assert allowed in message
    assert "\n" not in message


def test_config_erasing_scale_min_above_max_raises() -> None:
    with pytest.raises(ConfigError, match="'erasing_scale_min'"):
        TrainConfig.from_dict({"erasing_scale_min": 0.3, "erasing_scale_max": 0.2})


def test_config_nesterov_without_momentum_raises() -> None:
    with pytest.raises(ConfigError, match="'nesterov'"):
        TrainConfig.from_dict({"nesterov": True, "momentum": 0.0})


def test_config_constructor_validates() -> None:
    # Direct construction runs the same checks as from_dict.
    with pytest.raises(ConfigError, match="'depth'"):
        TrainConfig(depth=20)


def test_config_replace_validates() -> None:
    with pytest.raises(ConfigError, match="'dropout'"):
        TrainConfig().replace(dropout=1.0)


@pytest.mark.parametrize(
    "augment",
    ["none", "basic", "randaugment", "erasing", "basic+randaugment+erasing", "erasing+basic"],
)
def test_config_augment_combinations_accepted(augment: str) -> None:
    config = TrainConfig.from_dict({"augment": augment})

    expected = frozenset() if augment == "none" else frozenset(augment.split("+"))
    assert config.augmentations == expected


# --- type coercion -----------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [("depth", 34.0), ("epochs", 3.0), ("seed", 0.0)])
def test_config_integral_float_for_int_accepted(key: str, value: float) -> None:
    config = TrainConfig.from_dict({key: value})

    assert getattr(config, key) == int(value)
    assert type(getattr(config, key)) is int


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("epochs", 1.5),
        ("batch_size", 32.5),
        ("depth", True),
        ("epochs", True),
        ("seed", False),
        ("epochs", "3"),
        ("epochs", None),
        ("epochs", float("inf")),
    ],
)
def test_config_wrong_type_for_int_raises(key: str, value) -> None:
    with pytest.raises(ConfigError) as raised:
        TrainConfig.from_dict({key: value})

    message = str(raised.value)
    assert f"config key {key!r} must be int" in message
    assert repr(value) in message


def test_config_int_for_float_accepted() -> None:
    config = TrainConfig.from_dict({"lr": 1})

    assert config.lr == 1.0
    assert type(config.lr) is float


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("lr", True, "float"),
        ("lr", "0.1", "float"),
        ("stem", 18, "str"),
        ("nesterov", 1, "bool"),
        ("init_from", 5, "str or null"),
    ],
)
def test_config_wrong_type_raises(key: str, value, expected: str) -> None:
    with pytest.raises(ConfigError, match=f"config key '{key}' must be {expected}, got"):
        TrainConfig.from_dict({key: value})


def test_config_init_from_null_accepted() -> None:
    config = TrainConfig.from_dict({"init_from": None})

    assert config.init_from is None
