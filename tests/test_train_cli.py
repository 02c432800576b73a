"""Tests of ``python -m trainable.train``, run as a subprocess on the digits and small datasets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from trainable.presets import PRESETS, get_preset

COMMAND = [sys.executable, "-m", "trainable.train"]
EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/(\d+)\s.*\sval_acc (\d+\.\d+)\s")
OUTPUT_FILES = {"config.json", "metrics.jsonl", "checkpoint.pt"}

# option: a word its help text must contain, the unit or the kind of value it sets
HELP_WORDS = {
    "--help": "help",
    "--preset": "reference report",
    "--config": "JSON object",
    "--data": "folder",
    "--epochs": "number of epochs",
    "--seed": "random seed",
    "--init-from": "checkpoint",
    "--out": "folder",
    "--resume": "checkpoint",
    "--device": "torch device",
    "--compile": "torch.compile",
}


@pytest.fixture(scope="module")
def env(search_cache: Path) -> dict[str, str]:
    # One intra-op thread: two torch threads that wait on each other run several times slower
    # when other processes load the CPU.
    return {**os.environ, "RESNET_SEARCH_CACHE": str(search_cache), "OMP_NUM_THREADS": "1"}


def run_train(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*COMMAND, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def preset_run(env, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """Train the modresnet preset for 3 epochs on the digits and return the process and --out."""
    folder = tmp_path_factory.mktemp("preset_run")
    out = folder / "out"
    result = run_train(["--preset", "modresnet", "--epochs", "3", "--out", str(out)], env, folder)
    return result, out


def epoch_lines(stdout: str) -> list[re.Match]:
    return [match for line in stdout.splitlines() if (match := EPOCH_LINE.match(line))]


# --- a preset trained on the digits ------------------------------------------------------------


def test_train_preset_exits_0(preset_run) -> None:
    result, _ = preset_run

    assert result.returncode == 0, result.stderr


def test_train_preset_prints_one_line_per_epoch(preset_run) -> None:
    result, _ = preset_run

    lines = epoch_lines(result.stdout)

    assert [(match[1], match[2]) for match in lines] == [("1", "3"), ("2", "3"), ("3", "3")]


def test_train_preset_reaches_val_acc(preset_run) -> None:
    result, _ = preset_run

    last = epoch_lines(result.stdout)[-1]

    assert float(last[3]) > 0.5, result.stdout


def test_train_writes_only_output_files(preset_run) -> None:
    # Atomic writes leave no temporary files behind.
    _, out = preset_run

    assert set(os.listdir(out)) == OUTPUT_FILES


def test_train_writes_config_json(preset_run) -> None:
    _, out = preset_run
    expected = get_preset("modresnet").config.replace(epochs=3).to_dict()

    written = json.loads((out / "config.json").read_text())

    assert written == expected


def test_train_writes_metrics_jsonl(preset_run) -> None:
    result, out = preset_run

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    assert [row["epoch"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr"} <= set(row)
    printed = float(epoch_lines(result.stdout)[-1][3])
    assert abs(rows[-1]["val_acc"] - printed) <= 5e-5


def test_train_writes_checkpoint(preset_run) -> None:
    _, out = preset_run

    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)

    assert state["epoch"] == 3
    assert state["config"] == json.loads((out / "config.json").read_text())
    assert len(state["history"]) == 3


def test_train_existing_out_without_resume_exits_2(preset_run, env, tmp_path: Path) -> None:
    _, out = preset_run
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}

    result = run_train(["--preset", "modresnet", "--epochs", "1", "--out", str(out)], env, tmp_path)

    assert result.returncode == 2
    assert_one_error_line(result, f"output folder {out} already contains a run")
    after = {name: (out / name).read_bytes() for name in os.listdir(out)}
    assert after == before


# --- help --------------------------------------------------------------------------------------


def option_descriptions(help_text: str) -> dict[str, str]:
    """Map each option in argparse's help text to its description, joining wrapped lines."""
    descriptions: dict[str, str] = {}
    option = None
    for line in help_text.splitlines():
        match = re.match(r"^  (?:-\w, )?(--[\w-]+)(?: \S+)?(?:\s{2,}(.*))?$", line)
        if match:
            option = match[1]
            descriptions[option] = match[2] or ""
        elif option and line.startswith("    "):
            descriptions[option] += " " + line.strip()
        else:
            option = None
    return descriptions


@pytest.fixture(scope="module")
def help_run(env, tmp_path_factory) -> subprocess.CompletedProcess:
    return run_train(["--help"], env, tmp_path_factory.mktemp("help"))


def test_train_help_exits_0(help_run) -> None:
    assert help_run.returncode == 0, help_run.stderr


def test_train_help_describes_every_option(help_run) -> None:
    descriptions = option_descriptions(help_run.stdout)

    assert sorted(descriptions) == sorted(HELP_WORDS)
    for option, word in HELP_WORDS.items():
        assert word in descriptions[option], f"{option}: {descriptions[option]!r}"


def test_train_help_lists_every_preset(help_run) -> None:
    description = option_descriptions(help_run.stdout)["--preset"]

    for name in PRESETS:
        assert name in description, name


# --- bad input ---------------------------------------------------------------------------------


def write_dataset(root: Path, classes: int = 3, per_class: int = 4) -> Path:
    """Write a valid dataset: per_class 8x8 PNGs of each class in trainval/, two in test/."""
    (root / "trainval").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for index in range(classes * per_class):
        name = f"img_{index:02d}.png"
        color = (20 * index, 255 - 20 * index, 7 * index)
        Image.new("RGB", (8, 8), color).save(root / "trainval" / name)
        rows.append(f"{name},{index % classes}")
    for index in range(2):
        Image.new("RGB", (8, 8), (index, index, index)).save(root / "test" / f"test_{index}.png")
    (root / "labels.csv").write_text("Id,Category\n" + "\n".join(rows) + "\n")
    return root


def train_args(data: Path, *extra: str) -> list[str]:
    return ["--preset", "modresnet", "--epochs", "1", "--data", str(data), *extra]


def replace_in_labels(root: Path, old: str, new: str) -> None:
    labels = root / "labels.csv"
    labels.write_text(labels.read_text().replace(old, new, 1))


def missing_data_folder(tmp: Path) -> tuple[list[str], str]:
    missing = tmp / "missing"
    return train_args(missing), f"Dataset folder {missing} not found"


def no_labels_csv(tmp: Path) -> tuple[list[str], str]:
    root = write_dataset(tmp / "data")
    (root / "labels.csv").unlink()
    return train_args(root), f"{root / 'labels.csv'} not found"


def labels_missing_column(tmp: Path) -> tuple[list[str], str]:
    root = write_dataset(tmp / "data")
    replace_in_labels(root, "Id,Category", "Id,Label")
    return train_args(root), "has no 'Category' column"


def negative_category(tmp: Path) -> tuple[list[str], str]:
    root = write_dataset(tmp / "data")
    replace_in_labels(root, "img_01.png,1", "img_01.png,-1")
    return train_args(root), "Category '-1' of Id 'img_01.png' is negative"


def duplicate_id(tmp: Path) -> tuple[list[str], str]:
    root = write_dataset(tmp / "data")
    with open(root / "labels.csv", "a") as labels:
        labels.write("img_00.png,2\n")
    return train_args(root), "duplicate Id 'img_00.png'"


def id_without_image(tmp: Path) -> tuple[list[str], str]:
    root = write_dataset(tmp / "data")
    with open(root / "labels.csv", "a") as labels:
        labels.write("ghost.png,0\n")
    return train_args(root), "no image for Id 'ghost.png'"


def corrupt_image(tmp: Path) -> tuple[list[str], str]:
    root = write_dataset(tmp / "data")
    corrupt = root / "trainval" / "img_05.png"
    corrupt.write_bytes(b"these bytes are not a PNG image")
    return train_args(root), f"Failed to read image {corrupt}"


def empty_trainval(tmp: Path) -> tuple[list[str], str]:
    root = write_dataset(tmp / "data")
    for image in (root / "trainval").iterdir():
        image.unlink()
    return train_args(root), f"Image folder {root / 'trainval'} contains no images"


def class_with_one_image(tmp: Path) -> tuple[list[str], str]:
    root = write_dataset(tmp / "data")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(root / "trainval" / "img_99.png")
    with open(root / "labels.csv", "a") as labels:
        labels.write("img_99.png,3\n")
    return train_args(root), "Class 3 has 1 image"


def unknown_preset(tmp: Path) -> tuple[list[str], str]:
    root = write_dataset(tmp / "data")
    args = ["--preset", "resnet19", "--epochs", "1", "--data", str(root)]
    return args, "unknown preset 'resnet19'; choose one of: resnet18_baseline"


def config_file(values: dict, key: str) -> Callable[[Path], tuple[list[str], str]]:
    def make(tmp: Path) -> tuple[list[str], str]:
        root = write_dataset(tmp / "data")
        path = tmp / "config.json"
        path.write_text(json.dumps(values))
        return train_args(root, "--config", str(path)), f"config key {key!r} = {values[key]!r}"

    return make


def invalid_json_config(tmp: Path) -> tuple[list[str], str]:
    root = write_dataset(tmp / "data")
    path = tmp / "config.json"
    path.write_text("{lr: 0.1,}")
    return train_args(root, "--config", str(path)), f"config file {path} is not valid JSON"


def zero_epochs(tmp: Path) -> tuple[list[str], str]:
    root = write_dataset(tmp / "data")
    args = ["--preset", "modresnet", "--epochs", "0", "--data", str(root)]
    return args, "--epochs 0 is invalid"


def resume_without_checkpoint(tmp: Path) -> tuple[list[str], str]:
    root = write_dataset(tmp / "data")
    return train_args(root, "--resume"), "nothing to resume"


BAD_INPUTS = {
    "missing-data-folder": missing_data_folder,
    "no-labels-csv": no_labels_csv,
    "labels-missing-column": labels_missing_column,
    "negative-category": negative_category,
    "duplicate-id": duplicate_id,
    "id-without-image": id_without_image,
    "corrupt-image": corrupt_image,
    "empty-trainval": empty_trainval,
    "class-with-one-image": class_with_one_image,
    "unknown-preset": unknown_preset,
    "negative-lr": config_file({"lr": -0.1}, "lr"),
    "dropout-1": config_file({"dropout": 1.0}, "dropout"),
    "depth-20": config_file({"depth": 20}, "depth"),
    "invalid-json-config": invalid_json_config,
    "zero-epochs": zero_epochs,
    "resume-without-checkpoint": resume_without_checkpoint,
}


def assert_one_error_line(result: subprocess.CompletedProcess, fragment: str) -> None:
    """Check that stderr ends with the only ``error:`` line, which contains ``fragment``.

    Lines before it are progress bars and log lines of the dataset load, for errors found
    while or after decoding the images.
    """
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]

    assert "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1, result.stderr
    assert lines[-1] == errors[0], result.stderr
    assert fragment in errors[0]


@pytest.mark.parametrize("make_case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_train_bad_input_exits_2(make_case, env, tmp_path: Path) -> None:
    args, fragment = make_case(tmp_path)
    out = tmp_path / "out"

    result = run_train([*args, "--out", str(out)], env, tmp_path)

    assert result.returncode == 2, result.stderr
    assert_one_error_line(result, fragment)
    assert result.stdout == ""
    assert not out.exists()
