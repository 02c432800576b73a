"""The one training loop, shared by the standalone trainer, the Ray Tune trainable and the final job.

Images stay uint8 (N, H, W, 3) in memory (a memory-mapped cache or Ray's read-only shared object
store) and are gathered one batch at a time, so a trial never copies the dataset on the CPU. On
CUDA the whole uint8 array is uploaded once per trial, and batches are gathered and augmented on
the GPU. Augmentation runs batched on the batch's device, with per-image random parameters.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainable.augment import AugmentSpec, BatchAugment, normalize
from trainable.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from trainable.config import TrainConfig
from trainable.errors import NonFiniteLossError
from trainable.model import build_model

logger = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 1024
# Upload the whole dataset to the GPU when it takes at most this share of the free GPU memory.
# A larger dataset is copied one pinned batch at a time.
GPU_DATASET_SHARE = 0.25
# Channel statistics are estimated on at most this many training images.
STATISTICS_SAMPLE = 10_000


@dataclass(frozen=True)
class TrainData:
    """Images and labels of one run, with the split as index arrays into them (no copies)."""

    images: np.ndarray  # uint8 (N, H, W, 3); may be read-only
    labels: np.ndarray  # int64 (N,)
    train_idx: np.ndarray
    val_idx: np.ndarray
    num_classes: int

    @property
    def image_size(self) -> int:
        return int(min(self.images.shape[1:3]))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Trainer:
    """Model, optimizer, scheduler and random state of one run, advanced one epoch at a time."""

    def __init__(
        self,
        config: TrainConfig,
        data: TrainData,
        device: torch.device | str | None = None,
        compile_model: bool = False,
    ) -> None:
        self.config = config
        self.data = data
        self.device = torch.device(device) if device is not None else default_device()
        self.on_cuda = self.device.type == "cuda"
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, float]] = []

        torch.manual_seed(config.seed)
        self.order_generator = torch.Generator().manual_seed(config.seed)
        self.augment_generator = torch.Generator(self.device).manual_seed(config.seed + 1)

        self.model = build_model(
            config.depth, config.stem, config.dropout, data.num_classes, data.image_size
        )
        if config.init_from:
            load_weights(self.model, config.init_from, config)
        memory_format = torch.channels_last if self.on_cuda else torch.contiguous_format
        self.model.to(self.device, memory_format=memory_format)
        self.forward = torch.compile(self.model) if compile_model else self.model

        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.nesterov,
        )
        self.scheduler = _build_scheduler(self.optimizer, config)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

        self.mean, self.std = channel_statistics(data.images, data.train_idx)
        self.augment = BatchAugment(augment_spec(config), self.mean, self.std)
        self.images, self.labels = self._place_dataset()

    # data

    def _place_dataset(self) -> tuple[np.ndarray | torch.Tensor, torch.Tensor]:
        """Keep images on the host, or upload them once when the GPU has room."""
        labels = torch.tensor(np.asarray(self.data.labels, dtype=np.int64))  # a small copy
        if not self.on_cuda:
            return self.data.images, labels
        free_bytes, _ = torch.cuda.mem_get_info(self.device)
        if self.data.images.nbytes > GPU_DATASET_SHARE * free_bytes:
            logger.info("dataset of %d MB streams from host memory", self.data.images.nbytes >> 20)
            return self.data.images, labels.to(self.device)
        # torch.tensor copies, so a read-only source array is never shared with a writable tensor.
        images = torch.tensor(self.data.images).to(self.device)
        return images, labels.to(self.device)

    def _batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather a uint8 (B, 3, H, W) channels-last batch and its labels on the device."""
        if isinstance(self.images, torch.Tensor):
            index = torch.from_numpy(indices).to(self.device, non_blocking=True)
            images = self.images.index_select(0, index)
        else:
            # np.take returns a new writable array, so from_numpy gets no read-only memory.
            images = torch.from_numpy(np.take(self.images, indices, axis=0))
            if self.on_cuda:
                images = images.pin_memory().to(self.device, non_blocking=True)
        labels = self.labels[torch.from_numpy(indices).to(self.labels.device)]
        return images.permute(0, 3, 1, 2), labels

    # training and evaluation

    def train_epoch(self) -> dict[str, float]:
        """Train one epoch, evaluate on the validation split and step the scheduler."""
        started = time.perf_counter()
        self.model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        order = self.data.train_idx[
            torch.randperm(len(self.data.train_idx), generator=self.order_generator).numpy()
        ]
        total_loss = torch.zeros((), device=self.device)
        total_correct = torch.zeros((), device=self.device, dtype=torch.long)
        trained = 0

        for start in range(0, len(order), self.config.batch_size):
            batch_indices = order[start : start + self.config.batch_size]
            if len(batch_indices) < 2:
                # BatchNorm cannot train on one image when the last feature map is 1x1
                # (8x8 inputs), so a last batch of one image is left out of this epoch.
                break

            # data: gather and augment on the device
            images, labels = self._batch(batch_indices)
            inputs = self.augment(images, self.augment_generator)
            if self.on_cuda:
                inputs = inputs.contiguous(memory_format=torch.channels_last)

            # forward, backward, update
            with self._autocast():
                logits = self.forward(inputs)
                loss = self.criterion(logits.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

            # metrics stay on the device until the epoch ends, to avoid a sync per batch
            total_loss += loss.detach() * len(labels)
            total_correct += (logits.detach().argmax(1) == labels).sum()
            trained += len(labels)

        train_seconds = time.perf_counter() - started
        train_loss = total_loss.item() / max(trained, 1)
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(
                f"training loss became {train_loss} in epoch {self.epoch + 1} "
                f"(lr {lr:g}); lower the learning rate"
            )

        val_loss, val_acc = self.evaluate(self.data.val_idx)
        if self.config.scheduler == "plateau":
            self.scheduler.step(val_acc)
        else:
            self.scheduler.step()
        self.epoch += 1

        metrics = {
            "epoch": self.epoch,
            "train_loss": train_loss,
            "train_acc": total_correct.item() / max(trained, 1),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr,
            "epoch_seconds": time.perf_counter() - started,
            "images_per_second": trained / train_seconds,
        }
        self.history.append(metrics)
        return metrics

    @torch.no_grad()
    def predict_logits(
        self, images: np.ndarray, indices: np.ndarray | None = None, tta: bool = False
    ) -> torch.Tensor:
        """Return float32 logits (on the CPU) for the given rows of a uint8 (N, H, W, 3) array.

        With ``tta``, average the softmax of each image and its horizontal flip (returned as log
        probabilities, so argmax and cross-entropy still apply).
        """
        self.model.eval()
        indices = np.arange(len(images)) if indices is None else indices
        outputs = []
        for start in range(0, len(indices), EVAL_BATCH_SIZE):
            batch = torch.from_numpy(np.take(images, indices[start : start + EVAL_BATCH_SIZE], 0))
            batch = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            inputs = normalize(batch, self.mean, self.std)
            with self._autocast():
                logits = self.forward(inputs).float()
                if tta:
                    flipped = self.forward(inputs.flip(3)).float()
                    probabilities = (logits.softmax(1) + flipped.softmax(1)) / 2
                    logits = probabilities.log()
            outputs.append(logits.cpu())
        return torch.cat(outputs) if outputs else torch.empty(0, self.data.num_classes)

    @torch.no_grad()
    def evaluate(self, indices: np.ndarray) -> tuple[float, float]:
        """Return (mean cross-entropy, accuracy) on rows of the run's images, without augmentation.

        Batches come from the same place as training batches (the GPU copy on CUDA).
        """
        if len(indices) == 0:
            return math.nan, math.nan
        self.model.eval()
        total_loss = torch.zeros((), device=self.device, dtype=torch.float64)
        total_correct = torch.zeros((), device=self.device, dtype=torch.long)
        for start in range(0, len(indices), EVAL_BATCH_SIZE):
            images, labels = self._batch(indices[start : start + EVAL_BATCH_SIZE])
            inputs = normalize(images, self.mean, self.std)
            with self._autocast():
                logits = self.forward(inputs).float()
            total_loss += nn.functional.cross_entropy(logits, labels, reduction="sum")
            total_correct += (logits.argmax(1) == labels).sum()
        return total_loss.item() / len(indices), total_correct.item() / len(indices)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.on_cuda)

    # checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Return everything needed to resume exactly: weights, optimizer, scheduler, RNG."""
        cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "history": list(self.history),
            "num_classes": self.data.num_classes,
            "mean": list(self.mean),
            "std": list(self.std),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": cuda_states,
                "order": self.order_generator.get_state(),
                "augment": self.augment_generator.get_state(),
                # get_state() returns a CPU tensor for any generator, so record its device.
                "augment_device": self.augment_generator.device.type,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.mean, self.std = tuple(state["mean"]), tuple(state["std"])
        self.augment = BatchAugment(augment_spec(self.config), self.mean, self.std)
        if self.config.scheduler == "cosine":
            # The saved optimizer contains the lr of the saved run's schedule; a run resumed with
            # more epochs continues on its own, longer curve.
            for group, base_lr in zip(
                self.optimizer.param_groups, self.scheduler.base_lrs, strict=True
            ):
                group["lr"] = base_lr * _cosine_factor(
                    self.scheduler.last_epoch, self.config.epochs
                )
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.order_generator.set_state(rng["order"])
        if rng["augment_device"] == self.augment_generator.device.type:
            self.augment_generator.set_state(rng["augment"])
        else:
            logger.warning(
                "augmentation random state was saved on %s and is not restored on %s",
                rng["augment_device"],
                self.augment_generator.device.type,
            )

    def save(self, path: Path | str) -> None:
        save_checkpoint(Path(path), self.state_dict())

    def resume(self, path: Path | str) -> None:
        """Continue from a checkpoint of the same config; the next epoch is the one after it."""
        state = load_checkpoint(path)
        saved = TrainConfig.from_dict(state["config"])
        if saved.replace(epochs=self.config.epochs) != self.config:
            raise CheckpointError(
                f"checkpoint {path} was made with another config; resume with the config it "
                "stores, or start a new run"
            )
        try:
            self.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"checkpoint {path} cannot be resumed: {err}") from None


def fit(
    trainer: Trainer,
    on_epoch: Callable[[dict[str, float], Trainer], None] | None = None,
) -> list[dict[str, float]]:
    """Train from the trainer's current epoch to ``config.epochs``; call ``on_epoch`` after each.

    ``on_epoch`` receives the epoch's metrics and the trainer (to save a checkpoint). It is where
    the Ray trainable reports to Tune and the final job logs, so the epoch loop exists once.
    """
    while trainer.epoch < trainer.config.epochs:
        metrics = trainer.train_epoch()
        if on_epoch is not None:
            on_epoch(metrics, trainer)
    return trainer.history


def load_weights(model: nn.Module, path: str | Path, config: TrainConfig) -> None:
    """Initialize ``model`` from a checkpoint's weights (warm start); raise if shapes differ."""
    state = load_checkpoint(path)
    source = state.get("config", {})
    same_architecture = (source.get("depth"), source.get("stem")) == (config.depth, config.stem)
    try:
        # The torchvision and dilated stems have weights of one shape, so shapes alone do not
        # tell the architectures apart.
        if not same_architecture:
            raise RuntimeError("architecture differs")
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: it was trained with depth "
            f"{source.get('depth')}, stem {source.get('stem')!r} and "
            f"{state.get('num_classes')} classes, this run has depth {config.depth}, "
            f"stem {config.stem!r}; warm-start from a checkpoint of the same architecture"
        ) from None


def channel_statistics(images: np.ndarray, indices: np.ndarray) -> tuple[tuple, tuple]:
    """Return per-channel mean and std in 0..1 units, estimated on up to 10,000 training images.

    Sums are accumulated over chunks of images, so the float64 temporaries stay small.
    """
    step = max(1, len(indices) // STATISTICS_SAMPLE)
    sample = np.sort(indices[::step])
    total = np.zeros(3)
    total_squares = np.zeros(3)
    for start in range(0, len(sample), 1000):
        pixels = np.take(images, sample[start : start + 1000], axis=0).reshape(-1, 3)
        pixels = pixels.astype(np.float64)
        total += pixels.sum(axis=0)
        total_squares += np.square(pixels).sum(axis=0)
    count = len(sample) * images.shape[1] * images.shape[2]
    mean = total / count
    variance = np.maximum(total_squares / count - mean**2, 0.0)
    std = np.maximum(np.sqrt(variance) / 255.0, 1e-3)  # a constant channel must not divide by 0
    return tuple(float(x) for x in mean / 255.0), tuple(float(x) for x in std)


def augment_spec(config: TrainConfig) -> AugmentSpec:
    """Translate the config's augmentation choice into the batched augmentation's spec."""
    chosen = config.augmentations
    return AugmentSpec(
        crop_flip="basic" in chosen,
        randaugment_ops=config.randaugment_ops if "randaugment" in chosen else 0,
        randaugment_magnitude=config.randaugment_magnitude,
        erasing_p=config.erasing_p if "erasing" in chosen else 0.0,
        erasing_scale=(config.erasing_scale_min, config.erasing_scale_max),
    )


def _build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",  # it watches validation accuracy
            factor=config.plateau_factor,
            patience=config.plateau_patience,
            cooldown=config.plateau_cooldown,
            eps=config.plateau_eps,
        )
    # Cosine annealing over config.epochs in closed form (CosineAnnealingLR with T_max = epochs
    # gives the same curve). The closed form reads config.epochs at every step, so a run resumed
    # with more epochs follows the longer curve instead of the saved T_max.
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: _cosine_factor(epoch, config.epochs)
    )


def _cosine_factor(epoch: int, epochs: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
