"""Helpers shared by the benchmarks: work folder, generated datasets, timing, machine facts.

Every measurement module exposes ``measure(settings) -> Outcome``. An outcome carries the keys
of the final JSON line, the rows of the results table and the notes and profiles that
BENCHMARKS.md shows beside them.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK_DIR = REPO_ROOT / "benchmarks" / "work"  # ignored by benchmarks/.gitignore

# The generated competition folder: 40x40 JPEGs of 200 classes, as in the reference report.
IMAGE_SIZE = 40
NUM_CLASSES = 200
TRAIN_IMAGES = 20_000
TEST_IMAGES = 200
JPEG_QUALITY = 90
GENERATION_CHUNK = 2_000


@dataclass(frozen=True)
class Settings:
    """Budget of a benchmark run: repetitions and problem sizes, set by --quick."""

    quick: bool
    work_dir: Path
    repetitions: int = 3

    @property
    def cache_dir(self) -> Path:
        """The decoded image cache of the benchmarks, apart from the user's cache."""
        return self.work_dir / "cache"


@dataclass
class Row:
    """One line of the results table: a measured value against its target."""

    name: str  # the JSON key, or a label for a row without a key
    value: float
    unit: str
    target: str = ""  # e.g. ">= 20"; empty for a context row
    met: bool | None = None
    detail: str = ""  # how the value was formed, e.g. "9,100 / 410 images/s"


@dataclass
class Outcome:
    """Result of one measurement module."""

    name: str
    title: str
    keys: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    method: str = ""  # markdown: what was measured and how
    notes: list[str] = field(default_factory=list)  # markdown paragraphs or tables
    profile: str = ""  # text shown where a target is missed
    bound: str = ""  # what limits the value where a target is missed
    seconds: float = 0.0

    @property
    def missed(self) -> bool:
        return any(row.met is False for row in self.rows)


def check_target(value: float, target: str) -> bool:
    """Tell whether ``value`` meets a target written as ">= X" or "<= X"."""
    operator, number = target.split()
    if operator == ">=":
        return value >= float(number)
    if operator == "<=":
        return value <= float(number)
    raise ValueError(f"target {target!r} must be '>= X' or '<= X'")


def target_row(name: str, value: float, unit: str, target: str, detail: str = "") -> Row:
    return Row(name, value, unit, target, check_target(value, target), detail)


# --- timing -------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def spread(values: list[float]) -> str:
    """Format repetitions as 'min-max' for the notes, e.g. '9,120-9,480' or '0.15-0.4'."""

    def number(value: float) -> str:
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"

    return f"{number(min(values))}-{number(max(values))}"


def load_average() -> float:
    """Return the 1-minute load average (runnable processes, to compare with the core count)."""
    return os.getloadavg()[0]


class LoadRecorder:
    """Record the 1-minute load average at each call of ``sample`` during a run."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def sample(self) -> float:
        value = load_average()
        self.samples.append(value)
        return value

    def summary(self) -> str:
        if not self.samples:
            return "not sampled"
        return f"median {median(self.samples):.1f}, range {min(self.samples):.1f}-{max(self.samples):.1f}"


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """Call ``function`` and return (wall seconds, its result)."""
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


# --- machine ------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, Any]:
    import ray
    import torchvision

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "ray": ray.__version__,
        "torch_threads": torch.get_num_threads(),
    }


# --- generated data -----------------------------------------------------------------------------


def synthetic_images(
    count: int, size: int, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return uint8 (count, size, size, 3) images and int64 labels, balanced over the classes.

    Each class has its own color and a stripe position, blurred by noise, so the images are
    learnable, compress like photographs (not like pure noise) and decode at a realistic cost.
    """
    # The class look comes from a fixed seed, so chunks generated with other seeds agree on it.
    class_rng = np.random.default_rng(0)
    class_colors = class_rng.integers(40, 216, size=(num_classes, 3))
    stripe = max(1, size // 5)
    class_stripes = class_rng.integers(0, size - stripe + 1, size=num_classes)
    rng = np.random.default_rng(seed + 1)
    labels = np.arange(count, dtype=np.int64) % num_classes
    rng.shuffle(labels)

    coarse = rng.normal(0.0, 30.0, size=(count, 5, 5, 3))
    smooth = np.repeat(np.repeat(coarse, -(-size // 5), axis=1), -(-size // 5), axis=2)
    smooth = smooth[:, :size, :size]
    images = class_colors[labels][:, None, None, :] + smooth
    images += rng.normal(0.0, 12.0, size=images.shape)
    rows = np.arange(size)
    in_stripe = (rows >= class_stripes[labels][:, None]) & (
        rows < class_stripes[labels][:, None] + stripe
    )
    images[in_stripe] += 60.0
    return np.clip(images, 0, 255).astype(np.uint8), labels


def competition_folder(work_dir: Path, count: int = TRAIN_IMAGES, size: int = IMAGE_SIZE) -> Path:
    """Write (once) a competition-layout folder of ``count`` JPEGs (size x size) of 200 classes.

    The layout is the one load_dataset reads: labels.csv (Id,Category), trainval/ and test/.
    The folder is written under a temporary name and renamed, so an interrupted run leaves no
    half-written folder under the final name.
    """
    folder = work_dir / (
        f"competition-{count}" if size == IMAGE_SIZE else f"competition-{count}-{size}px"
    )
    if (folder / "labels.csv").is_file():
        return folder

    started = time.perf_counter()
    temp = work_dir / f".{folder.name}.tmp-{os.getpid()}"
    (temp / "trainval").mkdir(parents=True, exist_ok=True)
    (temp / "test").mkdir(parents=True, exist_ok=True)
    ids = [f"img{index:06d}" for index in range(count)]
    labels = []
    # In chunks, because synthetic_images works in float64 (38 KB per 40x40 image). No chunk
    # spans both splits, so each split keeps the class balance of its chunks.
    chunks = [
        (start, min(start + GENERATION_CHUNK, count)) for start in range(0, count, GENERATION_CHUNK)
    ]
    chunks.append((count, count + TEST_IMAGES))
    for start, stop in chunks:
        images, chunk_labels = synthetic_images(stop - start, size, NUM_CLASSES, seed=start)
        labels.extend(chunk_labels.tolist())
        for index, pixels in zip(range(start, stop), images, strict=True):
            if index < count:
                path = temp / "trainval" / f"{ids[index]}.jpg"
            else:
                path = temp / "test" / f"test{index - count:04d}.jpg"
            Image.fromarray(pixels).save(path, quality=JPEG_QUALITY)
    pd.DataFrame({"Id": ids, "Category": labels[:count]}).to_csv(temp / "labels.csv", index=False)

    os.rename(temp, folder)
    logger.info("wrote %d JPEGs to %s in %.1f s", count, folder, time.perf_counter() - started)
    return folder


# --- output -------------------------------------------------------------------------------------


def write_text_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_text(text)
    os.replace(temp, path)


def json_line(keys: dict[str, Any]) -> str:
    """Format the final JSON object: floats rounded to 4 significant digits."""

    def rounded(value: Any) -> Any:
        if isinstance(value, float):
            return float(f"{value:.4g}")
        return value

    return json.dumps({key: rounded(value) for key, value in keys.items()})


# --- fixed configs through the search code path --------------------------------------------------


def _suggest_fixed(
    choices: dict[str, list[Any]], constants: dict[str, Any], trial: Any
) -> dict[str, Any]:
    """Define-by-run function over fixed configs: suggest each varying name, return the rest.

    Names are visited in TrainConfig field order with unconditional names first, so a
    condition's choice (scheduler, augment) is made before the names that depend on it.
    """
    from spaces.registry import parameter_applies

    chosen: dict[str, Any] = {}
    for name in _ordered_names():
        if not parameter_applies(name, chosen):
            continue
        if name in choices:
            chosen[name] = trial.suggest_categorical(name, choices[name])
        elif name in constants:
            chosen[name] = constants[name]
    return {name: value for name, value in chosen.items() if name not in choices}


def _ordered_names() -> list[str]:
    from spaces.registry import parameter_applies
    from trainable.config import TrainConfig

    names = list(TrainConfig().to_dict())
    return sorted(names, key=lambda name: not parameter_applies(name, {}))


def fixed_space(name: str, configs: list[dict[str, Any]], fixed_trials: bool):
    """Return a SearchSpace whose initial points are exactly ``configs``.

    With ``fixed_trials`` the search's build_scheduler picks FIFO, else ASHA. The searcher
    (OptunaSearch) evaluates the initial points first, so a search with as many samples as
    configs runs each config once.
    """
    import functools

    from spaces.registry import SearchSpace, parameter_applies
    from trainable.config import TrainConfig

    full = [TrainConfig.from_dict(config).to_dict() for config in configs]
    values: dict[str, set] = {}
    for config in full:
        for key, value in config.items():
            if parameter_applies(key, config):
                values.setdefault(key, set()).add(value)
    choices = {key: sorted(found, key=repr) for key, found in values.items() if len(found) > 1}
    constants = {key: next(iter(found)) for key, found in values.items() if len(found) == 1}
    points = [
        {key: config[key] for key in choices if parameter_applies(key, config)} for config in full
    ]
    define = functools.partial(_suggest_fixed, choices, constants)
    return SearchSpace(
        name=name,
        summary=f"{len(configs)} fixed configs",
        define=lambda context: define,
        initial_points=lambda context: points,
        fixed_trials=fixed_trials,
    )


def start_local_ray(cpus: int) -> None:
    """Start a local Ray with no dashboard, so nothing listens beyond loopback for HTTP."""
    import ray

    # The search CLI sets this too: Ray warns about frequent experiment syncs at short epochs.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )


def trial_epochs(result_grid) -> list[dict[str, Any]]:
    """Return, per trial of a Tune ResultGrid, its config, epochs run and val_acc per epoch."""
    trials = []
    for result in result_grid:
        frame = result.metrics_dataframe
        epochs = int(frame["epoch"].max()) if frame is not None and len(frame) else 0
        best = float(frame["val_acc"].max()) if epochs else float("nan")
        seconds = float(frame["time_total_s"].max()) if epochs else float("nan")
        val_acc = frame["val_acc"].tolist() if epochs else []
        trials.append(
            {
                "config": result.config,
                "epochs": epochs,
                "best_val_acc": best,
                "seconds": seconds,
                "val_acc": val_acc,
            }
        )
    return trials


class CpuMonitor:
    """Sum the CPU time of this process and its descendants (Ray's processes), by role.

    A thread samples every descendant's cumulative CPU time every half second and keeps the
    last value per process, so processes that exit between samples (finished trials) lose at
    most their last half second.
    """

    INTERVAL_S = 0.5

    def __init__(self, trial_mark: str = "ImplicitFunc") -> None:
        import threading

        import psutil

        self._psutil = psutil
        self._trial_mark = trial_mark
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._driver = psutil.Process()
        self._driver_start = sum(self._driver.cpu_times()[:2])
        self.wall_seconds = 0.0

    def __enter__(self) -> CpuMonitor:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()
        self.wall_seconds = time.perf_counter() - self._started
        self.driver_seconds = sum(self._driver.cpu_times()[:2]) - self._driver_start

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            self._sample()

    def _role(self, command: list[str]) -> str:
        text = " ".join(command)
        if self._trial_mark in text or "spawn_main" in text:
            return "trials"  # Tune's trial actors, or the pool processes without Ray
        if text.startswith("ray::"):
            return text.split()[0]  # ray::IDLE, ray::DashboardAgent, ...
        name = Path(command[0]).name if command else "?"
        if name.startswith("python"):
            script = next((Path(arg).name for arg in command[1:] if arg.endswith(".py")), "")
            return f"python {script}".strip()
        return name

    def _sample(self) -> None:
        for process in self._driver.children(recursive=True):
            try:
                with process.oneshot():
                    role = self._role(process.cmdline())
                    seconds = sum(process.cpu_times()[:2])
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
            self._last[process.pid] = (role, seconds)

    def seconds_by_role(self) -> dict[str, float]:
        """Return CPU seconds per role, the driver (this process) included, largest first."""
        totals: dict[str, float] = {"driver (Tune loop, this process)": self.driver_seconds}
        for role, seconds in self._last.values():
            totals[role] = totals.get(role, 0.0) + seconds
        return dict(sorted(totals.items(), key=lambda item: -item[1]))
