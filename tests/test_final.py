"""Tests of the final job: retrain on the digits, predict test/, write and score submission.csv.

One real run on the embedded digits (3 epochs of ResNet18 with the cifar stem) checks the
submission and its accuracy. Continuing from a checkpoint and the two-stage recipe run on a
small copy of the digits (20 images per class), so they take one or two short epochs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from results import score
from trainable import final
from trainable.checkpoint import load_checkpoint
from trainable.cli import run_main
from trainable.data import digits_answers_path, digits_root, load_dataset

pytestmark = pytest.mark.slow

# Small and fast on the 8x8 digits: 3 epochs reached 0.973 test accuracy in one run.
FAST_CONFIG = {
    "depth": 18,
    "stem": "cifar",
    "epochs": 3,
    "batch_size": 64,
    "lr": 0.05,
    "augment": "none",
}
SMALL_PER_CLASS = 20
SMALL_TEST_IMAGES = 30


def best_json(path: Path, **values) -> Path:
    """Write a best.json like python -m results.export does; ``values`` replace its keys."""
    record = {
        "config": dict(FAST_CONFIG),
        "stage1": None,
        "fingerprint": None,
        "data": None,
        "experiment": str(path.parent / "runs" / "digits-test"),
        "trial_id": "abcde_00000",
        "rule": "best",
        "epoch": 3,
        "metrics": {"val_acc": 0.97},
        "checkpoint": None,
        **values,
    }
    path.write_text(json.dumps(record))
    return path


def run_final(argv: list[str]) -> tuple[int, str, str]:
    """Run the final job's CLI in this process; return (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_main(final.main, argv)
        except SystemExit as exit_info:
            code = exit_info.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def digits(search_cache):
    return load_dataset(None, progress=False)


@pytest.fixture(scope="module")
def small_digits(search_cache, tmp_path_factory):
    """A copy of the digits with 20 trainval images per class and 30 test images."""
    source = digits_root()
    folder = tmp_path_factory.mktemp("small-digits")
    labels = pd.read_csv(source / "labels.csv", dtype={"Id": str})
    kept = labels.groupby("Category").head(SMALL_PER_CLASS)
    (folder / "trainval").mkdir()
    (folder / "test").mkdir()
    for image_id in kept["Id"]:
        shutil.copy(source / "trainval" / f"{image_id}.png", folder / "trainval")
    for image in sorted((source / "test").iterdir())[:SMALL_TEST_IMAGES]:
        shutil.copy(image, folder / "test")
    kept.to_csv(folder / "labels.csv", index=False)
    return load_dataset(folder, progress=False)


@pytest.fixture(scope="module")
def digits_run(digits, tmp_path_factory):
    """Run the final job once on the digits; return (output folder, stdout)."""
    folder = tmp_path_factory.mktemp("final")
    config = best_json(folder / "best.json", fingerprint=digits.fingerprint)
    out = folder / "out"
    code, stdout, stderr = run_final(["--config", str(config), "--out", str(out)])
    assert code == 0, stderr
    return out, stdout


# --- the final job on the digits ---------------------------------------------------------------


def test_final_submission_one_row_per_test_image(digits_run, digits):
    out, _ = digits_run
    submission = pd.read_csv(out / "submission.csv", dtype={"Id": str})

    assert list(submission.columns) == ["Id", "Category"]
    assert len(submission) == len(digits.test_ids)
    assert submission["Id"].tolist() == sorted(str(test_id) for test_id in digits.test_ids)
    assert submission["Category"].dtype.kind == "i"
    assert submission["Category"].between(0, digits.num_classes - 1).all()


def test_final_submission_scores_above_0_9(digits_run, capsys):
    out, _ = digits_run
    submission = score.read_id_category_csv(out / "submission.csv", "submission")
    answers = score.read_id_category_csv(digits_answers_path(), "answers")

    assert score.submission_problems(submission, answers) == []
    assert score.score_submission(submission, answers).accuracy > 0.9


def test_final_score_cli_finds_digits_answers(digits_run, capsys):
    out, _ = digits_run
    with pytest.raises(SystemExit) as exit_info:
        run_main(score.main, [str(out / "submission.csv")])
    printed = capsys.readouterr().out

    assert exit_info.value.code == 0
    assert printed.startswith("accuracy 0.9")


def test_final_prints_epochs_and_submission_path(digits_run):
    out, stdout = digits_run
    lines = stdout.splitlines()

    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/3", "2/3", "3/3"]
    assert lines[-1].startswith(f"wrote {out / 'submission.csv'}")


def test_final_writes_model_and_metrics(digits_run, digits):
    out, _ = digits_run
    state = load_checkpoint(out / "model.pt")
    metrics = json.loads((out / "metrics.json").read_text())

    assert state["epoch"] == 3
    assert metrics["train_images"] == len(digits.labels)
    assert metrics["test_images"] == len(digits.test_ids)
    assert metrics["fingerprint_matches_search"] is True
    assert metrics["tta"] is False
    assert len(metrics["stages"]) == 1
    assert len(metrics["stages"][0]["epochs"]) == 3


def test_final_continues_from_checkpoint_with_tta(digits_run, small_digits, tmp_path):
    trial_checkpoint, _ = digits_run
    config = best_json(
        tmp_path / "best.json",
        fingerprint=small_digits.fingerprint,
        data=str(small_digits.root),
        checkpoint=str(trial_checkpoint / "model.pt"),
    )
    out = tmp_path / "out"
    argv = ["--config", str(config), "--out", str(out), "--from-checkpoint", "--epochs", "4"]
    code, stdout, stderr = run_final([*argv, "--tta"])
    metrics = json.loads((out / "metrics.json").read_text())

    assert code == 0, stderr
    assert "after epoch 3 of 4" in stdout
    assert [line.split()[1] for line in stdout.splitlines() if line.startswith("epoch ")] == ["4/4"]
    assert load_checkpoint(out / "model.pt")["epoch"] == 4
    assert metrics["tta"] is True
    assert metrics["from_checkpoint"] == str(trial_checkpoint / "model.pt")
    assert len(pd.read_csv(out / "submission.csv")) == SMALL_TEST_IMAGES


def test_final_two_stages_with_force(small_digits, tmp_path):
    stage1 = {**FAST_CONFIG, "epochs": 1}
    stage2 = {**FAST_CONFIG, "epochs": 1, "lr": 0.01, "init_from": "/searched/stage1.pt"}
    config = best_json(
        tmp_path / "best.json",
        config=stage2,
        stage1=stage1,
        fingerprint="0" * 32,  # not this dataset's: --force trains anyway
        data=str(small_digits.root),
    )
    out = tmp_path / "out"
    code, stdout, stderr = run_final(["--config", str(config), "--out", str(out), "--force"])
    final_state = load_checkpoint(out / "model.pt")

    assert code == 0, stderr
    assert "stage 1/2: stage1, 1 epochs" in stdout
    assert "stage 2/2: final, 1 epochs" in stdout
    assert (out / "stage1" / "model.pt").is_file()
    assert final_state["config"]["init_from"] == str(out / "stage1" / "model.pt")
    assert final_state["config"]["lr"] == 0.01
    assert json.loads((out / "metrics.json").read_text())["fingerprint_matches_search"] is False


# --- bad input: one line, exit status 2, nothing written ---------------------------------------


def assert_rejected(argv: list[str], message: str, out: Path) -> None:
    code, stdout, stderr = run_final([*argv, "--out", str(out)])

    assert code == 2
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr
    assert not out.exists()


def test_final_rejects_other_dataset(digits, tmp_path):
    config = best_json(tmp_path / "best.json", fingerprint="f" * 32)

    assert_rejected(["--config", str(config)], "is not the dataset", tmp_path / "out")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must contain a JSON object"),
        (json.dumps({"config": FAST_CONFIG}), "is missing the keys 'stage1', 'fingerprint'"),
    ],
)
def test_final_rejects_malformed_best_json(search_cache, tmp_path, content, message):
    config = tmp_path / "best.json"
    config.write_text(content)

    assert_rejected(["--config", str(config)], message, tmp_path / "out")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"config": {**FAST_CONFIG, "depth": 19}}, "config key 'depth' = 19 is invalid"),
        ({"config": {**FAST_CONFIG, "colour": 1}}, "unknown config key 'colour'"),
        ({"config": "resnet18"}, "key 'config' must be a JSON object"),
        ({"stage1": {"lr": -1.0}}, "config key 'lr' = -1.0 is invalid"),
        ({"fingerprint": 7}, "key 'fingerprint' must be a string"),
    ],
)
def test_final_rejects_invalid_values(search_cache, tmp_path, values, message):
    config = best_json(tmp_path / "best.json", **{"fingerprint": "0" * 32, **values})

    assert_rejected(["--config", str(config)], message, tmp_path / "out")


def test_final_rejects_missing_best_json(search_cache, tmp_path):
    missing = tmp_path / "missing.json"

    assert_rejected(["--config", str(missing)], "cannot read", tmp_path / "out")


def test_final_rejects_output_under_file(digits, tmp_path):
    config = best_json(tmp_path / "best.json", fingerprint=digits.fingerprint)
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, stderr = run_final(["--config", str(config), "--out", str(blocker / "out")])

    assert code == 2
    assert f"output folder {blocker / 'out'} cannot be written" in stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_final_rejects_read_only_output(digits, tmp_path):
    config = best_json(tmp_path / "best.json", fingerprint=digits.fingerprint)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code, _, stderr = run_final(["--config", str(config), "--out", str(locked)])

    assert code == 2
    assert "cannot be written" in stderr
    assert list(locked.iterdir()) == []


def test_final_rejects_from_checkpoint_without_one(digits, tmp_path):
    config = best_json(tmp_path / "best.json", fingerprint=digits.fingerprint)
    argv = ["--config", str(config), "--from-checkpoint"]

    assert_rejected(argv, "has no checkpoint", tmp_path / "out")


def test_final_rejects_nonpositive_epochs(search_cache, tmp_path):
    config = best_json(tmp_path / "best.json", fingerprint="0" * 32)
    argv = ["--config", str(config), "--epochs", "0"]

    assert_rejected(argv, "--epochs 0 is invalid", tmp_path / "out")
