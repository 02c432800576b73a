"""Export the best trial of an experiment as best.json, the input of the final job.

``python -m results.export EXPERIMENT [--by best|last] [--out FILE]``

best.json contains the trial's full config, the epoch and metrics that made it best, its
checkpoint, and the dataset the search ran on (folder and fingerprint), so that
``python -m trainable.final --config best.json`` can retrain it on the same data.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from results.experiment import (
    EPOCH_METRICS,
    METRIC,
    SEARCH_FILE,
    Experiment,
    ExperimentError,
    read_experiment,
)
from trainable.atomic import write_json
from trainable.cli import ArgumentParser, UserError, run_main
from trainable.config import ConfigError, TrainConfig

logger = logging.getLogger(__name__)

BEST_FILE = "best.json"
RULES = ("best", "last")
# Keys of best.json that describe the chosen epoch, besides the epoch metrics.
RAY_METRIC_KEYS = ("training_iteration", "time_total_s")


def candidate_rows(results: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Return the epochs a rule compares: every reported epoch (``best``) or each trial's last.

    Epochs without a val_acc are dropped before the rule applies, and so are the trials that
    reported an "error" entry (their loss diverged), because their config diverges again.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    scored = results[results[METRIC].notna()]
    if "error" in results:
        diverged = results.loc[results["error"].notna(), "trial_id"]
        scored = scored[~scored["trial_id"].isin(diverged)]
    if rule == "last":
        last_epochs = scored.groupby("trial_id")["epoch"].transform("max")
        scored = scored[scored["epoch"] == last_epochs]
    return scored


def pick_best(results: pd.DataFrame, rule: str = "best") -> pd.Series | None:
    """Return the winning (trial, epoch) row under ``rule``, or None when no epoch has val_acc.

    Ties are broken in this order: higher val_acc, then fewer epochs (the same accuracy reached
    sooner), then lower val_loss, then the smaller trial id, so the choice is deterministic.
    """
    candidates = candidate_rows(results, rule)
    if candidates.empty:
        return None
    ordered = candidates.sort_values(
        [METRIC, "epoch", "val_loss", "trial_id"],
        ascending=[False, True, True, True],
        na_position="last",
        kind="stable",
    )
    return ordered.iloc[0]


def best_record(experiment: Experiment, rule: str = "best") -> dict[str, Any]:
    """Return the content of best.json for an experiment under a rule (see ``pick_best``).

    Raises ExperimentError when no trial has finished an epoch, when search.json is missing,
    or when the winning trial's config is not a valid TrainConfig.
    """
    search = experiment.search
    if search is None:
        raise ExperimentError(
            f"{experiment.path / SEARCH_FILE} not found: the export needs the dataset "
            "fingerprint that the search records there; export an experiment started by "
            "python -m search.run"
        )
    row = pick_best(experiment.results, rule)
    if row is None:
        raise ExperimentError(
            f"experiment {experiment.path} has no finished epoch yet; wait until a trial "
            "reports its first epoch, then export again"
        )

    trial = experiment.trials[experiment.trials["trial_id"] == row["trial_id"]].iloc[0]
    config = _trial_config(trial, row["trial_id"])
    checkpoint, checkpoint_epoch = _checkpoint_for(experiment, row)
    metrics = {key: _plain(row[key]) for key in (*EPOCH_METRICS, *RAY_METRIC_KEYS) if key in row}
    return {
        "config": config,
        "trial_id": str(row["trial_id"]),
        "rule": rule,
        "epoch": int(row["epoch"]),
        "metrics": {key: value for key, value in metrics.items() if value is not None},
        "checkpoint": checkpoint,
        "checkpoint_epoch": checkpoint_epoch,
        "status": str(trial["status"]),
        "fingerprint": search.get("fingerprint"),
        "data": search.get("data"),
        "num_classes": search.get("num_classes"),
        "experiment": str(experiment.path),
        "stage1": search.get("stage1"),
    }


def export_best(experiment: Path | str, by: str = "best") -> dict[str, Any]:
    """Read an experiment folder and return its best.json record under rule ``by``.

    Raises ExperimentError as ``best_record`` does. ``write_best`` writes the record.
    """
    return best_record(read_experiment(experiment), by)


def write_best(record: dict[str, Any], path: Path | str) -> Path:
    """Write a best.json record atomically and return its path."""
    path = Path(path)
    write_json(path, record)
    return path


def _trial_config(trial: pd.Series, trial_id: str) -> dict[str, Any]:
    """Return the trial's params.json as a complete, validated TrainConfig dict."""
    path = Path(str(trial["trial_dir"])) / "params.json"
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ExperimentError(f"trial {trial_id}: {path} cannot be read ({err})") from None
    try:
        return TrainConfig.from_dict(values).to_dict()
    except ConfigError as err:
        raise ExperimentError(f"trial {trial_id} has an invalid config in {path}: {err}") from None


def _checkpoint_for(experiment: Experiment, row: pd.Series) -> tuple[str | None, int | None]:
    """Return the checkpoint of the chosen epoch if Ray kept it, else the trial's newest one.

    Ray keeps only the newest checkpoints of a trial, so a best epoch early in a long trial
    usually has none left. Returns (path, epoch it was saved at) or (None, None).
    """
    rows = experiment.results[experiment.results["trial_id"] == row["trial_id"]]
    trial = experiment.trials[experiment.trials["trial_id"] == row["trial_id"]].iloc[0]
    folder = Path(str(trial["trial_dir"]))
    kept = []
    for epoch, name in zip(rows["epoch"], rows["checkpoint_dir_name"], strict=True):
        if not _missing(name) and (folder / str(name) / "checkpoint.pt").is_file():
            kept.append((int(epoch), folder / str(name) / "checkpoint.pt"))
    if not kept:
        return None, None
    chosen = [item for item in kept if item[0] == int(row["epoch"])]
    epoch, path = chosen[0] if chosen else max(kept)
    if not chosen:
        logger.warning(
            "trial %s has no checkpoint of epoch %d left (Ray kept the newest ones); "
            "best.json points to the checkpoint of epoch %d",
            row["trial_id"],
            int(row["epoch"]),
            epoch,
        )
    return str(path), epoch


def _plain(value: Any) -> Any:
    if _missing(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m results.export",
        description="Write the best trial of an experiment as best.json for the final job.",
    )
    parser.add_argument("experiment", type=Path, help="the experiment folder (runs/NAME)")
    parser.add_argument(
        "--by",
        choices=RULES,
        default="best",
        help="best: each trial's best epoch competes; last: each trial's last epoch "
        "competes (default: best)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help=f"where to write the record (default: EXPERIMENT/{BEST_FILE})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or args.experiment / BEST_FILE
    record = export_best(args.experiment, args.by)
    try:
        write_best(record, out)
    except OSError as err:
        raise UserError(f"cannot write {out}: {err.strerror}; choose another --out") from None
    metrics = record["metrics"]
    print(
        f"trial {record['trial_id']} epoch {record['epoch']} ({args.by} rule): "
        f"val_acc {metrics.get('val_acc', math.nan):.4f}, val_loss "
        f"{metrics.get('val_loss', math.nan):.4f}; checkpoint {record['checkpoint']}"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_main(main)
