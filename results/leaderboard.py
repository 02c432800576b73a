"""Text summaries of a search: the leaderboard of trials and what ASHA's early stopping saved."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from results.experiment import CONFIG_PREFIX

# (config key, column header) of the hyperparameters the leaderboard shows.
LEADERBOARD_KEYS = (
    ("depth", "depth"),
    ("stem", "stem"),
    ("dropout", "dropout"),
    ("batch_size", "batch"),
    ("lr", "lr"),
    ("scheduler", "scheduler"),
    ("augment", "augment"),
)
STATUS_LABELS = {
    "completed": "completed",
    "stopped_by_asha": "ASHA stop",
    "error": "error",
    "running": "running",
}


def rank_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Order trials best first: higher best val_acc, then earlier best epoch, then trial id.

    Trials that have not reported an epoch come last.
    """
    return trials.sort_values(
        ["best_val_acc", "best_epoch", "trial_id"],
        ascending=[False, True, True],
        na_position="last",
        kind="stable",
    ).reset_index(drop=True)


def leaderboard_text(trials: pd.DataFrame, top: int = 10) -> str:
    """Format the ``top`` trials as a fixed-width table, one line per trial, best first."""
    if trials.empty:
        return "no trials yet"
    ranked = rank_trials(trials).head(top)
    header = ["rank", "trial", *(title for _, title in LEADERBOARD_KEYS)]
    header += ["best val_acc", "epoch", "epochs run", "status"]
    lines = [header]
    for rank, record in enumerate(ranked.to_dict("records"), start=1):
        lines.append(
            [
                str(rank),
                str(record["trial_id"]),
                *(_format_value(record.get(CONFIG_PREFIX + key)) for key, _ in LEADERBOARD_KEYS),
                _format_accuracy(record["best_val_acc"]),
                _format_value(record["best_epoch"]),
                _format_value(record["epochs_run"]),
                STATUS_LABELS.get(record["status"], str(record["status"])),
            ]
        )

    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    ]
    text.insert(1, "  ".join("-" * width for width in widths))
    if len(trials) > top:
        text.append(f"({len(trials) - top} more trials not shown)")
    return "\n".join(line.rstrip() for line in text)


def asha_savings_line(trials: pd.DataFrame, max_epochs: int | None = None) -> str:
    """Compare the epochs the trials ran with the epochs they would run at the full budget.

    The full budget of a trial is ``max_epochs`` when given, else its config's ``epochs``.
    Failed trials are left out, because an error, not ASHA, cut them short.
    """
    counted = trials[trials["status"] != "error"]
    if max_epochs is not None:
        budgets = pd.Series(max_epochs, index=counted.index)
    else:
        budgets = _config_epochs(counted)
    budgets = budgets.fillna(counted["epochs_run"])
    epochs_run = int(counted["epochs_run"].sum())
    full_budget = int(budgets.sum())
    if full_budget == 0:
        return "ASHA has not stopped anything yet: no trial has a budget or has run an epoch"

    saved = 1 - epochs_run / full_budget
    line = (
        f"ASHA ran {epochs_run} epochs of the {full_budget} that all {len(counted)} trials "
        f"would take at the full budget ({saved:.0%} saved)"
    )
    notes = []
    failed = len(trials) - len(counted)
    if failed:
        notes.append(f"{failed} failed trial{'s' if failed != 1 else ''} not counted")
    running = int((counted["status"] == "running").sum())
    if running:
        notes.append(f"{running} trial{'s' if running != 1 else ''} still running")
    return line + (f"; {', '.join(notes)}" if notes else "")


def _config_epochs(trials: pd.DataFrame) -> pd.Series:
    column = CONFIG_PREFIX + "epochs"
    if column not in trials:
        return pd.Series(math.nan, index=trials.index, dtype="float64")
    return pd.to_numeric(trials[column], errors="coerce").astype("float64")


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _format_value(value: object) -> str:
    if _is_missing(value):
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _format_accuracy(value: object) -> str:
    return "-" if _is_missing(value) else f"{float(value):.4f}"
