"""PNG plots of an experiment: learning curves, trials left at each epoch, param importance.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, so no display and
no global backend state) and written atomically into ``EXPERIMENT/plots/``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from results.experiment import CONFIG_PREFIX, Experiment
from results.leaderboard import rank_trials
from trainable.atomic import write_atomic

logger = logging.getLogger(__name__)

PLOTS_FOLDER = "plots"
HIGHLIGHTED_TRIALS = 5
# Config keys that are not hyperparameters: a warm-start path and the random seed.
NOT_HYPERPARAMETERS = frozenset({"init_from", "seed"})
# A positive numeric hyperparameter spanning at least this ratio gets a log-scale distribution,
# the way search spaces sample learning rate and weight decay.
LOG_SCALE_RATIO = 100
FINISHED_STATUSES = ("completed", "stopped_by_asha")


def write_plots(experiment: Experiment, folder: Path | None = None) -> list[Path]:
    """Write learning_curves.png, asha_rungs.png and param_importance.png; return their paths."""
    folder = folder or experiment.path / PLOTS_FOLDER
    figures = {
        "learning_curves.png": learning_curves_figure(experiment),
        "asha_rungs.png": asha_rungs_figure(experiment),
        "param_importance.png": param_importance_figure(experiment),
    }
    paths = []
    for name, figure in figures.items():
        path = folder / name
        write_atomic(path, lambda file, figure=figure: figure.savefig(file, format="png", dpi=110))
        paths.append(path)
    return paths


def learning_curves_figure(experiment: Experiment) -> Figure:
    """Plot val_acc and train_loss per epoch: the top trials in color and labeled, others faint."""
    figure = Figure(figsize=(12, 4.8), layout="constrained")
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    results = experiment.results
    ranked = rank_trials(experiment.trials)
    top = list(ranked["trial_id"].head(HIGHLIGHTED_TRIALS)) if len(ranked) else []

    for trial_id, rows in results.groupby("trial_id", sort=True):
        if trial_id in top:
            continue
        for axes, column in ((accuracy_axes, "val_acc"), (loss_axes, "train_loss")):
            axes.plot(rows["epoch"], rows[column], color="0.6", alpha=0.35, linewidth=0.8)
    for rank, trial_id in enumerate(top, start=1):
        rows = results[results["trial_id"] == trial_id]
        label = f"#{rank} {trial_id}"
        for axes, column in ((accuracy_axes, "val_acc"), (loss_axes, "train_loss")):
            axes.plot(rows["epoch"], rows[column], marker=".", linewidth=1.6, label=label)

    accuracy_axes.set(title="validation accuracy", xlabel="epoch", ylabel="val_acc")
    loss_axes.set(title="training loss", xlabel="epoch", ylabel="train_loss")
    for axes in (accuracy_axes, loss_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if top and not results.empty:
        accuracy_axes.legend(fontsize="small", title=f"top {len(top)} by best val_acc")
    else:
        _note(accuracy_axes, "no trial has reported an epoch yet")
    figure.suptitle(f"{experiment.name}: {experiment.trials.shape[0]} trials")
    return figure


def trials_per_epoch(trials: pd.DataFrame, max_epochs: int | None = None) -> pd.Series:
    """Return how many trials reached each epoch 1..max (the survivors of ASHA's rungs)."""
    reached = trials["epochs_run"].dropna().astype(int)
    last = max([max_epochs or 0, *reached])
    epochs = range(1, last + 1)
    return pd.Series([int((reached >= epoch).sum()) for epoch in epochs], index=epochs)


def asha_rungs_figure(experiment: Experiment) -> Figure:
    """Plot the number of trials still training at each epoch, with ASHA's rungs if known."""
    figure = Figure(figsize=(8, 4.8), layout="constrained")
    axes = figure.subplots()
    counts = trials_per_epoch(experiment.trials, experiment.max_epochs)
    if counts.empty:
        _note(axes, "no trial has reported an epoch yet")
    else:
        axes.bar(counts.index, counts.to_numpy(), color="tab:blue", alpha=0.8)
        for milestone in asha_milestones(experiment.search, counts.index[-1]):
            axes.axvline(milestone + 0.5, color="tab:red", linestyle="--", linewidth=1)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(
        title="trials still training at each epoch (red: ASHA rungs)",
        xlabel="epoch",
        ylabel="trials",
    )
    return figure


def asha_milestones(search: dict[str, Any] | None, max_t: int) -> list[int]:
    """Return ASHA's rung epochs, grace_period * reduction_factor**k below max_t.

    The search records them in search.json's ``budget``. Returns an empty list without them.
    """
    budget = (search or {}).get("budget") or {}
    grace, factor = budget.get("grace_period"), budget.get("reduction_factor")
    if not isinstance(grace, (int, float)) or not isinstance(factor, (int, float)):
        return []
    if grace <= 0 or factor <= 1:
        return []
    milestones = []
    milestone = grace
    while milestone < max_t:
        milestones.append(int(milestone))
        milestone *= factor
    return milestones


def param_importance_figure(experiment: Experiment) -> Figure:
    """Plot Optuna's fANOVA importance of each varying hyperparameter for best val_acc."""
    figure = Figure(figsize=(8, 4.8), layout="constrained")
    axes = figure.subplots()
    axes.set(title="hyperparameter importance for best val_acc (Optuna, fANOVA)")
    finished = experiment.trials[
        experiment.trials["status"].isin(FINISHED_STATUSES)
        & experiment.trials["best_val_acc"].notna()
    ]
    if len(finished) < 2:
        _note(axes, f"needs at least 2 finished trials, found {len(finished)}")
        return figure

    study = importance_study(finished)
    if not study.trials or not study.trials[0].params:
        _note(axes, "no hyperparameter varies across the finished trials")
        return figure
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        # fANOVA fails on degenerate data, e.g. every trial with the same best val_acc.
        logger.warning("param importance not computed: %s", err)
        _note(axes, f"importance could not be computed: {err}")
        return figure
    if not importances:
        _note(axes, "no hyperparameter is present in every finished trial")
        return figure

    names = list(importances)[::-1]  # the most important at the top
    axes.barh(names, [importances[name] for name in names], color="tab:green")
    axes.set(xlabel="share of the variance of best val_acc")
    # NOTE: trials stopped by ASHA are scored by the best val_acc they reached before stopping,
    # which favors hyperparameters that learn fast over those that finish best.
    axes.text(
        0.99,
        0.01,
        f"{len(finished)} finished trials, ASHA-stopped ones included",
        transform=axes.transAxes,
        ha="right",
        va="bottom",
        fontsize="small",
        color="0.4",
    )
    return figure


def importance_study(finished: pd.DataFrame) -> optuna.Study:
    """Build an in-memory Optuna study with one completed trial per finished Tune trial.

    Only hyperparameters with at least two distinct values are included, each with one
    distribution over the values seen, so that Optuna treats them as one search space.
    """
    distributions = {}
    for column in finished.columns:
        key = column.removeprefix(CONFIG_PREFIX)
        if not column.startswith(CONFIG_PREFIX) or key in NOT_HYPERPARAMETERS:
            continue
        distribution = _distribution(finished[column].dropna().tolist())
        if distribution is not None:
            distributions[key] = distribution

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    for record in finished.to_dict("records"):
        params = {
            key: _plain(record[CONFIG_PREFIX + key])
            for key in distributions
            if not _missing(record[CONFIG_PREFIX + key])
        }
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={key: distributions[key] for key in params},
                value=float(record["best_val_acc"]),
            )
        )
    return study


def _distribution(values: list[Any]) -> optuna.distributions.BaseDistribution | None:
    values = [_plain(value) for value in values]
    if len(set(values)) < 2:
        return None
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        low, high = min(values), max(values)
        log = low > 0 and high / low >= LOG_SCALE_RATIO
        if all(isinstance(value, int) for value in values):
            return optuna.distributions.IntDistribution(low, high, log=log)
        return optuna.distributions.FloatDistribution(float(low), float(high), log=log)
    return optuna.distributions.CategoricalDistribution(sorted(set(values), key=str))


def _plain(value: Any) -> Any:
    """Convert numpy and pandas scalars to Python ones, which Optuna distributions expect."""
    return value.item() if hasattr(value, "item") else value


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _note(axes, text: str) -> None:
    axes.text(0.5, 0.5, text, transform=axes.transAxes, ha="center", va="center", wrap=True)
