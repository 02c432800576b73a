"""Loader throughput: the report-style DataLoader against the decoded cache and BatchAugment.

Both sides produce normalized, augmented float32 batches of 256 images from the same 20,000
40x40 JPEGs of 200 classes, on the CPU, with no model. The report-style side opens every JPEG
with PIL in every epoch and runs torchvision's per-image transforms in os.cpu_count()
DataLoader workers. Our side loads the decoded uint8 cache (memory-mapped), gathers each batch
with the training loop's Trainer._batch and augments it with BatchAugment in the main process.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import resource
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from benchmarks.common import (
    Outcome,
    Row,
    Settings,
    competition_folder,
    median,
    spread,
    target_row,
    timed,
)
from trainable.augment import BatchAugment
from trainable.config import TrainConfig
from trainable.data import load_dataset
from trainable.loop import TrainData, Trainer, augment_spec

logger = logging.getLogger(__name__)

BATCH_SIZE = 256
CROP_PADDING = 4  # the report's RandomCrop(40, padding=4)
TARGETS = {"basic": ">= 20", "randaugment": ">= 3"}
QUICK_REPORT_IMAGES = 32 * BATCH_SIZE
# The augmentation of each case, as a config value of the training loop.
AUGMENT = {"basic": "basic", "randaugment": "basic+randaugment+erasing"}


class ReportStyleDataset(torch.utils.data.Dataset):
    """The images of labels.csv, opened and decoded with PIL at every access."""

    def __init__(self, root: Path, transform: transforms.Compose) -> None:
        table = pd.read_csv(root / "labels.csv")
        self.paths = [root / "trainval" / f"{image_id}.jpg" for image_id in table["Id"]]
        self.labels = table["Category"].tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index]) as image:
            image = image.convert("RGB")
        return self.transform(image), self.labels[index]


def report_transform(case: str, mean: tuple, std: tuple, size: int = 40) -> transforms.Compose:
    """Return the report's torchvision pipeline: basic, or with RandAugment and RandomErasing."""
    steps = [
        transforms.RandomCrop(size, padding=CROP_PADDING),
        transforms.RandomHorizontalFlip(),
    ]
    if case == "randaugment":
        steps.append(transforms.RandAugment(num_ops=2, magnitude=9))
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if case == "randaugment":
        steps.append(transforms.RandomErasing(p=0.5))
    return transforms.Compose(steps)


def report_epoch(loader: DataLoader, max_images: int) -> int:
    """Run the report-style loader for up to ``max_images`` and return the images it produced.

    Each call starts the loader's workers anew, as every epoch of a DataLoader without
    persistent workers does.
    """
    count = 0
    for images, _ in loader:
        count += len(images)
        if count >= max_images:
            break
    return count


class FastPath:
    """The training loop's data path without the model: gather, augment, normalize."""

    def __init__(self, root: Path, cache_dir: Path, case: str) -> None:
        self.load_seconds, dataset = timed(lambda: load_dataset(root, cache_dir, progress=False))
        config = TrainConfig(batch_size=BATCH_SIZE, augment=AUGMENT[case], erasing_p=0.5)
        everything = np.arange(len(dataset.labels))
        data = TrainData(
            dataset.images, dataset.labels, everything, everything[:0], dataset.num_classes
        )
        self.trainer = Trainer(config, data, device="cpu")
        spec = dataclasses.replace(augment_spec(config), crop_padding=CROP_PADDING)
        self.augment = BatchAugment(spec, self.trainer.mean, self.trainer.std)
        self.order_generator = np.random.default_rng(0)

    def epoch(self) -> int:
        trainer = self.trainer
        order = self.order_generator.permutation(trainer.data.train_idx)
        count = 0
        for start in range(0, len(order), BATCH_SIZE):
            images, _ = trainer._batch(order[start : start + BATCH_SIZE])
            inputs = self.augment(images, trainer.augment_generator)
            count += len(inputs)
        return count


def cpu_seconds() -> float:
    """Return the CPU time of this process and of its exited children (DataLoader workers)."""
    total = 0.0
    for scope in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(scope)
        total += usage.ru_utime + usage.ru_stime
    return total


def measure_case(root: Path, settings: Settings, case: str) -> dict:
    fast = FastPath(root, settings.cache_dir, case)
    transform = report_transform(case, fast.trainer.mean, fast.trainer.std)
    loader = DataLoader(
        ReportStyleDataset(root, transform),
        batch_size=BATCH_SIZE,
        shuffle=True,
        num_workers=os.cpu_count() or 1,
    )
    # --quick times the first 32 batches of the report-style epoch, which costs minutes.
    report_images = QUICK_REPORT_IMAGES if settings.quick else len(fast.trainer.data.train_idx)

    # Alternate the sides, so that a change in the machine's load hits all of them.
    result: dict[str, list[float]] = {
        "ours": [],
        "ours_all_cores": [],
        "theirs": [],
        "ours_per_cpu": [],
        "theirs_per_cpu": [],
    }
    threads = torch.get_num_threads()
    try:
        for _ in range(settings.repetitions):
            torch.set_num_threads(1)
            cpu_before = cpu_seconds()
            seconds, count = timed(fast.epoch)
            result["ours"].append(count / seconds)
            result["ours_per_cpu"].append(count / (cpu_seconds() - cpu_before))
            if not settings.quick:
                torch.set_num_threads(os.cpu_count() or 1)
                seconds, count = timed(fast.epoch)
                result["ours_all_cores"].append(count / seconds)
            torch.set_num_threads(threads)
            cpu_before = cpu_seconds()
            seconds, count = timed(lambda: report_epoch(loader, report_images))
            result["theirs"].append(count / seconds)
            result["theirs_per_cpu"].append(count / (cpu_seconds() - cpu_before))
    finally:
        torch.set_num_threads(threads)
    result["speedups"] = [a / b for a, b in zip(result["ours"], result["theirs"], strict=True)]
    return {
        **result,
        "load_seconds": fast.load_seconds,
        "fast": fast,
        "report_images": report_images,
    }


def profile_fast_path(fast: FastPath, batches: int = 20) -> str:
    """Return torch.profiler's top operators (by self CPU time) for batches of our path."""
    from torch.profiler import ProfilerActivity, profile

    order = np.random.default_rng(1).permutation(fast.trainer.data.train_idx)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for start in range(0, batches * BATCH_SIZE, BATCH_SIZE):
            images, _ = fast.trainer._batch(order[start : start + BATCH_SIZE])
            fast.augment(images, fast.trainer.augment_generator)
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)


def profile_report_worker(root: Path, fast: FastPath, case: str, images: int = 1000) -> str:
    """Return cProfile's top functions (by total time) for one report-style worker's work."""
    import cProfile
    import pstats

    dataset = ReportStyleDataset(root, report_transform(case, fast.trainer.mean, fast.trainer.std))
    profiler = cProfile.Profile()
    profiler.enable()
    for index in range(images):
        dataset[index]
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(12)
    return stream.getvalue()


def measure(settings: Settings) -> Outcome:
    root = competition_folder(settings.work_dir)
    dataset = load_dataset(root, settings.cache_dir, progress=False)  # decodes on the first run

    outcome = Outcome("loader", "Loader throughput (data path only, no model)")
    profiles = []
    for case in ("basic", "randaugment"):
        result = measure_case(root, settings, case)
        key = f"loader_{case}_speedup"
        ours, theirs = median(result["ours"]), median(result["theirs"])
        row = target_row(
            key,
            median(result["speedups"]),
            "x",
            TARGETS[case],
            f"{ours:,.0f} / {theirs:,.0f} images/s",
        )
        outcome.keys[key] = row.value
        outcome.rows += [
            row,
            Row(f"ours, {case}, 1 thread", ours, "images/s", detail=spread(result["ours"])),
            Row(
                f"report-style, {case}, {os.cpu_count()} workers",
                theirs,
                "images/s",
                detail=spread(result["theirs"]),
            ),
        ]
        ours_per_cpu, theirs_per_cpu = (
            median(result["ours_per_cpu"]),
            median(result["theirs_per_cpu"]),
        )
        outcome.rows += [
            Row(
                f"ours, {case}, per CPU second",
                ours_per_cpu,
                "images/s",
                detail=spread(result["ours_per_cpu"]),
            ),
            Row(
                f"report-style, {case}, per CPU second",
                theirs_per_cpu,
                "images/s",
                detail=f"{spread(result['theirs_per_cpu'])}; workers included",
            ),
            Row(
                f"speedup per CPU second, {case}",
                ours_per_cpu / theirs_per_cpu,
                "x",
                detail="images per CPU second, ours / report-style",
            ),
        ]
        if result["ours_all_cores"]:
            outcome.rows.append(
                Row(
                    f"ours, {case}, {os.cpu_count()} threads",
                    median(result["ours_all_cores"]),
                    "images/s",
                    detail=spread(result["ours_all_cores"]),
                )
            )
        outcome.notes.append(
            f"{case}: the report-style side was timed over {result['report_images']:,} images "
            f"per repetition, worker start-up included. The second load_dataset of the cache "
            f"took {result['load_seconds']:.2f} s, once per trial, outside the epoch times."
        )
        if not row.met:
            profiles.append(
                f"ours, {case}, 1 thread, torch.profiler:\n{profile_fast_path(result['fast'])}"
            )
            profiles.append(
                f"report-style worker, {case}, cProfile:\n"
                f"{profile_report_worker(root, result['fast'], case)}"
            )

    outcome.method = (
        f"Per repetition, one epoch of our path over {len(dataset.labels):,} 40x40 JPEGs "
        "(200 classes), batch 256, against the report-style loader; the sides alternate. "
        "Report-style: a torch Dataset that PIL-opens each JPEG, torchvision transforms "
        "(basic: RandomCrop(40, padding=4), RandomHorizontalFlip, ToTensor, Normalize; "
        "randaugment: RandAugment(2, 9) before ToTensor and RandomErasing(p=0.5) after "
        f"Normalize), DataLoader with {os.cpu_count()} workers and shuffle. Ours: load_dataset "
        "(second load, memory-mapped cache), Trainer._batch (np.take) and BatchAugment with the "
        "same operations and crop padding 4, in the main process on one torch thread, as a "
        "trial with --cpus-per-trial 1 runs it. The speedup is the median of the per-repetition "
        "ratios of wall-clock throughput. Because the report-style side needs both cores and "
        "ours one, other jobs on the machine slow the two sides differently, so the table also "
        "gives images per CPU second (getrusage of this process and its exited DataLoader "
        "workers), which depends much less on them."
    )
    outcome.profile = "\n\n".join(profiles)
    outcome.bound = (
        "our side on one core: BatchAugment's crop (one gather over every byte of the batch) "
        "and its normalization (a broadcast multiply and add over channels_last float32 "
        "tensors) take most of each batch's time, see the profile"
        if profiles
        else ""
    )
    return outcome
