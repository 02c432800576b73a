"""GPU check: training images/s of our path against the report-style path, and GPU memory.

``python benchmarks/gpu_check.py [--device cuda] [--tiny]``, normally through gpu_check.sh.

For ModResNet18 (depth 18, cifar stem) and ResNet50 (cifar stem) at 40x40, batch 256:
- ours: Trainer.train_epoch, which on CUDA uploads the uint8 dataset once, gathers and augments
  batches on the GPU and trains with bf16 autocast and channels_last;
- report-style: a DataLoader whose workers PIL-open each JPEG and run torchvision transforms,
  then an fp32 step on the GPU.
Both use crop with padding and horizontal flip. The data is generated here (JPEGs in a
temporary folder), so nothing is downloaded. ``--tiny`` shrinks everything so that the script
runs on a CPU in minutes, to check the code, not to measure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmarks.common import competition_folder  # noqa: E402
from benchmarks.loader import ReportStyleDataset, report_transform  # noqa: E402
from trainable.config import TrainConfig  # noqa: E402
from trainable.data import load_dataset, stratified_split  # noqa: E402
from trainable.loop import TrainData, Trainer  # noqa: E402
from trainable.model import build_model  # noqa: E402

MODELS = {"ModResNet18": (18, 0.5), "ResNet50": (50, 0.875)}  # depth, dropout of the report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__)
    parser.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="8x8 images, 400 of them (2 per class), batch 64, one epoch: a CPU check of the code",
    )
    parser.add_argument("--images", type=int, help="training images (default: 10,240)")
    parser.add_argument("--epochs", type=int, help="timed epochs per path (default: 3)")
    return parser.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    if device.type != "cuda":
        return float("nan")
    return torch.cuda.max_memory_allocated(device) / 2**20


def ours(root: Path, cache: Path, depth: int, dropout: float, batch: int, epochs: int, device):
    """Return (median training images/s, peak GPU MiB) of Trainer.train_epoch."""
    dataset = load_dataset(root, cache, progress=False)
    config = TrainConfig(
        depth=depth, stem="cifar", dropout=dropout, batch_size=batch, augment="basic", lr=0.05
    )
    train_idx, val_idx = stratified_split(dataset.labels, config.val_fraction, config.seed)
    data = TrainData(dataset.images, dataset.labels, train_idx, val_idx, dataset.num_classes)
    reset_memory(device)
    trainer = Trainer(config, data, device=device)
    trainer.train_epoch()  # warm-up: cuDNN autotuning, allocator
    speeds = [trainer.train_epoch()["images_per_second"] for _ in range(epochs)]
    return statistics.median(speeds), peak_memory_mib(device)


def report_style(
    root: Path, cache: Path, depth: int, dropout: float, batch: int, epochs: int, device
):
    """Return (median training images/s, peak GPU MiB) of the DataLoader + fp32 path."""
    dataset = load_dataset(root, cache, progress=False)  # for the class count and image size
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    size = dataset.images.shape[1]
    transform = report_transform("basic", mean, std, size=size)
    loader = DataLoader(
        ReportStyleDataset(root, transform),
        batch_size=batch,
        shuffle=True,
        num_workers=os.cpu_count() or 1,
        pin_memory=device.type == "cuda",
        persistent_workers=True,
    )
    reset_memory(device)
    model = build_model(depth, "cifar", dropout, dataset.num_classes, size).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()

    def epoch() -> float:
        model.train()
        started, count = time.perf_counter(), 0
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            loss = criterion(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            count += len(labels)
        synchronize(device)
        return count / (time.perf_counter() - started)

    epoch()  # warm-up: worker start, cuDNN autotuning
    speeds = [epoch() for _ in range(epochs)]
    return statistics.median(speeds), peak_memory_mib(device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); "
            "run it on a machine with an NVIDIA GPU, or pass --device cpu --tiny to check the code",
            file=sys.stderr,
        )
        return 2

    size, images, batch, epochs = (8, 400, 64, 1) if args.tiny else (40, 10_240, 256, 3)
    images = args.images or images
    epochs = args.epochs or epochs
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; {images:,} images of {size}x{size}")
    print(f"batch {batch}, median of {epochs} epochs after one warm-up epoch")

    with tempfile.TemporaryDirectory(prefix="gpu_check-") as work:
        root = competition_folder(Path(work), images, size)
        cache = Path(work) / "cache"
        print(f"{'model':<12} {'path':<40} {'images/s':>10} {'peak GPU MiB':>13}")
        for model, (depth, dropout) in MODELS.items():
            rows = [
                ("ours: bf16, channels_last, GPU data", ours, (root, cache)),
                ("report-style: DataLoader, PIL, fp32", report_style, (root, cache)),
            ]
            for label, function, data_args in rows:
                speed, memory = function(*data_args, depth, dropout, batch, epochs, device)
                print(f"{model:<12} {label:<40} {speed:>10,.0f} {memory:>13,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
