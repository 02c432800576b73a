"""Tests of the training loop on the CPU: exact resume, warm start, checkpoints and failures.

Runs train ResNet18 with the cifar stem for a few epochs on a few hundred 8x8 digits.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trainable.checkpoint import CheckpointError
from trainable.config import TrainConfig
from trainable.data import load_dataset, stratified_split
from trainable.loop import NonFiniteLossError, TrainData, Trainer, fit

pytestmark = pytest.mark.usefixtures("search_cache")

SUBSET = 210  # digits used for training and validation: 170 train, 40 val
SMALL = TrainConfig(
    depth=18, stem="cifar", dropout=0.2, epochs=3, batch_size=40, lr=0.05, augment="basic"
)
METRIC_KEYS = {
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "epoch_seconds",
    "images_per_second",
}
# Metrics that depend only on the computation, not on the wall clock.
EXACT_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run torch on one intra-op thread.

    The runs are small, and two threads that wait on each other are several times slower when
    other processes load the CPU. One thread also fixes the order of floating-point sums.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits(search_cache):
    return load_dataset(progress=False)


@pytest.fixture(scope="module")
def digits_data(digits) -> TrainData:
    """The first 210 digits, split 80:20 by class. Images stay the read-only memory map."""
    train_idx, val_idx = stratified_split(digits.labels[:SUBSET], 0.2, seed=0)
    return TrainData(digits.images, digits.labels, train_idx, val_idx, digits.num_classes)


@pytest.fixture(scope="module")
def cosine_run(digits_data, tmp_path_factory) -> tuple[Trainer, Path]:
    """Train SMALL for 3 epochs and return the trainer and its checkpoint after epoch 2."""
    folder = tmp_path_factory.mktemp("cosine_run")
    checkpoint = folder / "epoch2.pt"

    def save_after_epoch_2(metrics: dict[str, float], trainer: Trainer) -> None:
        if metrics["epoch"] == 2:
            trainer.save(checkpoint)

    trainer = Trainer(SMALL, digits_data, device="cpu")
    fit(trainer, save_after_epoch_2)
    return trainer, checkpoint


def constant_val_data(digits) -> TrainData:
    """Return 120 digits to train on and a validation set on which accuracy never changes.

    The validation set is one image repeated once with every label, so whatever class the model
    predicts for it, exactly one of the 10 copies is right and val_acc stays 0.1. A
    ReduceLROnPlateau on val_acc then finds no improvement after epoch 1, so only its patience and
    cooldown counters decide the learning rate.
    """
    classes = digits.num_classes
    images = np.concatenate([digits.images[:120], np.repeat(digits.images[:1], classes, axis=0)])
    labels = np.concatenate([digits.labels[:120], np.arange(classes)])
    return TrainData(images, labels, np.arange(120), np.arange(120, 120 + classes), classes)


def random_data(classes: int = 4) -> TrainData:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(40) % classes
    return TrainData(images, labels, np.arange(32), np.arange(32, 40), classes)


# --- exact resume ------------------------------------------------------------------------------


def test_trainer_resume_mid_cooldown_reproduces_run(digits, tmp_path: Path) -> None:
    config = SMALL.replace(
        epochs=6,
        batch_size=30,
        augment="basic+erasing",
        scheduler="plateau",
        plateau_patience=0,
        plateau_cooldown=2,
        plateau_factor=0.5,
    )
    data = constant_val_data(digits)
    checkpoint = tmp_path / "checkpoint.pt"
    saved_scheduler = {}

    def save_after_first_reduction(metrics: dict[str, float], trainer: Trainer) -> None:
        scheduler = trainer.scheduler
        if not saved_scheduler and scheduler.cooldown_counter > 0:
            trainer.save(checkpoint)
            saved_scheduler.update(scheduler.state_dict())

    uninterrupted = Trainer(config, data, device="cpu")
    fit(uninterrupted, save_after_first_reduction)
    resumed = Trainer(config, data, device="cpu")
    resumed.resume(checkpoint)
    fit(resumed)

    # The checkpoint was taken right after the first reduction, inside the cooldown.
    saved_epoch = saved_scheduler["last_epoch"]
    assert saved_epoch == 2
    assert saved_scheduler["cooldown_counter"] == 2
    assert saved_scheduler["_last_lr"] == [config.lr * 0.5]
    # The lr curve has a second reduction after the checkpoint, which a resume that lost the
    # cooldown counter would place two epochs too early.
    lrs = [metrics["lr"] for metrics in uninterrupted.history]
    assert lrs == [0.05, 0.05, 0.025, 0.025, 0.025, 0.0125]
    assert len(resumed.history) == config.epochs
    for expected, actual in zip(uninterrupted.history, resumed.history, strict=True):
        for key in EXACT_KEYS:
            assert actual[key] == expected[key], f"{key} of epoch {expected['epoch']}"


def test_trainer_resume_restores_epoch_counter(cosine_run, digits_data) -> None:
    uninterrupted, checkpoint = cosine_run

    trainer = Trainer(SMALL, digits_data, device="cpu")
    trainer.resume(checkpoint)

    assert trainer.epoch == 2
    assert [metrics["epoch"] for metrics in trainer.history] == [1, 2]


def test_fit_after_resume_matches_run(cosine_run, digits_data) -> None:
    uninterrupted, checkpoint = cosine_run
    trainer = Trainer(SMALL, digits_data, device="cpu")
    trainer.resume(checkpoint)

    history = fit(trainer)

    assert [metrics["epoch"] for metrics in history] == [1, 2, 3]
    for key in EXACT_KEYS:
        assert history[2][key] == uninterrupted.history[2][key], key


def test_trainer_resume_extends_cosine_schedule(tmp_path: Path) -> None:
    data = random_data()
    config = TrainConfig(epochs=2, batch_size=16, lr=0.1, augment="none")
    first = Trainer(config, data, device="cpu")
    fit(first)
    first.save(tmp_path / "checkpoint.pt")

    extended = Trainer(config.replace(epochs=5), data, device="cpu")
    extended.resume(tmp_path / "checkpoint.pt")
    lrs = [metrics["lr"] for metrics in fit(extended)][2:]

    # The epochs after the resume follow the 5-epoch cosine curve.
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * epoch / 5)) for epoch in (2, 3, 4)]
    assert lrs == pytest.approx(expected), lrs
    assert all(lr > 0 for lr in lrs), lrs
    assert lrs == sorted(lrs, reverse=True), lrs


def test_trainer_resume_other_config_raises(cosine_run, digits_data) -> None:
    _, checkpoint = cosine_run
    trainer = Trainer(SMALL.replace(lr=0.01), digits_data, device="cpu")

    with pytest.raises(CheckpointError, match="another config") as raised:
        trainer.resume(checkpoint)

    assert str(checkpoint) in str(raised.value)


# --- checkpoint files --------------------------------------------------------------------------


def test_checkpoint_loads_with_weights_only(cosine_run) -> None:
    _, checkpoint = cosine_run

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)

    assert state["epoch"] == 2
    for key in ("config", "model", "optimizer", "scheduler", "rng", "history", "mean", "std"):
        assert key in state, key


def write_truncated(source: Path, target: Path) -> None:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def write_garbage(source: Path, target: Path) -> None:
    target.write_bytes(b"this is not a checkpoint\n" * 40)


def write_empty(source: Path, target: Path) -> None:
    target.write_bytes(b"")


def write_foreign(source: Path, target: Path) -> None:
    # A valid torch file that this tool did not write.
    torch.save({"weights": torch.zeros(3)}, target)


@pytest.mark.parametrize("damage", [write_truncated, write_garbage, write_empty, write_foreign])
def test_trainer_resume_bad_checkpoint_raises(
    damage, cosine_run, digits_data, tmp_path: Path
) -> None:
    _, checkpoint = cosine_run
    bad = tmp_path / "bad.pt"
    damage(checkpoint, bad)
    trainer = Trainer(SMALL, digits_data, device="cpu")

    with pytest.raises(CheckpointError) as raised:
        trainer.resume(bad)

    message = str(raised.value)
    assert str(bad) in message
    assert "\n" not in message


@pytest.mark.parametrize("damage", [write_truncated, write_garbage, write_empty, write_foreign])
def test_trainer_init_from_bad_checkpoint_raises(
    damage, cosine_run, digits_data, tmp_path: Path
) -> None:
    _, checkpoint = cosine_run
    bad = tmp_path / "bad.pt"
    damage(checkpoint, bad)

    with pytest.raises(CheckpointError) as raised:
        Trainer(SMALL.replace(init_from=str(bad)), digits_data, device="cpu")

    assert str(bad) in str(raised.value)


def test_trainer_init_from_missing_checkpoint_raises(digits_data, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"

    with pytest.raises(CheckpointError, match="not found") as raised:
        Trainer(SMALL.replace(init_from=str(missing)), digits_data, device="cpu")

    assert str(missing) in str(raised.value)


# --- warm start --------------------------------------------------------------------------------


def test_trainer_init_from_same_architecture_loads_weights(cosine_run, digits_data) -> None:
    source, checkpoint = cosine_run
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    # Another seed and dropout: the random init differs, the architecture does not.
    config = SMALL.replace(seed=1, dropout=0.5, lr=0.01)

    fresh = Trainer(config, digits_data, device="cpu").model.state_dict()
    warm = Trainer(config.replace(init_from=str(checkpoint)), digits_data, device="cpu")
    weights = warm.model.state_dict()

    # Without init_from the weights differ, so the comparison below can fail.
    assert not torch.equal(fresh["conv1.weight"], saved["conv1.weight"])
    assert sorted(weights) == sorted(saved)
    for name, tensor in saved.items():
        assert torch.equal(weights[name], tensor), name


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ((18, "cifar"), (34, "cifar")),
        ((50, "cifar"), (18, "cifar")),
        ((18, "cifar"), (18, "torchvision")),
        pytest.param(
            (18, "torchvision"),
            (18, "dilated"),
        ),
    ],
    ids=["depth", "depth-50-to-18", "stem-shape", "stem-same-shape"],
)
def test_trainer_init_from_other_architecture_raises(source, target, tmp_path: Path) -> None:
    data = random_data()
    checkpoint = tmp_path / "source.pt"
    source_depth, source_stem = source
    target_depth, target_stem = target
    Trainer(TrainConfig(depth=source_depth, stem=source_stem), data, device="cpu").save(checkpoint)
    config = TrainConfig(depth=target_depth, stem=target_stem, init_from=str(checkpoint))

    with pytest.raises(CheckpointError) as raised:
        Trainer(config, data, device="cpu")

    message = str(raised.value)
    assert str(checkpoint) in message
    assert f"depth {source_depth}, stem {source_stem!r}" in message
    assert f"depth {target_depth}, stem {target_stem!r}" in message


def test_trainer_init_from_other_class_count_raises(tmp_path: Path) -> None:
    checkpoint = tmp_path / "source.pt"
    Trainer(TrainConfig(), random_data(classes=4), device="cpu").save(checkpoint)

    with pytest.raises(CheckpointError, match="4 classes") as raised:
        Trainer(TrainConfig(init_from=str(checkpoint)), random_data(classes=5), device="cpu")

    assert str(checkpoint) in str(raised.value)


# --- metrics and failures ----------------------------------------------------------------------


def test_train_epoch_metrics_keys(cosine_run) -> None:
    trainer, _ = cosine_run

    for metrics in trainer.history:
        assert set(metrics) == METRIC_KEYS


def test_train_epoch_metrics_values(cosine_run) -> None:
    trainer, _ = cosine_run
    history = trainer.history

    assert [metrics["epoch"] for metrics in history] == [1, 2, 3]
    assert history[0]["lr"] == SMALL.lr
    for metrics in history:
        for key in METRIC_KEYS:
            assert math.isfinite(metrics[key]), key
        assert 0 <= metrics["train_acc"] <= 1
        assert 0 <= metrics["val_acc"] <= 1
        assert metrics["epoch_seconds"] > 0
        assert metrics["images_per_second"] > 0


def test_fit_calls_on_epoch_once_per_epoch() -> None:
    calls = []
    trainer = Trainer(TrainConfig(epochs=2, batch_size=16), random_data(), device="cpu")

    history = fit(trainer, lambda metrics, current: calls.append((metrics, current)))

    assert [metrics["epoch"] for metrics, _ in calls] == [1, 2]
    assert all(current is trainer for _, current in calls)
    assert [metrics for metrics, _ in calls] == history


def test_train_epoch_nonfinite_loss_raises(digits_data) -> None:
    # lr 1e6 makes the weights overflow within the first few of the 5 batches of epoch 1.
    trainer = Trainer(SMALL.replace(lr=1e6), digits_data, device="cpu")

    with pytest.raises(NonFiniteLossError, match="lower the learning rate"):
        fit(trainer)

    for metrics in trainer.history:
        assert math.isfinite(metrics["train_loss"])


def test_train_epoch_last_batch_of_one_image(digits) -> None:
    # 161 training images in batches of 40 leave one image for the last batch.
    train_idx, val_idx = stratified_split(digits.labels[:200], 0.2, seed=0)
    data = TrainData(digits.images, digits.labels, train_idx, val_idx, digits.num_classes)
    trainer = Trainer(SMALL.replace(epochs=1), data, device="cpu")

    assert len(train_idx) % SMALL.batch_size == 1
    metrics = trainer.train_epoch()

    assert metrics["epoch"] == 1


@pytest.mark.filterwarnings("error:The given NumPy array is not writable:UserWarning")
def test_fit_never_writes_read_only_images(digits) -> None:
    images = np.array(digits.images[:SUBSET])
    images.setflags(write=False)
    expected = images.copy()
    train_idx, val_idx = stratified_split(digits.labels[:SUBSET], 0.2, seed=0)
    data = TrainData(images, digits.labels[:SUBSET], train_idx, val_idx, digits.num_classes)
    # Every augmentation is on, so the batches gathered from this array pass through each one.
    config = SMALL.replace(epochs=1, augment="basic+randaugment+erasing")

    trainer = Trainer(config, data, device="cpu")
    fit(trainer)
    trainer.predict_logits(images, tta=True)

    assert not images.flags.writeable
    assert np.array_equal(images, expected)
