"""The fast path (decoded cache, index split, batched augmentation) against the reference path.

The reference path is what the report did: read labels.csv, open each image with PIL in a
torch Dataset, convert with ToTensor and Normalize, batch with a DataLoader. Augmentation
statistics of BatchAugment itself are in test_augment.py; here they are measured through the
augmentation that a Trainer configures from a TrainConfig.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from trainable.augment import RANDAUGMENT_OPS, normalize
from trainable.config import TrainConfig
from trainable.data import load_dataset, stratified_split
from trainable.loop import TrainData, Trainer, augment_spec
from trainable.train import make_train_data

NUM_CLASSES = 4
IMAGES_PER_CLASS = 12
SIZE = 8


def write_folder(root: Path, extension: str) -> Path:
    """Write a 4-class competition folder whose labels.csv rows are not in file-name order."""
    rng = np.random.default_rng(0)
    (root / "trainval").mkdir(parents=True)
    (root / "test").mkdir()
    count = NUM_CLASSES * IMAGES_PER_CLASS
    labels = rng.permutation(np.arange(count) % NUM_CLASSES)
    ids = [f"img{index:03d}" for index in rng.permutation(count)]
    for image_id, label in zip(ids, labels, strict=True):
        pixels = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
        pixels[:, : 2 * (label + 1)] //= 4  # class-dependent dark band, so the classes differ
        Image.fromarray(pixels).save(root / "trainval" / f"{image_id}{extension}")
    Image.fromarray(np.zeros((SIZE, SIZE, 3), dtype=np.uint8)).save(root / "test" / "t0.png")
    pd.DataFrame({"Id": ids, "Category": labels}).to_csv(root / "labels.csv", index=False)
    return root


class ReferenceDataset(torch.utils.data.Dataset):
    """The report's way to read the data: labels.csv rows, each image PIL-opened per access."""

    def __init__(self, root: Path, extension: str, transform=None) -> None:
        table = pd.read_csv(root / "labels.csv")
        self.paths = [root / "trainval" / f"{image_id}{extension}" for image_id in table["Id"]]
        self.labels = table["Category"].tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        with Image.open(self.paths[index]) as image:
            image = image.convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


@pytest.fixture(scope="module", params=[".png", ".jpg"])
def folder(request, tmp_path_factory) -> tuple[Path, Path, str]:
    """Return (dataset folder, cache folder, image extension)."""
    base = tmp_path_factory.mktemp("fast_path")
    root = write_folder(base / "data", request.param)
    return root, base / "cache", request.param


def small_trainer(dataset, **config_values) -> Trainer:
    config = TrainConfig(depth=18, stem="cifar", batch_size=16, epochs=1, **config_values)
    return Trainer(config, make_train_data(dataset, config), device="cpu")


# label order and pixels


def test_cache_labels_match_reference_order(folder) -> None:
    root, cache, extension = folder
    dataset = load_dataset(root, cache, progress=False)
    reference = ReferenceDataset(root, extension)
    assert dataset.labels.tolist() == [reference[index][1] for index in range(len(reference))]


def test_cache_ids_match_labels_csv_order(folder) -> None:
    root, cache, _ = folder
    dataset = load_dataset(root, cache, progress=False)
    assert dataset.ids.tolist() == pd.read_csv(root / "labels.csv")["Id"].tolist()


def test_cache_pixels_match_reference_decode(folder) -> None:
    root, cache, extension = folder
    dataset = load_dataset(root, cache, progress=False)
    reference = ReferenceDataset(root, extension)
    for index in range(len(reference)):
        assert np.array_equal(dataset.images[index], np.asarray(reference[index][0])), index


def test_cache_second_load_matches_first(folder) -> None:
    root, cache, _ = folder
    first = load_dataset(root, cache, progress=False)
    second = load_dataset(root, cache, progress=False)
    assert np.array_equal(first.labels, second.labels)
    assert np.array_equal(first.images, second.images)


# split and epoch order


@pytest.mark.parametrize("val_fraction", [0.01, 0.1, 0.5])
def test_make_train_data_split_is_disjoint(folder, val_fraction: float) -> None:
    root, cache, _ = folder
    dataset = load_dataset(root, cache, progress=False)
    data = make_train_data(dataset, TrainConfig(val_fraction=val_fraction))
    assert np.intersect1d(data.train_idx, data.val_idx).size == 0


@pytest.mark.parametrize("val_fraction", [0.01, 0.1, 0.5])
def test_make_train_data_split_covers_everything(folder, val_fraction: float) -> None:
    root, cache, _ = folder
    dataset = load_dataset(root, cache, progress=False)
    data = make_train_data(dataset, TrainConfig(val_fraction=val_fraction))
    union = np.sort(np.concatenate([data.train_idx, data.val_idx]))
    assert np.array_equal(union, np.arange(len(dataset.labels)))


def test_train_epoch_visits_each_train_index_once(folder) -> None:
    root, cache, _ = folder
    trainer = small_trainer(load_dataset(root, cache, progress=False), augment="none")
    visited = []
    gather = trainer._batch

    def recording_batch(indices: np.ndarray):
        # Evaluation on the validation split gathers through _batch too, in eval mode.
        if trainer.model.training:
            visited.extend(indices.tolist())
        return gather(indices)

    trainer._batch = recording_batch
    trainer.train_epoch()
    assert sorted(visited) == sorted(trainer.data.train_idx.tolist())


def test_train_epoch_batches_carry_their_labels(folder) -> None:
    root, cache, _ = folder
    dataset = load_dataset(root, cache, progress=False)
    trainer = small_trainer(dataset, augment="none")
    indices = trainer.data.train_idx[::-1][:10].copy()
    images, labels = trainer._batch(indices)
    assert labels.tolist() == dataset.labels[indices].tolist()
    assert torch.equal(images.permute(0, 2, 3, 1), torch.from_numpy(dataset.images[indices]))


# validation metrics


def reference_evaluate(trainer: Trainer, root: Path, extension: str) -> tuple[float, float]:
    """Return (mean cross-entropy, accuracy) on the validation rows, the report's way."""
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(trainer.mean, trainer.std)]
    )
    subset = torch.utils.data.Subset(
        ReferenceDataset(root, extension, transform), trainer.data.val_idx.tolist()
    )
    trainer.model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for images, labels in DataLoader(subset, batch_size=7):
            logits = trainer.model(images)
            total_loss += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            count += len(labels)
    return total_loss / count, correct / count


@pytest.mark.parametrize("trained_epochs", [0, 1])
def test_evaluate_matches_reference_evaluation(folder, trained_epochs: int) -> None:
    root, cache, extension = folder
    trainer = small_trainer(load_dataset(root, cache, progress=False), val_fraction=0.5)
    for _ in range(trained_epochs):
        trainer.train_epoch()
    loss, accuracy = trainer.evaluate(trainer.data.val_idx)
    reference_loss, reference_accuracy = reference_evaluate(trainer, root, extension)
    assert accuracy == reference_accuracy
    assert loss == pytest.approx(reference_loss, rel=1e-5, abs=1e-6)


def test_predict_logits_match_reference_model_output(folder) -> None:
    root, cache, extension = folder
    trainer = small_trainer(load_dataset(root, cache, progress=False), val_fraction=0.5)
    logits = trainer.predict_logits(trainer.data.images, trainer.data.val_idx)
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(trainer.mean, trainer.std)]
    )
    reference = ReferenceDataset(root, extension, transform)
    inputs = torch.stack([reference[int(index)][0] for index in trainer.data.val_idx])
    with torch.no_grad():
        expected = trainer.model(inputs)
    assert torch.allclose(logits, expected, atol=1e-4)


# augmentation as the Trainer configures it


def augment_trainer(**config_values) -> Trainer:
    """Return a Trainer over 16x16 images whose left half is dark and right half bright."""
    count = 64
    images = np.full((count, 16, 16, 3), 250, dtype=np.uint8)
    images[:, :, :8] = 10
    labels = np.arange(count) % 2
    train_idx, val_idx = stratified_split(labels, 0.25, 0)
    config = TrainConfig(depth=18, stem="cifar", batch_size=16, **config_values)
    return Trainer(config, TrainData(images, labels, train_idx, val_idx, 2), device="cpu")


def half_image_batch(n: int) -> torch.Tensor:
    images = torch.full((n, 3, 16, 16), 250, dtype=torch.uint8)
    images[..., :8] = 10
    return images


def test_trainer_augment_spec_follows_config() -> None:
    trainer = augment_trainer(
        augment="basic+randaugment+erasing",
        randaugment_ops=3,
        randaugment_magnitude=14,
        erasing_p=0.4,
        erasing_scale_min=0.05,
        erasing_scale_max=0.2,
    )
    assert trainer.augment.spec == augment_spec(trainer.config)
    assert trainer.augment.spec.crop_flip
    assert trainer.augment.spec.randaugment_ops == 3
    assert trainer.augment.spec.randaugment_magnitude == 14
    assert trainer.augment.spec.erasing_p == 0.4
    assert trainer.augment.spec.erasing_scale == (0.05, 0.2)


def test_trainer_augment_none_is_normalization_only() -> None:
    trainer = augment_trainer(augment="none")
    assert not trainer.augment.spec.crop_flip
    assert trainer.augment.spec.randaugment_ops == 0
    assert trainer.augment.spec.erasing_p == 0.0


def test_trainer_augment_flips_about_half() -> None:
    trainer = augment_trainer(augment="basic")
    output = trainer.augment(half_image_batch(4096), trainer.augment_generator)
    # The crop shifts by at most 2 pixels, so the bright half stays on its side unless flipped.
    brightness = output.mean(dim=(1, 2))
    flipped = brightness[:, :8].mean(dim=1) > brightness[:, 8:].mean(dim=1)
    assert abs(flipped.float().mean().item() - 0.5) < 0.03


def test_trainer_augment_crop_shifts_within_padding() -> None:
    trainer = augment_trainer(augment="basic")
    padding = trainer.augment.crop_padding(16)
    images = half_image_batch(2048)
    output = trainer.augment.crop_flip(images, trainer.augment_generator)
    # Unflip, then find where the dark-to-bright edge (column 8 before the crop) moved.
    unflipped = torch.where(
        (output[:, 0, 8, :8].float().mean(1) > 128)[:, None, None, None], output.flip(-1), output
    )
    edge = (unflipped[:, 0, 8].float() > 128).int().argmax(dim=1)
    shifts = set((edge - 8).tolist())
    assert shifts == set(range(-padding, padding + 1))


def test_trainer_augment_erasing_rate_follows_config() -> None:
    trainer = augment_trainer(augment="erasing", erasing_p=0.3)
    output = trainer.augment(half_image_batch(4096), trainer.augment_generator)
    # Normalized pixels of 10 and 250 are never exactly 0, so a 0 marks an erased pixel.
    erased = (output == 0).flatten(1).any(dim=1)
    assert abs(erased.float().mean().item() - 0.3) < 0.03


def test_trainer_randaugment_op_frequencies_uniform() -> None:
    trainer = augment_trainer(augment="randaugment", randaugment_ops=2)
    n = 14_000
    ops, negative = trainer.augment.draw_randaugment_ops(n, trainer.augment_generator)
    assert ops.shape == (2, n)
    counts = torch.bincount(ops.flatten(), minlength=len(RANDAUGMENT_OPS))
    for op, count in enumerate(counts.tolist()):
        assert abs(count / (2 * n) - 1 / 14) < 0.008, RANDAUGMENT_OPS[op]
    assert abs(negative.float().mean().item() - 0.5) < 0.02


def test_trainer_randaugment_changes_most_images() -> None:
    trainer = augment_trainer(augment="randaugment", randaugment_ops=2, randaugment_magnitude=9)
    images = half_image_batch(2048)
    output = trainer.augment(images, trainer.augment_generator)
    unchanged = (output == normalize(images, trainer.mean, trainer.std)).flatten(1).all(dim=1)
    # Two Identity draws (1/196), or ops that leave this two-level image as it is, keep an
    # image unchanged. Most images change.
    assert unchanged.float().mean().item() < 0.5
