"""Tests of the presets: the reference report's ten runs as configs."""

from __future__ import annotations

import pytest

from trainable.config import TrainConfig
from trainable.presets import PRESETS, UnknownPresetError, get_preset

# The report's table, where dropout "none" is 0.0 and augmentation "-" is "none".
# name: depth, stem, dropout, epochs, batch size, lr, momentum, weight decay, scheduler, augment
REPORT_RUNS = {
    "resnet18_baseline": (18, "torchvision", 0.0, 200, 1024, 0.01, 0.7, 0.03, "cosine", "none"),
    "modif2": (18, "dilated", 0.5, 100, 500, 0.1, 0.9, 0.01, "cosine", "none"),
    "modif4": (34, "dilated", 0.5, 100, 100, 0.1, 0.9, 0.001, "cosine", "none"),
    "modresnet": (18, "cifar", 0.2, 50, 20, 0.001, 0.9, 0.0, "cosine", "none"),
    "modresnet_v2": (18, "cifar", 0.5, 50, 100, 0.001, 0.9, 0.0, "cosine", "none"),
    "modresnet_v2_finetune": (18, "cifar", 0.5, 50, 100, 0.01, 0.9, 0.0, "plateau", "randaugment"),
    "resnet34_aug": (34, "cifar", 0.5, 50, 200, 0.1, 0.9, 0.0001, "plateau", "erasing"),
    "champion": (34, "cifar", 0.5, 100, 300, 0.1, 0.9, 0.0001, "plateau", "randaugment+erasing"),
    "resnet50_stage1": (50, "cifar", 0.875, 50, 200, 0.1, 0.9, 0.0001, "plateau", "erasing"),
    "resnet50_stage2": (
        50,
        "cifar",
        0.875,
        100,
        300,
        0.1,
        0.9,
        0.0001,
        "plateau",
        "randaugment+erasing",
    ),
}
COLUMNS = (
    "depth",
    "stem",
    "dropout",
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "scheduler",
    "augment",
)

# name: plateau factor, cooldown, eps. The report names them for its stage-1 and stage-2 runs,
# and the fine-tune of ModResNet_v2 keeps PyTorch's defaults.
PLATEAU_RUNS = {
    "modresnet_v2_finetune": (0.1, 0, 1e-8),
    "resnet34_aug": (0.1, 1, 0.0),
    "champion": (0.3, 5, 0.0),
    "resnet50_stage1": (0.1, 1, 0.0),
    "resnet50_stage2": (0.3, 5, 0.0),
}

# name: stage-1 preset whose weights initialize it
TWO_STAGE = {
    "modresnet_v2_finetune": "modresnet_v2",
    "champion": "resnet34_aug",
    "resnet50_stage2": "resnet50_stage1",
}

KAGGLE_SCORES = {
    "resnet18_baseline": 0.2938,
    "modif2": 0.3542,
    "modif4": 0.441,
    "modresnet": 0.50339,
    "modresnet_v2": None,
    "modresnet_v2_finetune": 0.604,
    "resnet34_aug": None,
    "champion": 0.6768,
    "resnet50_stage1": None,
    "resnet50_stage2": 0.7064,
}


def test_presets_are_the_ten_report_runs() -> None:
    assert sorted(PRESETS) == sorted(REPORT_RUNS)


@pytest.mark.parametrize("name", list(REPORT_RUNS))
@pytest.mark.parametrize("column", COLUMNS)
def test_preset_matches_report_table(name: str, column: str) -> None:
    expected = REPORT_RUNS[name][COLUMNS.index(column)]
    config = get_preset(name).config

    if column == "augment":
        # The order of a "+" combination does not matter.
        assert config.augmentations == TrainConfig(augment=expected).augmentations
    else:
        assert getattr(config, column) == expected


@pytest.mark.parametrize("name", list(PLATEAU_RUNS))
def test_preset_plateau_parameters(name: str) -> None:
    factor, cooldown, eps = PLATEAU_RUNS[name]
    config = get_preset(name).config

    assert config.plateau_factor == factor
    assert config.plateau_cooldown == cooldown
    assert config.plateau_eps == eps


@pytest.mark.parametrize("name", ["resnet34_aug", "champion", "resnet50_stage1", "resnet50_stage2"])
def test_preset_random_erasing_probability(name: str) -> None:
    # torchvision's RandomErasing default, which the report kept.
    assert get_preset(name).config.erasing_p == 0.5


@pytest.mark.parametrize("name", ["modresnet_v2_finetune", "champion"])
def test_preset_randaugment_torchvision_defaults(name: str) -> None:
    config = get_preset(name).config

    assert config.randaugment_ops == 2
    assert config.randaugment_magnitude == 9


def test_preset_resnet50_stage2_stronger_randaugment() -> None:
    stage2 = get_preset("resnet50_stage2").config
    champion = get_preset("champion").config

    assert stage2.randaugment_ops * stage2.randaugment_magnitude > (
        champion.randaugment_ops * champion.randaugment_magnitude
    )


def test_preset_resnet34_aug_uses_99_to_1_split() -> None:
    assert get_preset("resnet34_aug").config.val_fraction == 0.01


@pytest.mark.parametrize("name", list(REPORT_RUNS))
def test_preset_optimizer_is_plain_sgd_momentum(name: str) -> None:
    config = get_preset(name).config

    assert config.nesterov is False
    assert config.label_smoothing == 0.0


@pytest.mark.parametrize("name", list(REPORT_RUNS))
def test_preset_stage1_name(name: str) -> None:
    assert get_preset(name).stage1 == TWO_STAGE.get(name)


@pytest.mark.parametrize(("name", "stage1"), list(TWO_STAGE.items()))
def test_preset_stage1_has_same_architecture(name: str, stage1: str) -> None:
    # The fine-tune loads the stage-1 weights, so depth and stem must match.
    config = get_preset(name).config
    first = get_preset(stage1).config

    assert first.depth == config.depth
    assert first.stem == config.stem
    assert get_preset(stage1).stage1 is None


@pytest.mark.parametrize("name", list(REPORT_RUNS))
def test_preset_kaggle_score(name: str) -> None:
    assert get_preset(name).kaggle_score == KAGGLE_SCORES[name]


@pytest.mark.parametrize("name", list(REPORT_RUNS))
def test_preset_name_matches_key(name: str) -> None:
    assert get_preset(name).name == name


@pytest.mark.parametrize("name", list(REPORT_RUNS))
def test_preset_config_survives_json_round_trip(name: str) -> None:
    config = get_preset(name).config

    assert TrainConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize("name", ["resnet19", "", "ModResNet", "champion "])
def test_get_preset_unknown_lists_known_names(name: str) -> None:
    with pytest.raises(UnknownPresetError) as raised:
        get_preset(name)

    message = str(raised.value)
    assert repr(name) in message
    for known in REPORT_RUNS:
        assert known in message, f"{known} is not listed"
