"""Bad input to every command: exit status 2, one message with the problem and the fix, no
traceback, and no file written or changed.

Each case runs the command's ``main`` through ``run_main`` in this process, as ``python -m``
runs it, with the working directory and the dataset cache in the case's own temporary folder.
In-process runs keep the table fast: a new interpreter spends 10-15 s importing torch and Ray
on a loaded 2-core machine, and none of these cases gets as far as starting Ray. A case that
let an exception escape ``run_main`` is reported with the traceback a user would see.
"""

from __future__ import annotations

import json
import shutil
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from trainable.cli import run_main
from trainable.data import load_dataset

CLASSES = 3
IMAGES_PER_CLASS = 4
TEST_IMAGES = 3


@dataclass(frozen=True)
class Case:
    """One malformed input: the command, its files and arguments, and the expected message."""

    command: str  # module whose main runs: search.run, trainable.train, results.score, ...
    args: Callable[[Path, Path], list[str]]  # (case folder, valid dataset) -> argv
    expected: tuple[str, ...]  # substrings of stderr: the problem, then the fix
    setup: Callable[[Path, Path], None] = lambda folder, good: None
    env: dict[str, str] = field(default_factory=dict)


# --- files the cases are built from -----------------------------------------------------------


def write_dataset(
    root: Path,
    labels: list[tuple[str, str]] | None = None,
    test_count: int = TEST_IMAGES,
) -> Path:
    """Write an 8x8 dataset: labels.csv, trainval/ID.png per labeled Id and test/t*.png."""
    if labels is None:
        labels = [
            (f"img{index}", str(index % CLASSES)) for index in range(CLASSES * IMAGES_PER_CLASS)
        ]
    rng = np.random.default_rng(0)
    (root / "trainval").mkdir(parents=True)
    (root / "test").mkdir()
    for image_id, _ in labels:
        pixels = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "trainval" / f"{image_id}.png")
    for index in range(test_count):
        pixels = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "test" / f"t{index}.png")
    table = pd.DataFrame(labels, columns=["Id", "Category"])
    table.to_csv(root / "labels.csv", index=False)
    return root


def dataset_with(change: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    """Return a setup that writes a valid dataset to FOLDER/data and then breaks it."""

    def setup(folder: Path, good: Path) -> None:
        change(write_dataset(folder / "data"))

    return setup


def set_labels(text: str) -> Callable[[Path], None]:
    return lambda root: (root / "labels.csv").write_text(text)


def replace_label_row(row: int, line: str) -> Callable[[Path], None]:
    """Replace data row ``row`` (0-based, after the header) of labels.csv."""

    def change(root: Path) -> None:
        lines = (root / "labels.csv").read_text().splitlines()
        lines[row + 1] = line
        (root / "labels.csv").write_text("\n".join(lines) + "\n")

    return change


def remove_files(pattern: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        for path in root.glob(pattern):
            path.unlink()

    return change


def corrupt_first_image(root: Path) -> None:
    (root / "trainval" / "img0.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")


def single_image_class(folder: Path, good: Path) -> None:
    labels = [(f"img{index}", str(index % 2)) for index in range(8)] + [("lonely", "2")]
    write_dataset(folder / "data", labels)


def write_file(name: str, text: str) -> Callable[[Path, Path], None]:
    def setup(folder: Path, good: Path) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)

    return setup


def best_json(**changes: object) -> Callable[[Path, Path], None]:
    """Write FOLDER/best.json as results.export writes it, with some keys changed or removed."""

    def setup(folder: Path, good: Path) -> None:
        record = {
            "config": {"depth": 18, "stem": "cifar", "epochs": 1, "batch_size": 8},
            "stage1": None,
            "fingerprint": load_dataset(good, progress=False).fingerprint,
            "data": str(good),
            "experiment": str(folder / "runs" / "search"),
            "trial_id": "abc_00000",
            "checkpoint": None,
        }
        for key, value in changes.items():
            if value is REMOVE:
                del record[key]
            else:
                record[key] = value
        (folder / "best.json").write_text(json.dumps(record))

    return setup


REMOVE = object()


def submission(rows: list[tuple[str, str]]) -> Callable[[Path, Path], None]:
    """Write FOLDER/submission.csv with ``rows`` and FOLDER/answers.csv for Ids a, b and c."""

    def setup(folder: Path, good: Path) -> None:
        answers = "Id,Category\na,0\nb,1\nc,2\n"
        (folder / "answers.csv").write_text(answers)
        body = "".join(f"{image_id},{category}\n" for image_id, category in rows)
        (folder / "submission.csv").write_text("Id,Category\n" + body)

    return setup


def experiment_folder(files: dict[str, str]) -> Callable[[Path, Path], None]:
    def setup(folder: Path, good: Path) -> None:
        experiment = folder / "runs" / "search"
        experiment.mkdir(parents=True)
        for name, text in files.items():
            (experiment / name).write_text(text)

    return setup


def corrupt_checkpoint(folder: Path, good: Path) -> None:
    (folder / "out").mkdir()
    (folder / "out" / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated zip archive")


def closed_port() -> int:
    """Return a loopback port that nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def data(folder: Path) -> str:
    return str(folder / "data")


# --- the table ---------------------------------------------------------------------------------

SEARCH = "search.run"
TRAIN = "trainable.train"
FINAL = "trainable.final"
SHOW = "results.show"
EXPORT = "results.export"
SCORE = "results.score"

CASES: dict[str, Case] = {
    # search.run: options
    "search zero samples": Case(
        SEARCH, lambda f, g: ["--samples", "0"], ("--samples 0 is invalid", "at least 1")
    ),
    "search negative max epochs": Case(
        SEARCH, lambda f, g: ["--max-epochs", "-2"], ("--max-epochs -2 is invalid", "at least 1")
    ),
    "search bad gpus per trial": Case(
        SEARCH,
        lambda f, g: ["--gpus-per-trial", "1.5"],
        ("--gpus-per-trial 1.5 is invalid", "a fraction in (0, 1]"),
    ),
    "search unknown space": Case(
        SEARCH, lambda f, g: ["--space", "resnet_famly"], ("resnet_famly", "resnet_family")
    ),
    "search bad address": Case(
        SEARCH,
        lambda f, g: ["--address", "headnode", "--data", str(g)],
        ("--address 'headnode' is invalid", "HOST:PORT"),
    ),
    "search unreachable address": Case(
        SEARCH,
        lambda f, g: ["--address", f"127.0.0.1:{closed_port()}", "--data", str(g)],
        ("cannot reach a Ray cluster", "ray start --head"),
    ),
    "search resume without name": Case(
        SEARCH, lambda f, g: ["--resume"], ("--resume needs the --name", "--name")
    ),
    "search resume of missing experiment": Case(
        SEARCH,
        lambda f, g: ["--name", "nothing", "--resume", "--storage", str(f / "runs")],
        ("cannot resume", "check --name and --storage"),
    ),
    "search resume of a non-experiment": Case(
        SEARCH,
        lambda f, g: ["--name", "notes", "--resume", "--storage", str(f / "runs")],
        ("it is not an experiment of this tool", "check --name and --storage"),
        setup=write_file("runs/notes/readme.txt", "not an experiment\n"),
    ),
    "search dashboard beyond loopback without auth": Case(
        SEARCH,
        # A documentation address (RFC 5737), not on this machine: if the check ever let the
        # search through, Ray could not bind it.
        lambda f, g: ["--dashboard-host", "198.51.100.7", "--data", str(g)],
        ("token authentication is off", "--allow-unauthenticated"),
        env={"RAY_AUTH_MODE": "off"},
    ),
    # search.run: datasets
    "search data folder missing": Case(
        SEARCH,
        lambda f, g: ["--data", str(f / "missing")],
        ("missing not found", "contains labels.csv, trainval/ and test/"),
    ),
    "search single-image class": Case(
        SEARCH,
        lambda f, g: ["--data", data(f)],
        ("Class 2 has 1 image", "Add images of class 2"),
        setup=single_image_class,
    ),
    # trainable.train: options and config files
    "train unknown preset": Case(
        TRAIN, lambda f, g: ["--preset", "resnet99"], ("unknown preset 'resnet99'", "choose one of")
    ),
    "train negative epochs": Case(
        TRAIN, lambda f, g: ["--epochs", "-1"], ("--epochs -1 is invalid", "positive number")
    ),
    "train config invalid JSON": Case(
        TRAIN,
        lambda f, g: ["--config", str(f / "config.json")],
        ("is not valid JSON", "fix the file"),
        setup=write_file("config.json", '{"lr": 0.1,'),
    ),
    "train config unknown key": Case(
        TRAIN,
        lambda f, g: ["--config", str(f / "config.json")],
        ("unknown config key 'learning_rate'", "known keys:"),
        setup=write_file("config.json", '{"learning_rate": 0.1}'),
    ),
    "train config out of range": Case(
        TRAIN,
        lambda f, g: ["--config", str(f / "config.json")],
        ("'dropout' = 1.5 is invalid", "must be in [0, 1)"),
        setup=write_file("config.json", '{"dropout": 1.5}'),
    ),
    "train resume without checkpoint": Case(
        TRAIN,
        lambda f, g: ["--resume", "--out", str(f / "out")],
        ("nothing to resume", "run without --resume"),
    ),
    "train resume corrupt checkpoint": Case(
        TRAIN,
        lambda f, g: ["--resume", "--out", str(f / "out"), "--data", str(g), "--epochs", "1"],
        ("checkpoint.pt is corrupt or truncated", "retrain"),
        setup=corrupt_checkpoint,
    ),
    # trainable.train: datasets
    "train dataset without labels.csv": Case(
        TRAIN,
        lambda f, g: ["--data", data(f)],
        ("labels.csv not found", "columns Id,Category"),
        setup=dataset_with(remove_files("labels.csv")),
    ),
    "train dataset bad columns": Case(
        TRAIN,
        lambda f, g: ["--data", data(f)],
        ("has no 'Category' column", "header line must be Id,Category"),
        setup=dataset_with(set_labels("Id,Label\nimg0,0\n")),
    ),
    "train dataset negative category": Case(
        TRAIN,
        lambda f, g: ["--data", data(f)],
        ("Category '-1' of Id 'img0' is negative", "whole numbers"),
        setup=dataset_with(replace_label_row(0, "img0,-1")),
    ),
    "train dataset non-integer category": Case(
        TRAIN,
        lambda f, g: ["--data", data(f)],
        ("Category 'cat' of Id 'img0' is not an integer", "whole numbers"),
        setup=dataset_with(replace_label_row(0, "img0,cat")),
    ),
    "train dataset duplicate id": Case(
        TRAIN,
        lambda f, g: ["--data", data(f)],
        ("duplicate Id 'img0'", "Keep one row per image"),
        setup=dataset_with(replace_label_row(1, "img0,1")),
    ),
    "train dataset missing image": Case(
        TRAIN,
        lambda f, g: ["--data", data(f)],
        ("no image for Id 'img3'", "Add the missing images or delete their rows"),
        setup=dataset_with(remove_files("trainval/img3.png")),
    ),
    "train dataset corrupt image": Case(
        TRAIN,
        lambda f, g: ["--data", data(f)],
        ("Failed to read image", "Replace it with a valid image"),
        setup=dataset_with(corrupt_first_image),
    ),
    "train dataset empty trainval": Case(
        TRAIN,
        lambda f, g: ["--data", data(f)],
        ("contains no images", "Put the training images there"),
        setup=dataset_with(remove_files("trainval/*.png")),
    ),
    "train dataset empty test": Case(
        TRAIN,
        lambda f, g: ["--data", data(f)],
        ("contains no images", "Put the images to predict there"),
        setup=dataset_with(remove_files("test/*.png")),
    ),
    "train dataset single-image class": Case(
        TRAIN,
        lambda f, g: ["--data", data(f), "--out", str(f / "out")],
        ("Class 2 has 1 image", "Add images of class 2"),
        setup=single_image_class,
    ),
    # trainable.final: best.json and its dataset
    "final best.json missing": Case(
        FINAL,
        lambda f, g: ["--config", str(f / "best.json")],
        ("cannot read", "check the --config path"),
    ),
    "final best.json invalid JSON": Case(
        FINAL,
        lambda f, g: ["--config", str(f / "best.json")],
        ("is not valid JSON", "export it again with python -m results.export"),
        setup=write_file("best.json", '{"config": '),
    ),
    "final best.json missing keys": Case(
        FINAL,
        lambda f, g: ["--config", str(f / "best.json")],
        ("missing the key 'fingerprint'", "written by python -m results.export"),
        setup=best_json(fingerprint=REMOVE),
    ),
    "final best.json config out of range": Case(
        FINAL,
        lambda f, g: ["--config", str(f / "best.json")],
        ("'lr' = -0.1 is invalid", "must be a positive number"),
        setup=best_json(config={"lr": -0.1}),
    ),
    "final best.json wrong fingerprint": Case(
        FINAL,
        lambda f, g: ["--config", str(f / "best.json"), "--out", str(f / "final")],
        ("is not the dataset", "pass that dataset with --data, or --force"),
        setup=best_json(fingerprint="0" * 64),
    ),
    "final zero epochs": Case(
        FINAL,
        lambda f, g: ["--config", str(f / "best.json"), "--epochs", "0"],
        ("--epochs 0 is invalid", "positive number"),
        setup=best_json(),
    ),
    "final single-image class": Case(
        FINAL,
        lambda f, g: ["--config", str(f / "best.json"), "--data", data(f), "--force"],
        ("Class 2 has 1 image", "Add images of class 2"),
        setup=lambda f, g: (best_json()(f, g), single_image_class(f, g)),
    ),
    # results.show and results.export: experiment folders
    "show missing experiment": Case(
        SHOW,
        lambda f, g: [str(f / "runs" / "nothing")],
        ("experiment folder", "pass the folder the search wrote"),
    ),
    "show folder that is no experiment": Case(
        SHOW,
        lambda f, g: [str(f / "runs" / "search")],
        ("is not a Ray Tune experiment folder", "pass the folder the search wrote"),
        setup=experiment_folder({"notes.txt": "hello\n"}),
    ),
    "show invalid search.json": Case(
        SHOW,
        lambda f, g: [str(f / "runs" / "search")],
        ("search.json cannot be read", "restore it"),
        setup=experiment_folder({"search.json": '{"space": '}),
    ),
    "show zero top": Case(
        SHOW,
        lambda f, g: [str(f / "runs" / "search"), "--top", "0"],
        ("--top 0 is invalid", "positive number"),
        setup=experiment_folder({"search.json": "{}"}),
    ),
    "export without search.json": Case(
        EXPORT,
        lambda f, g: [str(f / "runs" / "search")],
        ("search.json not found", "export an experiment started by python -m search.run"),
        setup=experiment_folder({"experiment_state-2026-01-01_00-00-00.json": "{}"}),
    ),
    "export without finished epoch": Case(
        EXPORT,
        lambda f, g: [str(f / "runs" / "search")],
        ("has no finished epoch yet", "wait until a trial reports its first epoch"),
        setup=experiment_folder({"search.json": '{"fingerprint": "abc"}'}),
    ),
    # results.score: submissions
    "score missing ids": Case(
        SCORE,
        lambda f, g: [str(f / "submission.csv"), "--answers", str(f / "answers.csv")],
        ("1 test Ids are missing", "Id 'c'"),
        setup=submission([("a", "0"), ("b", "1")]),
    ),
    "score extra ids": Case(
        SCORE,
        lambda f, g: [str(f / "submission.csv"), "--answers", str(f / "answers.csv")],
        ("1 rows have an Id that is not a test Id", "Id 'z'"),
        setup=submission([("a", "0"), ("b", "1"), ("c", "2"), ("z", "0")]),
    ),
    "score duplicate ids": Case(
        SCORE,
        lambda f, g: [str(f / "submission.csv"), "--answers", str(f / "answers.csv")],
        ("1 Ids appear more than once", "line 3: Id 'a'"),
        setup=submission([("a", "0"), ("a", "1"), ("b", "1"), ("c", "2")]),
    ),
    "score non-integer categories": Case(
        SCORE,
        lambda f, g: [str(f / "submission.csv"), "--answers", str(f / "answers.csv")],
        ("1 Categories are not integers", "Id 'b' has Category 'dog'"),
        setup=submission([("a", "0"), ("b", "dog"), ("c", "2")]),
    ),
    "score bad header": Case(
        SCORE,
        lambda f, g: [str(f / "submission.csv"), "--answers", str(f / "answers.csv")],
        ("must start with the header Id,Category", "found 'image,label'"),
        setup=lambda f, g: (
            submission([])(f, g),
            (f / "submission.csv").write_text("image,label\na,0\n"),
        ),
    ),
    "score answers missing": Case(
        SCORE,
        lambda f, g: [str(f / "submission.csv"), "--answers", str(f / "missing.csv")],
        ("answers file", "not found; check the path"),
        setup=submission([("a", "0"), ("b", "1"), ("c", "2")]),
    ),
}


# --- running a case ----------------------------------------------------------------------------


def snapshot(folder: Path, skip: Path) -> dict[str, tuple[int, int] | None]:
    """Map every path under ``folder`` (but not under ``skip``) to its (size, mtime) or None."""
    files: dict[str, tuple[int, int] | None] = {}
    for path in sorted(folder.rglob("*")):
        if path == skip or skip in path.parents:
            continue
        stat = path.stat()
        files[str(path.relative_to(folder))] = (
            None if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
        )
    return files


def refuse_ray_start(*args: object, **kwargs: object) -> None:
    raise RuntimeError("a bad-input case reached ray.init instead of exiting before Ray starts")


def run_command(command: str, argv: list[str]) -> tuple[int | None, str | None]:
    """Run a command's main as ``python -m`` does; return its exit status and any traceback."""
    module = __import__(command, fromlist=["main"])
    try:
        run_main(module.main, argv)
    except SystemExit as stop:
        return stop.code, None
    except Exception:  # what a user would see as a traceback
        return None, traceback.format_exc()
    return 0, None


@pytest.fixture(scope="module")
def good_dataset(tmp_path_factory) -> tuple[Path, Path]:
    """Return a valid dataset and a cache that contains its decoded images."""
    root = tmp_path_factory.mktemp("bad_input")
    cache = root / "cache"
    good = write_dataset(root / "good")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RESNET_SEARCH_CACHE", str(cache))
        load_dataset(good, progress=False)
    return good, cache


@pytest.mark.parametrize("name", list(CASES))
def test_command_rejects_bad_input(name, good_dataset, tmp_path, monkeypatch, capsys) -> None:
    case = CASES[name]
    good, shared_cache = good_dataset
    cache = tmp_path / "cache"
    shutil.copytree(shared_cache, cache)
    monkeypatch.setenv("RESNET_SEARCH_CACHE", str(cache))
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # default output folders (runs/, final/) land in the case folder
    monkeypatch.setattr("ray.init", refuse_ray_start)
    case.setup(tmp_path, good)
    argv = case.args(tmp_path, good)
    before = snapshot(tmp_path, skip=cache)
    capsys.readouterr()

    code, escaped = run_command(case.command, argv)
    err = capsys.readouterr().err

    assert escaped is None, escaped
    assert code == 2, err
    assert "Traceback" not in err
    for expected in case.expected:
        assert expected in err, f"{expected!r} not in: {err}"
    assert snapshot(tmp_path, skip=cache) == before, "files were written or changed"
    # A decode that failed leaves no temporary folder in the cache.
    assert not [path.name for path in (cache / "datasets").glob(".*")]
