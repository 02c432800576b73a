"""Step efficiency: training images/s of the full data path over the model step alone.

The full path is Trainer.train_epoch on the cached digits (gather with np.take, BatchAugment,
forward, backward, SGD step, metrics on the device). The reference is the same model, optimizer
and batch size stepping over batches that are already normalized float32 tensors in memory.
Both run on one torch thread, as a trial with --cpus-per-trial 1 does.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from benchmarks.common import Outcome, Row, Settings, median, spread, target_row, timed
from trainable.augment import normalize
from trainable.config import TrainConfig
from trainable.data import load_dataset, stratified_split
from trainable.loop import TrainData, Trainer

logger = logging.getLogger(__name__)

TARGET = ">= 0.9"
BATCH_SIZE = 128
# The augmentation of the target row, then context rows.
AUGMENTS = ("basic", "basic+randaugment+erasing")


def make_trainer(augment: str, cache_dir) -> Trainer:
    dataset = load_dataset(None, cache_dir, progress=False)
    config = TrainConfig(
        depth=18, stem="cifar", batch_size=BATCH_SIZE, augment=augment, epochs=1000, lr=0.05
    )
    train_idx, val_idx = stratified_split(dataset.labels, config.val_fraction, config.seed)
    data = TrainData(dataset.images, dataset.labels, train_idx, val_idx, dataset.num_classes)
    return Trainer(config, data, device="cpu")


class StepOnly:
    """The model step of a Trainer over batches prepared once, in memory, without augmentation."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        data = trainer.data
        images = torch.from_numpy(np.take(data.images, data.train_idx, axis=0)).permute(0, 3, 1, 2)
        inputs = normalize(images, trainer.mean, trainer.std)
        labels = torch.from_numpy(np.asarray(data.labels)[data.train_idx])
        self.batches = [
            (inputs[start : start + BATCH_SIZE], labels[start : start + BATCH_SIZE])
            for start in range(0, len(labels), BATCH_SIZE)
        ]

    def epoch(self) -> float:
        """Run one epoch of steps and return images per second."""
        trainer = self.trainer
        trainer.model.train()
        seconds, count = timed(self._steps)
        return count / seconds

    def _steps(self) -> int:
        trainer = self.trainer
        for inputs, labels in self.batches:
            logits = trainer.forward(inputs)
            loss = trainer.criterion(logits.float(), labels)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
        return sum(len(labels) for _, labels in self.batches)


def profile_train_epoch(trainer: Trainer) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        trainer.train_epoch()
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)


def measure(settings: Settings) -> Outcome:
    outcome = Outcome("step", "Step efficiency (full data path over model step alone)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for augment in AUGMENTS:
            full_trainer = make_trainer(augment, settings.cache_dir)
            step_only = StepOnly(make_trainer(augment, settings.cache_dir))
            full_trainer.train_epoch()  # warm-up: first-call allocations, page cache
            step_only.epoch()

            # Alternate the two sides, so that a change in the machine's load hits both.
            full, alone = [], []
            for _ in range(settings.repetitions):
                full.append(full_trainer.train_epoch()["images_per_second"])
                alone.append(step_only.epoch())
            ratios = [a / b for a, b in zip(full, alone, strict=True)]
            detail = f"{median(full):,.0f} / {median(alone):,.0f} images/s"
            if augment == AUGMENTS[0]:
                row = target_row("step_efficiency", median(ratios), "", TARGET, detail)
                outcome.keys["step_efficiency"] = row.value
                outcome.rows.append(row)
                if not row.met:
                    outcome.profile = profile_train_epoch(full_trainer)
                    outcome.bound = "see the profile of Trainer.train_epoch"
            else:
                outcome.rows.append(
                    Row(f"step efficiency, {augment}", median(ratios), "", detail=detail)
                )
            outcome.rows.append(
                Row(f"full path, {augment}", median(full), "images/s", detail=spread(full))
            )
            outcome.rows.append(
                Row(f"model step alone, {augment}", median(alone), "images/s", detail=spread(alone))
            )
    finally:
        torch.set_num_threads(threads)

    outcome.method = (
        "ResNet18 with the cifar stem on the embedded digits (8x8, 1,350 training images, "
        f"batch {BATCH_SIZE}), one torch thread. Full path: Trainer.train_epoch's "
        "images_per_second, which times the training batches and leaves out the validation "
        "pass. Step alone: the same model, SGD and loss over the same number of batches, "
        "already normalized float32 tensors in memory. One warm-up epoch each, then "
        f"{settings.repetitions} alternating epochs; the value is the median of the "
        "per-repetition ratios."
    )
    return outcome
