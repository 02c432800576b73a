"""Read a Ray Tune experiment folder, finished or still running, into pandas tables.

Everything comes from files, so no Ray is started and a running search can be read while it
writes. The layout is Ray Tune 2.60's, with one folder per trial. A trial folder contains
``params.json`` (the trial's config) and ``result.json`` (one JSON object per reported epoch,
appended as the trial runs). It also contains ``checkpoint_NNNNNN/checkpoint.pt`` folders, of
which Ray keeps only the newest, and ``error.txt`` when the trial failed. The search adds
``search.json`` at the experiment root.

Two tables come out, both written atomically as Parquet:

- ``results.parquet``: one row per (trial, epoch) with the metrics and the config as
  ``config/<key>`` columns;
- ``trials.parquet``: one row per trial with its status, best and last validation accuracy,
  epochs run, error message and newest checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trainable.atomic import write_atomic
from trainable.cli import UserError

logger = logging.getLogger(__name__)

SEARCH_FILE = "search.json"
RESULTS_FILE = "results.parquet"
TRIALS_FILE = "trials.parquet"
CONFIG_PREFIX = "config/"

METRIC = "val_acc"  # the metric the search maximizes, as search.json records it

# Metrics the trainable reports each epoch, and the Ray Tune keys kept beside them.
EPOCH_METRICS = (
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "epoch_seconds",
    "images_per_second",
)
RAY_FLOAT_KEYS = ("time_this_iter_s", "time_total_s")
RAY_INT_KEYS = ("training_iteration", "timestamp")
# Ray Tune bookkeeping left out of results.parquet: the nested config, per-process details, and
# flags that trials.parquet summarizes. The config columns come from params.json instead.
RAY_DROPPED_KEYS = frozenset(
    {
        "config",
        "trial_id",
        "done",
        "should_checkpoint",
        "date",
        "pid",
        "hostname",
        "node_ip",
        "time_since_restore",
        "iterations_since_restore",
        "experiment_tag",
    }
)

STATUSES = ("completed", "stopped_by_asha", "error", "running")

# A Ray Tune trial folder is named <trainable>_<trial id>_<index>_<params>_<date>. A trial id is
# a hex experiment prefix and a zero-padded counter ("72709_00006"), or, for trials a searcher
# such as OptunaSearch proposes, 8 hex digits ("cd2849e6").
_TRIAL_ID_PATTERN = re.compile(r"_(?P<trial_id>[0-9a-f]{5,}(?:_\d{5})?)_\d+_")
_CHECKPOINT_PATTERN = re.compile(r"checkpoint_(?P<index>\d+)")
_ERROR_FILES = ("error.txt", "error.pkl")


class ExperimentError(UserError):
    """An experiment folder that cannot be read or exported. One line, names the folder."""


@dataclass(frozen=True)
class TrialFolder:
    """Contents of one trial folder, read from its files."""

    trial_id: str
    path: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]  # result.json objects in reporting order
    done: bool  # the last reported row has Ray's done flag and no "error" entry
    error: str | None  # the last row's "error" entry, else the last line of error.txt
    checkpoints: dict[str, Path]  # checkpoint folder name -> its checkpoint.pt, for those kept


@dataclass(frozen=True)
class Experiment:
    """An experiment folder read into tables. ``search`` is search.json, or None without it."""

    path: Path
    search: dict[str, Any] | None
    results: pd.DataFrame
    trials: pd.DataFrame

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def max_epochs(self) -> int | None:
        value = (self.search or {}).get("max_epochs")
        return value if isinstance(value, int) and value > 0 else None


# --- decisions ---------------------------------------------------------------------------------


def trial_status(has_error: bool, done: bool, epochs_run: int, max_epochs: int | None) -> str:
    """Return a trial's status from what its folder shows.

    Ray Tune keeps the status in the experiment state, not in trial folders, so it is derived.
    A last row with Ray's ``done`` flag means the trial ended normally: ``stopped_by_asha`` if it
    ran fewer than ``max_epochs``, else ``completed``. Otherwise an error file means ``error``
    and no error file means ``running``. A trial that failed, was retried by Ray and then
    finished keeps its error.txt but counts as finished.
    """
    if done:
        if max_epochs is not None and epochs_run < max_epochs:
            return "stopped_by_asha"
        return "completed"
    return "error" if has_error else "running"


def best_epoch_row(rows: pd.DataFrame) -> pd.Series | None:
    """Return the row of one trial's best epoch: the highest val_acc, the earliest on a tie.

    Rows without a finite val_acc are ignored; returns None when none is left.
    """
    scored = rows[rows[METRIC].notna()]
    if scored.empty:
        return None
    ordered = scored.sort_values([METRIC, "epoch"], ascending=[False, True], kind="stable")
    return ordered.iloc[0]


def trial_max_epochs(config: dict[str, Any], search: dict[str, Any] | None) -> int | None:
    """Return a trial's epoch budget: its config's ``epochs``, else the search's ``max_epochs``."""
    for value in (config.get("epochs"), (search or {}).get("max_epochs")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


# --- reading files -----------------------------------------------------------------------------


def read_experiment(path: Path | str) -> Experiment:
    """Read an experiment folder into a results table and a trials table (see the module doc).

    Raises ExperimentError when the folder is missing or is not a Ray Tune experiment.
    """
    path = Path(path).expanduser().resolve()
    folders = _trial_folder_paths(path)
    search = read_search_file(path)
    trials = [read_trial_folder(folder) for folder in folders]
    results = results_table([trial for trial in trials if trial is not None])
    table = trials_table([trial for trial in trials if trial is not None], search)
    return Experiment(path, search, results, table)


def read_search_file(path: Path) -> dict[str, Any] | None:
    """Return the experiment's search.json as a dict, or None when the search wrote none."""
    file = path / SEARCH_FILE
    if not file.is_file():
        return None
    try:
        value = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ExperimentError(
            f"{file} cannot be read ({err}); restore it from the search's start or delete it"
        ) from None
    if not isinstance(value, dict):
        raise ExperimentError(f"{file} must contain a JSON object, got {type(value).__name__}")
    return value


def _trial_folder_paths(path: Path) -> list[Path]:
    if not path.is_dir():
        raise ExperimentError(
            f"experiment folder {path} not found; pass the folder the search wrote (runs/NAME)"
        )
    folders = sorted(child for child in path.iterdir() if (child / "params.json").is_file())
    has_state = any(path.glob("experiment_state-*.json"))
    if not folders and not has_state and not (path / SEARCH_FILE).is_file():
        raise ExperimentError(
            f"{path} is not a Ray Tune experiment folder: it has no trial folders with "
            "params.json, no experiment_state-*.json and no search.json; pass the folder "
            "the search wrote (runs/NAME)"
        )
    return folders


def read_trial_folder(folder: Path) -> TrialFolder | None:
    """Read one trial folder; returns None for a folder whose params.json is being written."""
    try:
        config = json.loads((folder / "params.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        logger.warning("skipping trial folder %s: params.json cannot be read (%s)", folder, err)
        return None
    if not isinstance(config, dict):
        logger.warning("skipping trial folder %s: params.json is not a JSON object", folder)
        return None

    rows = _latest_per_epoch(_read_result_rows(folder / "result.json"))
    trial_id = _trial_id(folder, rows)
    checkpoints = {
        child.name: (child / "checkpoint.pt").resolve()
        for child in folder.iterdir()
        if _CHECKPOINT_PATTERN.fullmatch(child.name) and (child / "checkpoint.pt").is_file()
    }
    reported_error = _reported_error(rows)
    return TrialFolder(
        trial_id=trial_id,
        path=folder.resolve(),
        config=config,
        rows=rows,
        done=bool(rows and rows[-1].get("done")) and reported_error is None,
        error=reported_error or _read_error(folder),
        checkpoints=dict(sorted(checkpoints.items())),
    )


def _read_result_rows(file: Path) -> list[dict[str, Any]]:
    """Read result.json's JSON lines; a last line still being appended is skipped."""
    try:
        lines = file.read_text().splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # Ray Tune appends one line per epoch; a running trial may be mid-write
            raise ExperimentError(
                f"{file} line {number} is not valid JSON; the trial's results are damaged"
            ) from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _latest_per_epoch(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the last report of each epoch, in epoch order.

    A trial that Ray restores from a checkpoint after a failure reports the epochs after that
    checkpoint again, and the later report is the one the trial continued from.
    """
    by_epoch: dict[Any, dict[str, Any]] = {}
    for row in rows:
        by_epoch[row.get("epoch", row.get("training_iteration"))] = row
    return [by_epoch[key] for key in sorted(by_epoch, key=lambda key: (key is None, key or 0))]


def _trial_id(folder: Path, rows: list[dict[str, Any]]) -> str:
    if rows and isinstance(rows[0].get("trial_id"), str):
        return rows[0]["trial_id"]
    match = _TRIAL_ID_PATTERN.search(folder.name)
    return match["trial_id"] if match else folder.name


def _reported_error(rows: list[dict[str, Any]]) -> str | None:
    """Return the "error" entry of the last result, which a trial whose loss diverged reports.

    Such a trial ends without raising, so that Ray does not retry it, and has no error.txt.
    """
    error = rows[-1].get("error") if rows else None
    return error[:500] if isinstance(error, str) else None


def _read_error(folder: Path) -> str | None:
    """Return the last line of error.txt (the exception), or a pointer to error.pkl."""
    text_file, pickle_file = (folder / name for name in _ERROR_FILES)
    if text_file.is_file():
        try:
            lines = [line.strip() for line in text_file.read_text(errors="replace").splitlines()]
        except OSError as err:
            return f"error.txt cannot be read ({err.strerror})"
        lines = [line for line in lines if line]
        return lines[-1][:500] if lines else "the trial failed (error.txt is empty)"
    if pickle_file.is_file():
        return "the trial failed; the error is in error.pkl"
    return None


# --- tables ------------------------------------------------------------------------------------


def results_table(trials: list[TrialFolder]) -> pd.DataFrame:
    """Build the one-row-per-(trial, epoch) table; an empty experiment gives zero rows."""
    records = []
    for trial in trials:
        for row in trial.rows:
            record = {
                key: value
                for key, value in row.items()
                if key not in RAY_DROPPED_KEYS and _is_scalar(value)
            }
            record["trial_id"] = trial.trial_id
            record.setdefault("epoch", row.get("training_iteration"))
            record.update({CONFIG_PREFIX + key: value for key, value in trial.config.items()})
            records.append(record)

    frame = pd.DataFrame.from_records(records)
    typed = {
        "trial_id": _column(frame, "trial_id", "string"),
        "epoch": _column(frame, "epoch", "Int64"),
        **{key: _column(frame, key, "float64") for key in EPOCH_METRICS + RAY_FLOAT_KEYS},
        **{key: _column(frame, key, "Int64") for key in RAY_INT_KEYS},
        "checkpoint_dir_name": _column(frame, "checkpoint_dir_name", "string"),
    }
    config_keys = sorted({key for trial in trials for key in trial.config})
    extra = sorted(
        key for key in frame.columns if key not in typed and not key.startswith(CONFIG_PREFIX)
    )
    typed.update({key: _infer_column(frame[key]) for key in extra})
    typed.update(_config_columns(frame, config_keys))
    table = pd.DataFrame(typed, index=frame.index if len(frame) else None)
    return table.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


def trials_table(trials: list[TrialFolder], search: dict[str, Any] | None) -> pd.DataFrame:
    """Build the one-row-per-trial table: status, best and last val_acc, checkpoint, config."""
    records = []
    for trial in trials:
        rows = pd.DataFrame.from_records(trial.rows) if trial.rows else pd.DataFrame()
        epochs_run = len(trial.rows)
        max_epochs = trial_max_epochs(trial.config, search)
        best = None
        last_val_acc = math.nan
        if epochs_run:
            if "epoch" not in rows:
                rows["epoch"] = rows.get("training_iteration")
            rows[METRIC] = pd.to_numeric(rows.get(METRIC), errors="coerce")
            best = best_epoch_row(rows)
            last_val_acc = rows[METRIC].iloc[-1]
        newest = list(trial.checkpoints.values())[-1] if trial.checkpoints else None
        records.append(
            {
                "trial_id": trial.trial_id,
                "status": trial_status(trial.error is not None, trial.done, epochs_run, max_epochs),
                "best_val_acc": best[METRIC] if best is not None else math.nan,
                "best_epoch": best["epoch"] if best is not None else None,
                "last_val_acc": last_val_acc,
                "epochs_run": epochs_run,
                "max_epochs": max_epochs,
                "error": trial.error,
                "checkpoint": str(newest) if newest else None,
                "trial_dir": str(trial.path),
                **{CONFIG_PREFIX + key: value for key, value in trial.config.items()},
            }
        )

    frame = pd.DataFrame.from_records(records)
    typed = {
        "trial_id": _column(frame, "trial_id", "string"),
        "status": _column(frame, "status", "string"),
        "best_val_acc": _column(frame, "best_val_acc", "float64"),
        "best_epoch": _column(frame, "best_epoch", "Int64"),
        "last_val_acc": _column(frame, "last_val_acc", "float64"),
        "epochs_run": _column(frame, "epochs_run", "Int64"),
        "max_epochs": _column(frame, "max_epochs", "Int64"),
        "error": _column(frame, "error", "string"),
        "checkpoint": _column(frame, "checkpoint", "string"),
        "trial_dir": _column(frame, "trial_dir", "string"),
    }
    config_keys = sorted({key for trial in trials for key in trial.config})
    typed.update(_config_columns(frame, config_keys))
    table = pd.DataFrame(typed, index=frame.index if len(frame) else None)
    return table.sort_values("trial_id", kind="stable").reset_index(drop=True)


def config_columns(frame: pd.DataFrame) -> list[str]:
    """Return the ``config/<key>`` columns of a results or trials table."""
    return [column for column in frame.columns if column.startswith(CONFIG_PREFIX)]


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _column(frame: pd.DataFrame, key: str, dtype: str) -> pd.Series:
    if key not in frame:
        return pd.Series([None] * len(frame), dtype=dtype, index=frame.index)
    if dtype in ("Int64", "float64"):
        return pd.to_numeric(frame[key], errors="coerce").astype(dtype)
    return frame[key].astype(dtype)


def _config_columns(frame: pd.DataFrame, keys: list[str]) -> dict[str, pd.Series]:
    return {CONFIG_PREFIX + key: _infer_column(_get(frame, CONFIG_PREFIX + key)) for key in keys}


def _get(frame: pd.DataFrame, key: str) -> pd.Series:
    return frame[key] if key in frame else pd.Series([None] * len(frame), index=frame.index)


def _infer_column(values: pd.Series) -> pd.Series:
    """Type a column from its non-null values, so that Parquet gets one type per column.

    Integers become Int64 (nullable, because conditional hyperparameters are missing in some
    trials), numbers float64, booleans boolean, anything else strings (JSON for mixed values).
    """
    present = [value for value in values if value is not None and not _is_nan(value)]
    if present and all(isinstance(value, bool) for value in present):
        return values.astype("boolean")
    if present and all(isinstance(value, int) and not isinstance(value, bool) for value in present):
        return values.astype("Int64")
    if present and all(
        isinstance(value, (int, float)) and not isinstance(value, bool) for value in present
    ):
        return values.astype("float64")
    if all(isinstance(value, str) for value in present):
        return values.astype("string")
    return values.map(lambda value: None if value is None else json.dumps(value)).astype("string")


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


# --- writing -----------------------------------------------------------------------------------


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """Write a table atomically as Parquet with pyarrow."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_atomic(path, lambda file: pq.write_table(table, file))


def write_tables(experiment: Experiment | Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write results.parquet and trials.parquet into the experiment folder.

    Accepts a read experiment or its folder. Returns the (results, trials) tables written.
    """
    if not isinstance(experiment, Experiment):
        experiment = read_experiment(experiment)
    write_parquet(experiment.path / RESULTS_FILE, experiment.results)
    write_parquet(experiment.path / TRIALS_FILE, experiment.trials)
    return experiment.results, experiment.trials
