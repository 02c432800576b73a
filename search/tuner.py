"""The Ray Tune experiment: OptunaSearch (seeded TPE) proposes configs, ASHA stops weak trials."""

from __future__ import annotations

import json
import logging
from pathlib import PurePosixPath
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from search.options import Budget
from search.progress import EpochLines
from spaces import SearchSpace, SpaceContext
from trainable.data import Dataset
from trainable.trial import train_trial

logger = logging.getLogger(__name__)

METRIC = "val_acc"
MODE = "max"
TIME_ATTR = "epoch"  # one reported training iteration is one epoch
RESULT_FILE = "result.json"  # Ray Tune's per-trial JSON lines, one object per reported epoch


def tpe_startup_trials(samples: int) -> int:
    """Return how many random trials TPE runs before it models the results.

    Optuna's default is 10, which would leave a 10-trial search without any TPE proposal.
    """
    return min(10, max(3, samples // 4))


def build_searcher(space: SearchSpace, context: SpaceContext, samples: int) -> OptunaSearch:
    sampler = optuna.samplers.TPESampler(
        seed=context.seed,
        multivariate=True,
        group=True,  # conditional parameters (plateau_*, randaugment_*, erasing_*) form groups
        n_startup_trials=tpe_startup_trials(samples),
    )
    return OptunaSearch(
        space=space.define(context),
        metric=METRIC,
        mode=MODE,
        sampler=sampler,
        points_to_evaluate=space.initial_points(context),
    )


class ResumableASHA(ASHAScheduler):
    """ASHA whose rungs survive ``Tuner.restore``: a restored trial's results are recorded again.

    Ray Tune 2.60 saves the searcher's state with the experiment but not the scheduler's.
    ``Tuner.restore`` unpickles the scheduler from tuner.pkl, written before the first trial, so
    its rungs would start empty and the first trials to reach a rung after a resume would never
    be stopped. When Tune adds a restored trial, this scheduler reads the trial's result.json
    and records each milestone's result, as ASHA did when the result first arrived.
    """

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        results = _reported_results(trial)
        if not results:
            return  # a new trial
        bracket = self._trial_info[trial.trial_id]
        epochs = []
        for result in results:
            if result.get(self._time_attr) is None or result.get(self._metric) is None:
                continue
            epochs.append(result[self._time_attr])
            bracket.on_result(
                trial, result[self._time_attr], self._metric_op * result[self._metric]
            )
        recorded = [milestone for milestone, values in bracket._rungs if trial.trial_id in values]
        logger.info(
            "ASHA: trial %s restored with %d reported epochs; rung results recorded at epochs %s",
            trial.trial_id,
            len(epochs),
            ", ".join(f"{milestone:g}" for milestone in sorted(recorded)) or "none",
        )


def _reported_results(trial) -> list[dict[str, Any]]:
    """Return the results in a trial's result.json on the experiment storage, in report order.

    The list is empty for a trial that never reported or whose file cannot be read. A last line
    cut off by an interrupted write is skipped.
    """
    if trial.storage is None or trial.storage.trial_dir_name is None:
        return []
    path = str(PurePosixPath(trial.path, RESULT_FILE))
    try:
        with trial.storage.storage_filesystem.open_input_stream(path) as stream:
            text = stream.readall().decode(errors="replace")
    except (FileNotFoundError, OSError):
        return []
    results = []
    for line in text.splitlines():
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(result, dict):
            results.append(result)
    return results


def build_scheduler(space: SearchSpace, budget: Budget) -> TrialScheduler:
    if space.fixed_trials:
        return FIFOScheduler()  # fixed trials are compared at the same budget
    return ResumableASHA(
        time_attr=TIME_ATTR,
        max_t=budget.max_epochs,
        grace_period=budget.grace_period,
        reduction_factor=budget.reduction_factor,
    )


def build_trainable(dataset: Dataset, cpus: float, gpus: float):
    """Wrap the trial function with its resources and the dataset, put once in the object store."""
    with_data = tune.with_parameters(
        train_trial,
        images=dataset.images,
        labels=dataset.labels,
        num_classes=dataset.num_classes,
    )
    return tune.with_resources(with_data, {"cpu": cpus, "gpu": gpus})


def run_config(name: str, storage: str, max_failures: int, max_epochs: int) -> tune.RunConfig:
    return tune.RunConfig(
        name=name,
        storage_path=storage,
        # Ray 2.60's checkpoint manager keeps the newest checkpoint besides the best one, so a
        # resume starts after the last reported epoch.
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order=MODE
        ),
        failure_config=tune.FailureConfig(max_failures=max_failures),
        # Ray's own reporter prints a table per trial; EpochLines prints one line per epoch.
        verbose=0,
        callbacks=[EpochLines(max_epochs)],
    )


def build_tuner(
    *,
    space: SearchSpace,
    context: SpaceContext,
    budget: Budget,
    dataset: Dataset,
    cpus: float,
    gpus: float,
    name: str,
    storage: str,
    max_concurrent: int | None,
    time_budget: float | None,
    max_failures: int,
) -> tune.Tuner:
    samples = len(space.initial_points(context)) if space.fixed_trials else budget.samples
    return tune.Tuner(
        build_trainable(dataset, cpus, gpus),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=build_searcher(space, context, samples),
            scheduler=build_scheduler(space, budget),
            num_samples=samples,
            max_concurrent_trials=max_concurrent,
            time_budget_s=time_budget,
        ),
        run_config=run_config(name, storage, max_failures, budget.max_epochs),
    )


def restore_tuner(path: str, dataset: Dataset, cpus: float, gpus: float) -> tune.Tuner:
    """Continue an experiment: finished trials stay, searcher and scheduler state are restored.

    NOTE: a SIGKILL while Ray Tune uploads its experiment state can leave that state torn (the
    trial list newer than the searcher's state), and Ray restores it as it finds it, so the
    resumed search may run one trial more or fewer. RELIABILITY.md describes the cases seen.
    """
    return tune.Tuner.restore(
        path,
        trainable=build_trainable(dataset, cpus, gpus),
        resume_unfinished=True,
        resume_errored=True,
    )
