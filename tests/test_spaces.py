"""Search spaces: configs sampled through Optuna are valid, conditional and reproducible."""

from __future__ import annotations

import optuna
import pytest

from spaces import SpaceContext, all_spaces, get_space, sample_configs
from spaces.registry import UnknownSpaceError, parameter_applies
from spaces.report import SINGLE_STAGE_RUNS
from spaces.resnet_family import WEIGHT_DECAY_ZERO_BELOW
from trainable.config import TrainConfig
from trainable.presets import get_preset

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONTEXT = SpaceContext(
    max_epochs=5,
    seed=3,
    val_fraction=0.2,
    base=get_preset("resnet34_aug").config,
    init_from="/stage1/checkpoint.pt",
)
SPACE_NAMES = ["resnet_family", "report", "finetune"]


@pytest.fixture(scope="module", params=SPACE_NAMES)
def sampled(request):
    space = get_space(request.param)
    return space, sample_configs(space, CONTEXT, 200)


def test_registry_lists_every_space():
    assert sorted(all_spaces()) == sorted(SPACE_NAMES)


def test_registry_unknown_space_lists_known():
    with pytest.raises(UnknownSpaceError, match="resnet_family") as caught:
        get_space("resnet_famly")
    assert "resnet_famly" in str(caught.value)


def test_space_configs_are_valid(sampled):
    space, configs = sampled
    for config in configs:
        TrainConfig.from_dict(config)  # raises ConfigError on any invalid value


def test_space_conditional_parameters_only_with_their_choice(sampled):
    space, configs = sampled
    stray = [
        (name, config)
        for config in configs
        for name in config
        if not parameter_applies(name, config)
    ]
    assert stray == []


def test_space_epochs_are_max_epochs(sampled):
    space, configs = sampled
    assert {config["epochs"] for config in configs} == {CONTEXT.max_epochs}


def test_space_plateau_parameters_appear(sampled):
    space, configs = sampled
    plateau = [config for config in configs if config["scheduler"] == "plateau"]
    assert plateau, "no trial chose the plateau scheduler"
    assert all("plateau_cooldown" in config for config in plateau)


def test_space_sampling_is_seeded():
    space = get_space("resnet_family")
    assert sample_configs(space, CONTEXT, 12) == sample_configs(space, CONTEXT, 12)


def test_resnet_family_covers_the_family():
    configs = sample_configs(get_space("resnet_family"), CONTEXT, 200)
    assert {config["depth"] for config in configs} == {18, 34, 50}
    assert {config["stem"] for config in configs} == {"torchvision", "dilated", "cifar"}
    assert len({config["augment"] for config in configs}) == 5


def test_resnet_family_weight_decay_reaches_zero():
    configs = sample_configs(get_space("resnet_family"), CONTEXT, 200)
    decays = [config["weight_decay"] for config in configs]
    assert 0.0 in decays
    assert all(decay == 0.0 or decay >= WEIGHT_DECAY_ZERO_BELOW for decay in decays)


def test_finetune_keeps_stage1_architecture():
    configs = sample_configs(get_space("finetune"), CONTEXT, 50)
    base = CONTEXT.base
    assert {(c["depth"], c["stem"], c["dropout"]) for c in configs} == {
        (base.depth, base.stem, base.dropout)
    }
    assert {config["init_from"] for config in configs} == {CONTEXT.init_from}


def test_finetune_keeps_stage1_split():
    configs = sample_configs(get_space("finetune"), CONTEXT, 20)
    base = CONTEXT.base
    assert {(c["val_fraction"], c["seed"]) for c in configs} == {(base.val_fraction, base.seed)}


def test_space_uses_search_split(sampled):
    space, configs = sampled
    if space.name == "finetune":
        pytest.skip("finetune keeps the stage-1 split")
    assert {config["val_fraction"] for config in configs} == {CONTEXT.val_fraction}


def _enqueued_configs(space_name: str) -> list[dict]:
    """Run the space's initial points through an Optuna study, as OptunaSearch enqueues them."""
    space = get_space(space_name)
    study = optuna.create_study(direction="maximize")
    points = space.initial_points(CONTEXT)
    for point in points:
        study.enqueue_trial(point)
    define = space.define(CONTEXT)
    configs = []
    for _ in points:
        trial = study.ask()
        constants = define(trial)
        configs.append({**trial.params, **constants})
        study.tell(trial, 0.5)
    return configs


def test_report_space_yields_the_report_runs():
    configs = _enqueued_configs("report")
    expected = [
        get_preset(name).config.replace(
            epochs=CONTEXT.max_epochs, seed=CONTEXT.seed, val_fraction=CONTEXT.val_fraction
        )
        for name in SINGLE_STAGE_RUNS
    ]
    assert [TrainConfig.from_dict(config) for config in configs] == expected


def test_report_space_has_seven_single_stage_runs():
    assert SINGLE_STAGE_RUNS == [
        "resnet18_baseline", "modif2", "modif4", "modresnet", "modresnet_v2", "resnet34_aug",
        "resnet50_stage1",
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["resnet34_aug", "modresnet", "resnet50_stage1"])
def test_resnet_family_initial_points_are_report_runs(name):
    configs = [TrainConfig.from_dict(config) for config in _enqueued_configs("resnet_family")]
    expected = get_preset(name).config.replace(
        epochs=CONTEXT.max_epochs, seed=CONTEXT.seed, val_fraction=CONTEXT.val_fraction
    )
    assert expected in configs
