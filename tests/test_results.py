"""Tests of results/: reading real Ray Tune experiments, Parquet tables, plots, export, scoring.

The experiments are run by a real local Ray Tune with a small function trainable that reports
made-up metrics and a dummy checkpoint.pt, so the folder layout is Ray's own.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from results import export, score, show
from results.experiment import (
    RESULTS_FILE,
    TRIALS_FILE,
    ExperimentError,
    read_experiment,
    trial_status,
)
from results.export import best_record, pick_best
from results.leaderboard import asha_savings_line, leaderboard_text
from results.plots import asha_milestones, trials_per_epoch

pytestmark = pytest.mark.slow

EPOCHS = 4
FINGERPRINT = "0123456789abcdef0123456789abcdef"
# val_acc of epoch e is lr * e for the ASHA experiment's trials.
ASHA_LRS = [0.2, 0.1, 0.05, 0.3]
FAILING_LR = 0.3
# The best-or-last experiment: val_acc per epoch, keyed by the trial's seed.
CURVES = {1: [0.5, 0.7, 0.9], 2: [0.6, 0.95, 0.6]}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def report_epochs(config: dict) -> None:
    """A Tune function trainable: report made-up metrics and a checkpoint for each epoch."""
    from ray import tune

    if config["lr"] == FAILING_LR:
        raise RuntimeError("made-up failure before the first epoch")
    curve = CURVES.get(config["seed"])
    for epoch in range(1, config["epochs"] + 1):
        val_acc = curve[epoch - 1] if curve else config["lr"] * epoch
        metrics = {
            "epoch": epoch,
            "train_loss": 1.0 / epoch,
            "train_acc": val_acc,
            "val_loss": 1.0 - val_acc,
            "val_acc": val_acc,
            "lr": config["lr"],
            "epoch_seconds": 0.01,
            "images_per_second": 1000.0,
        }
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"epoch": epoch}, os.path.join(folder, "checkpoint.pt"))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def run_experiment(storage: Path, name: str, param_space: dict, scheduler=None) -> Path:
    """Run the trainable one trial at a time (so ASHA's decisions are deterministic)."""
    from ray import cloudpickle, tune

    # Ray's workers cannot import a pytest test module, so the trainable travels by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    tuner = tune.Tuner(
        report_epochs,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric="val_acc", mode="max", scheduler=scheduler, max_concurrent_trials=1
        ),
        run_config=tune.RunConfig(
            storage_path=str(storage),
            name=name,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )
    tuner.fit()
    folder = storage / name
    search = {
        "space": "test",
        "data": None,
        "fingerprint": FINGERPRINT,
        "num_classes": 10,
        "max_epochs": param_space["epochs"],
        "metric": "val_acc",
        "mode": "max",
        "stage1": None,
        "budget": {"grace_period": 1, "reduction_factor": 2},
    }
    (folder / "search.json").write_text(json.dumps(search))
    return folder


@pytest.fixture(scope="module")
def asha_experiment(ray_session, tmp_path_factory) -> Path:
    """Four trials under ASHA: one completes, two are stopped at epoch 1, one fails at once."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    scheduler = ASHAScheduler(time_attr="epoch", max_t=EPOCHS, grace_period=1, reduction_factor=2)
    space = {"lr": tune.grid_search(ASHA_LRS), "epochs": EPOCHS, "seed": 0, "depth": 18}
    return run_experiment(tmp_path_factory.mktemp("runs"), "asha", space, scheduler)


@pytest.fixture(scope="module")
def curves_experiment(ray_session, tmp_path_factory) -> Path:
    """Two trials without early stopping: A (seed 1) ends best, B (seed 2) peaks at epoch 2."""
    from ray import tune

    space = {"lr": 0.1, "epochs": 3, "seed": tune.grid_search([1, 2])}
    return run_experiment(tmp_path_factory.mktemp("runs"), "curves", space)


@pytest.fixture(scope="module")
def shown_experiment(asha_experiment) -> Path:
    """The ASHA experiment after ``python -m results.show`` wrote its tables and plots."""
    assert show.main([str(asha_experiment)]) == 0
    return asha_experiment


def run_cli(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run a CLI main through run_main, returning (exit status, stdout, stderr)."""
    from trainable.cli import run_main

    with pytest.raises(SystemExit) as exit_info:
        run_main(main, argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def trial_by_lr(trials: pd.DataFrame, lr: float) -> pd.Series:
    return trials[trials["config/lr"] == lr].iloc[0]


# --- reading a real experiment -----------------------------------------------------------------


def test_results_parquet_schema_and_rows(shown_experiment):
    table = pq.read_table(shown_experiment / RESULTS_FILE)
    schema = table.schema

    # 4 epochs of the completed trial, 1 of each ASHA-stopped trial, none of the failed one
    assert table.num_rows == 6
    assert pa.types.is_string(schema.field("trial_id").type) or pa.types.is_large_string(
        schema.field("trial_id").type
    )
    assert schema.field("epoch").type == pa.int64()
    for metric in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds"):
        assert schema.field(metric).type == pa.float64(), metric
    assert schema.field("images_per_second").type == pa.float64()
    assert schema.field("config/lr").type == pa.float64()
    assert schema.field("config/epochs").type == pa.int64()
    assert schema.field("config/depth").type == pa.int64()
    assert "time_total_s" in schema.names


def test_results_parquet_one_row_per_trial_epoch(shown_experiment):
    frame = pd.read_parquet(shown_experiment / RESULTS_FILE)

    assert not frame.duplicated(["trial_id", "epoch"]).any()
    assert frame.groupby("trial_id")["epoch"].max().sort_values().tolist() == [1, 1, 4]


def test_trials_parquet_schema_and_rows(shown_experiment):
    table = pq.read_table(shown_experiment / TRIALS_FILE)
    schema = table.schema

    assert table.num_rows == len(ASHA_LRS)
    for column in ("best_val_acc", "last_val_acc"):
        assert schema.field(column).type == pa.float64(), column
    for column in ("best_epoch", "epochs_run", "max_epochs"):
        assert schema.field(column).type == pa.int64(), column
    for column in ("trial_id", "status", "error", "checkpoint", "config/lr"):
        assert column in schema.names, column


def test_trials_status_from_folders(asha_experiment):
    trials = read_experiment(asha_experiment).trials

    assert trial_by_lr(trials, 0.2)["status"] == "completed"
    assert trial_by_lr(trials, 0.1)["status"] == "stopped_by_asha"
    assert trial_by_lr(trials, 0.05)["status"] == "stopped_by_asha"
    assert trial_by_lr(trials, FAILING_LR)["status"] == "error"


def test_trials_summary_values(asha_experiment):
    trials = read_experiment(asha_experiment).trials
    completed = trial_by_lr(trials, 0.2)
    failed = trial_by_lr(trials, FAILING_LR)

    assert completed["best_val_acc"] == pytest.approx(0.8)
    assert completed["best_epoch"] == 4
    assert completed["last_val_acc"] == pytest.approx(0.8)
    assert completed["epochs_run"] == 4
    assert failed["epochs_run"] == 0
    assert math.isnan(failed["best_val_acc"])
    assert "made-up failure" in failed["error"]
    assert pd.isna(completed["error"])


def test_trials_checkpoint_is_newest_absolute(asha_experiment):
    completed = trial_by_lr(read_experiment(asha_experiment).trials, 0.2)
    checkpoint = Path(completed["checkpoint"])

    assert checkpoint.is_absolute()
    assert checkpoint.is_file()
    assert checkpoint.parent.name == "checkpoint_000003"


def test_experiment_reads_running_trial(asha_experiment, tmp_path):
    # A copy of the completed trial, cut after epoch 2 with a third line half written.
    source = next(p for p in asha_experiment.iterdir() if "lr=0.2000" in p.name)
    copy = tmp_path / "running" / source.name
    shutil.copytree(source, copy)
    lines = (copy / "result.json").read_text().splitlines()
    second = json.loads(lines[1])
    second["done"] = False
    (copy / "result.json").write_text(lines[0] + "\n" + json.dumps(second) + "\n" + lines[2][:40])

    trials = read_experiment(tmp_path / "running").trials

    assert trials["status"].tolist() == ["running"]
    assert trials["epochs_run"].tolist() == [2]


@pytest.mark.parametrize(
    ("folder_name", "trial_id"),
    [
        ("report_epochs_72709_00006_6_lr=0.0500_2026-12-04_20-01-26", "72709_00006"),
        ("train_trial_cd2849e6_1_augment=none,batch_size=20_2026-12-04_20-31-27", "cd2849e6"),
    ],
)
def test_experiment_trial_id_from_folder_name(tmp_path, folder_name, trial_id):
    # A trial that has not reported yet: its id comes from the folder name alone.
    (tmp_path / folder_name).mkdir()
    (tmp_path / folder_name / "params.json").write_text(json.dumps({"lr": 0.05}))

    assert read_experiment(tmp_path).trials["trial_id"].tolist() == [trial_id]


# --- decisions without Ray ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("has_error", "done", "epochs_run", "max_epochs", "expected"),
    [
        (False, True, 4, 4, "completed"),
        (False, True, 1, 4, "stopped_by_asha"),
        (True, False, 2, 4, "error"),
        (False, False, 2, 4, "running"),
        (True, True, 4, 4, "completed"),  # failed once, retried by Ray, then finished
        (False, True, 3, None, "completed"),
    ],
)
def test_trial_status_cases(has_error, done, epochs_run, max_epochs, expected):
    assert trial_status(has_error, done, epochs_run, max_epochs) == expected


def results_frame(rows: list[tuple[str, int, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["trial_id", "epoch", "val_acc", "val_loss"])


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # same val_acc: the one reached in fewer epochs wins
        ([("a", 1, 0.5, 0.1), ("a", 3, 0.9, 0.1), ("b", 2, 0.9, 0.3)], ("b", 2)),
        # same val_acc and epoch: lower val_loss wins
        ([("a", 2, 0.9, 0.4), ("b", 2, 0.9, 0.2)], ("b", 2)),
        # everything equal: the smaller trial id wins
        ([("b", 2, 0.9, 0.2), ("a", 2, 0.9, 0.2)], ("a", 2)),
        # a missing val_acc never wins
        ([("a", 1, math.nan, 0.0), ("b", 1, 0.1, 2.0)], ("b", 1)),
    ],
)
def test_pick_best_ties(rows, expected):
    row = pick_best(results_frame(rows), "best")

    assert (row["trial_id"], row["epoch"]) == expected


def test_pick_best_last_rule_uses_last_epochs():
    rows = [("a", 1, 0.9, 0.1), ("a", 2, 0.2, 0.1), ("b", 1, 0.5, 0.1)]

    row = pick_best(results_frame(rows), "last")

    assert (row["trial_id"], row["epoch"]) == ("b", 1)


def test_pick_best_empty_returns_none():
    assert pick_best(results_frame([]), "best") is None


def test_asha_savings_line_counts(asha_experiment):
    line = asha_savings_line(read_experiment(asha_experiment).trials, EPOCHS)

    assert line.startswith("ASHA ran 6 epochs of the 12 that all 3 trials would take")
    assert "(50% saved)" in line
    assert "1 failed trial not counted" in line


def test_leaderboard_text_ranks_best_first(asha_experiment):
    trials = read_experiment(asha_experiment).trials
    lines = leaderboard_text(trials, top=2).splitlines()
    best_id = trial_by_lr(trials, 0.2)["trial_id"]

    assert lines[0].split()[:3] == ["rank", "trial", "depth"]
    assert lines[2].split()[:2] == ["1", best_id]
    assert "completed" in lines[2]
    assert "ASHA stop" in lines[3]
    assert lines[-1] == "(2 more trials not shown)"


def test_trials_per_epoch_counts(asha_experiment):
    counts = trials_per_epoch(read_experiment(asha_experiment).trials, EPOCHS)

    assert counts.tolist() == [3, 1, 1, 1]


def test_asha_milestones_from_budget():
    search = {"budget": {"grace_period": 1, "reduction_factor": 3}}

    assert asha_milestones(search, 30) == [1, 3, 9, 27]
    assert asha_milestones({}, 30) == []


# --- show: leaderboard, tables and plots -------------------------------------------------------


def test_show_prints_leaderboard_and_savings(asha_experiment, capsys):
    code, out, _ = run_cli(show.main, [str(asha_experiment)], capsys)

    assert code == 0
    assert "best val_acc" in out
    assert "ASHA ran 6 epochs of the 12" in out


@pytest.mark.parametrize("name", ["learning_curves.png", "asha_rungs.png", "param_importance.png"])
def test_show_writes_valid_png(shown_experiment, name):
    path = shown_experiment / "plots" / name
    data = path.read_bytes()

    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) > 200


def test_show_param_importance_with_one_trial(curves_experiment, tmp_path):
    # Only one finished trial: the plot is written with a note instead of failing.
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(curves_experiment / "search.json", single)
    trial = next(p for p in curves_experiment.iterdir() if (p / "params.json").is_file())
    shutil.copytree(trial, single / trial.name)

    assert show.main([str(single)]) == 0
    assert (single / "plots" / "param_importance.png").read_bytes()[:8] == PNG_MAGIC


# --- export ------------------------------------------------------------------------------------


def test_export_best_rule_picks_peak(curves_experiment, capsys):
    out = curves_experiment / "best_by_best.json"
    code, _, _ = run_cli(export.main, [str(curves_experiment), "--out", str(out)], capsys)
    record = json.loads(out.read_text())

    assert code == 0
    assert record["config"]["seed"] == 2
    assert record["epoch"] == 2
    assert record["metrics"]["val_acc"] == pytest.approx(0.95)
    assert record["rule"] == "best"


def test_export_last_rule_picks_final_epoch(curves_experiment, capsys):
    out = curves_experiment / "best_by_last.json"
    argv = [str(curves_experiment), "--by", "last", "--out", str(out)]
    code, _, _ = run_cli(export.main, argv, capsys)
    record = json.loads(out.read_text())

    assert code == 0
    assert record["config"]["seed"] == 1
    assert record["epoch"] == 3
    assert record["metrics"]["val_acc"] == pytest.approx(0.9)
    assert record["rule"] == "last"


def test_export_record_fields(asha_experiment, capsys):
    code, _, _ = run_cli(export.main, [str(asha_experiment)], capsys)
    record = json.loads((asha_experiment / "best.json").read_text())

    assert code == 0
    assert record["fingerprint"] == FINGERPRINT
    assert record["data"] is None
    assert record["stage1"] is None
    assert record["experiment"] == str(asha_experiment.resolve())
    assert record["config"]["lr"] == 0.2
    assert record["config"]["batch_size"] == 128  # filled in from TrainConfig's defaults
    assert record["epoch"] == 4
    assert Path(record["checkpoint"]).is_file()
    assert record["checkpoint_epoch"] == 4


def test_export_uses_chosen_epoch_checkpoint(curves_experiment):
    # Trial B's best epoch is 2, and Ray kept the checkpoints of epochs 2 and 3 (num_to_keep=2).
    record = best_record(read_experiment(curves_experiment), "best")

    assert record["checkpoint_epoch"] == 2
    assert record["checkpoint"].endswith("checkpoint_000001/checkpoint.pt")


def test_export_falls_back_to_newest_checkpoint(curves_experiment, tmp_path):
    copy = tmp_path / "curves"
    shutil.copytree(curves_experiment, copy)
    trial_b = next(p for p in copy.iterdir() if "seed=2" in p.name)
    shutil.rmtree(trial_b / "checkpoint_000001")

    record = best_record(read_experiment(copy), "best")

    assert record["epoch"] == 2
    assert record["checkpoint_epoch"] == 3
    assert record["checkpoint"] == str(trial_b.resolve() / "checkpoint_000002" / "checkpoint.pt")


def make_empty_experiment(folder: Path) -> Path:
    """An experiment whose only trial has started but not reported an epoch yet."""
    trial = folder / "report_epochs_abcde_00000_0_lr=0.1000_2026-01-01_00-00-00"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps({"lr": 0.1, "epochs": 3}))
    (trial / "result.json").write_text("")
    (folder / "search.json").write_text(json.dumps({"fingerprint": FINGERPRINT, "data": None}))
    return folder


def test_export_rejects_no_finished_epoch(tmp_path, capsys):
    experiment = make_empty_experiment(tmp_path / "empty")
    code, out, err = run_cli(export.main, [str(experiment)], capsys)

    assert code == 2
    assert "has no finished epoch yet" in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert not (experiment / "best.json").exists()


def test_export_rejects_non_experiment_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an experiment")
    code, _, err = run_cli(export.main, [str(tmp_path)], capsys)

    assert code == 2
    assert "is not a Ray Tune experiment folder" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "best.json").exists()


def test_export_rejects_missing_folder(tmp_path, capsys):
    code, _, err = run_cli(export.main, [str(tmp_path / "missing")], capsys)

    assert code == 2
    assert "not found" in err


def test_export_rejects_unwritable_out(curves_experiment, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = [str(curves_experiment), "--out", str(blocker / "best.json")]
    code, _, err = run_cli(export.main, argv, capsys)

    assert code == 2
    assert "cannot write" in err
    assert len(err.strip().splitlines()) == 1


def test_show_rejects_non_experiment_folder(tmp_path, capsys):
    code, out, err = run_cli(show.main, [str(tmp_path)], capsys)

    assert code == 2
    assert "is not a Ray Tune experiment folder" in err
    assert not (tmp_path / RESULTS_FILE).exists()


def test_read_experiment_raises_for_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("")

    with pytest.raises(ExperimentError, match="not found"):
        read_experiment(path)


# --- score -------------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("Id,Category\n" + "".join(f"{id_},{category}\n" for id_, category in rows))
    return path


@pytest.fixture()
def answers(tmp_path) -> Path:
    return write_csv(tmp_path / "answers.csv", [(f"img_{i:03d}", str(i % 3)) for i in range(20)])


def test_score_prints_accuracy(answers, tmp_path, capsys):
    rows = [(f"img_{i:03d}", str(i % 3 if i < 15 else 9)) for i in range(20)]
    submission = write_csv(tmp_path / "submission.csv", rows)
    code, out, _ = run_cli(score.main, [str(submission), "--answers", str(answers)], capsys)

    assert code == 0
    assert out.startswith("accuracy 0.75000 (15 of 20")


def test_score_lists_bad_rows(answers, tmp_path, capsys):
    # Ids img_003..img_019 on lines 2..18; img_000..002 missing; img_007 with a word category.
    rows = [(f"img_{i:03d}", "seven" if i == 7 else str(i % 3)) for i in range(3, 20)]
    rows += [("img_005", "2"), ("img_999", "1")]
    submission = write_csv(tmp_path / "submission.csv", rows)
    code, _, err = run_cli(score.main, [str(submission), "--answers", str(answers)], capsys)
    lines = err.splitlines()

    assert code == 2
    assert lines[0].startswith(f"error: submission {submission} is invalid")
    assert "1 Ids appear more than once" in lines
    assert "  line 4: Id 'img_005'" in lines
    assert "  line 19: Id 'img_005'" in lines
    assert "1 rows have an Id that is not a test Id" in lines
    assert "  line 20: Id 'img_999'" in lines
    assert "3 test Ids are missing" in lines
    assert "  Id 'img_000'" in lines
    assert "1 Categories are not integers" in lines
    assert "  line 6: Id 'img_007' has Category 'seven'" in lines
    assert "Traceback" not in err


def test_score_limits_listed_rows(answers, tmp_path, capsys):
    submission = write_csv(tmp_path / "submission.csv", [("img_000", "0")])
    code, _, err = run_cli(score.main, [str(submission), "--answers", str(answers)], capsys)

    assert code == 2
    assert "19 test Ids are missing" in err
    assert "  ... and 9 more" in err


def test_score_rejects_bad_header(answers, tmp_path, capsys):
    submission = tmp_path / "submission.csv"
    submission.write_text("id,label\nimg_000,0\n")
    code, _, err = run_cli(score.main, [str(submission), "--answers", str(answers)], capsys)

    assert code == 2
    assert "must start with the header Id,Category" in err


def test_score_finds_digits_answers(search_cache, tmp_path, capsys):
    from trainable.data import digits_answers_path

    answers = pd.read_csv(digits_answers_path(), dtype=str)
    submission = tmp_path / "submission.csv"
    answers.to_csv(submission, index=False)
    code, out, _ = run_cli(score.main, [str(submission)], capsys)

    assert code == 0
    assert out.startswith(f"accuracy 1.00000 ({len(answers)} of {len(answers)}")


def test_score_needs_answers_for_other_ids(search_cache, tmp_path, capsys):
    submission = write_csv(tmp_path / "submission.csv", [("img_000", "0")])
    code, _, err = run_cli(score.main, [str(submission)], capsys)

    assert code == 2
    assert "pass the test answers with --answers FILE" in err
