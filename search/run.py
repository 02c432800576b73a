"""``python -m search.run --space resnet_family``: search the ResNet family with Ray Tune.

Bad input (options, dataset, space, stage-1 checkpoint) is rejected before Ray starts; requests
no node can satisfy are rejected before any trial starts. At the end the search prints the
leaderboard and ASHA's savings, and writes results.parquet, trials.parquet and best.json.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray

from search import storage
from search.cluster import (
    check_dashboard_exposure,
    check_trial_resources,
    dashboard_sign_in_lines,
    start_or_connect,
)
from search.options import DEFAULT_STORAGE, Budget, SearchOptions, parse_options
from search.tuner import METRIC, MODE, build_tuner, restore_tuner
from spaces import SearchSpace, SpaceContext, all_spaces, get_space
from trainable.checkpoint import load_checkpoint
from trainable.cli import UserError, run_main
from trainable.config import TrainConfig
from trainable.data import Dataset, load_dataset, stratified_split

logger = logging.getLogger(__name__)

# Ray warns when it saves the experiment state often, which it does after every checkpoint that
# num_to_keep prunes; at a few seconds per epoch that is expected here.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

SEARCH_FILE = "search.json"  # what the search was asked to do, written before the first trial


def main(argv: Sequence[str] | None = None) -> int:
    options, list_spaces = parse_options(argv)
    if list_spaces:
        for name, space in sorted(all_spaces().items()):
            print(f"{name:<15} {space.summary}")
        return 0

    space = get_space(options.space)
    storage_root = options.storage_path()
    name = options.experiment_name()
    experiment = storage.join(storage_root, name)
    recorded = _check_experiment_folder(experiment, options)
    if recorded is not None:
        options = _options_from_record(options, recorded)
        space = get_space(recorded["space"])

    # Everything the user gave is checked before Ray starts.
    check_dashboard_exposure(options.dashboard_host, options.allow_unauthenticated)
    context_base, init_from = _resolve_init_from(space, options.init_from)
    dataset = load_dataset(options.data)
    if recorded is not None and recorded["fingerprint"] != dataset.fingerprint:
        raise UserError(
            f"the dataset changed since experiment {experiment} started (fingerprint "
            f"{dataset.fingerprint[:12]} != {recorded['fingerprint'][:12]}); resume it with the "
            "same data, or start a new experiment"
        )
    # Every trial makes this split; a class too small for it would fail each trial after Ray
    # started, so the DataError is raised here instead.
    stratified_split(dataset.labels, options.val_fraction, options.seed)

    started_ray = not ray.is_initialized()
    try:
        cluster = start_or_connect(options.address, options.dashboard_host, options.dashboard_port)
        print(cluster.summary())
        for line in dashboard_sign_in_lines(cluster):
            print(line)
        gpus = options.gpus_per_trial
        if gpus is None:
            gpus = 1.0 if cluster.gpus > 0 else 0.0
        check_trial_resources(cluster, options.cpus_per_trial, gpus)
        budget = options.budget(embedded_digits=options.data is None, has_gpu=cluster.gpus > 0)
        context = SpaceContext(
            max_epochs=budget.max_epochs,
            seed=options.seed,
            val_fraction=options.val_fraction,
            base=context_base,
            init_from=init_from,
        )

        if recorded is None:
            tuner = build_tuner(
                space=space,
                context=context,
                budget=budget,
                dataset=dataset,
                cpus=options.cpus_per_trial,
                gpus=gpus,
                name=name,
                storage=storage_root,
                max_concurrent=options.max_concurrent,
                time_budget=options.time_budget,
                max_failures=options.max_failures,
            )
            _write_record(experiment, options, space, budget, dataset, context_base)
            print(f"experiment {experiment}: space {space.name}, {budget_text(budget, space)}")
        else:
            tuner = restore_tuner(experiment, dataset, options.cpus_per_trial, gpus)
            print(f"resuming experiment {experiment}")
        grid = tuner.fit()
    finally:
        if started_ray and ray.is_initialized():
            ray.shutdown()

    return _finish(experiment, options, budget, len(grid))


def budget_text(budget: Budget, space: SearchSpace) -> str:
    if space.fixed_trials:
        return f"each trial {budget.max_epochs} epochs, no early stopping"
    return (
        f"{budget.samples} trials of at most {budget.max_epochs} epochs, ASHA grace period "
        f"{budget.grace_period}, reduction factor {budget.reduction_factor:g}"
    )


def _finish(experiment: str, options: SearchOptions, budget: Budget, trials: int) -> int:
    """Print the leaderboard, ASHA's savings and how to retrain; write tables and best.json."""
    from results.experiment import read_experiment, write_tables
    from results.export import export_best, write_best
    from results.leaderboard import asha_savings_line, leaderboard_text
    from results.plots import write_plots

    folder = Path(experiment)
    if storage.is_uri(experiment):
        # The tables are built from a local copy of the small files (results, configs, the
        # record); checkpoints stay in the storage.
        folder = storage.copy_results_to_local(experiment, Path(DEFAULT_STORAGE) / folder.name)
        print(f"copied the results of {experiment} to {folder}")
    experiment_data = read_experiment(folder)
    _, trial_table = write_tables(experiment_data)
    plots = write_plots(experiment_data)
    # Counted from the table, not from Tune: a trial whose loss diverged ends without raising,
    # so Tune counts it as finished, and the table shows it as an error.
    errors = int((trial_table["status"] == "error").sum())
    print()
    print(leaderboard_text(trial_table, top=10))
    print(asha_savings_line(trial_table, budget.max_epochs))
    if errors:
        print(f"{errors} trial{'s' if errors != 1 else ''} failed; see trials.parquet")
    best = export_best(folder, by="best")
    best_path = write_best(best, folder / "best.json")
    print(
        f"best trial {best['trial_id']}: {METRIC} {best['metrics'][METRIC]:.4f} at epoch "
        f"{best['epoch']}"
    )
    print(f"wrote {folder / 'results.parquet'}, {folder / 'trials.parquet'} and {best_path}")
    print(f"plots: {', '.join(str(path) for path in plots)}")
    retrain = f"python -m trainable.final --config {shlex.quote(str(best_path))}"
    print(f"retrain the best trial and write submission.csv: {retrain}")
    if trials < budget.samples and not options.final:
        resume = _resume_command(options)
        print(f"{trials} of {budget.samples} trials ran; continue with: {resume}")
    if options.final:
        from trainable import final

        return final.main(["--config", str(best_path)])
    return 0


def _resume_command(options: SearchOptions) -> str:
    arguments = ["--name", options.experiment_name(), "--resume"]
    if options.storage != DEFAULT_STORAGE:
        arguments += ["--storage", options.storage]
    return " ".join(["python -m search.run", *(shlex.quote(part) for part in arguments)])


def _check_experiment_folder(experiment: str, options: SearchOptions) -> dict[str, Any] | None:
    """Return the experiment's record when resuming; reject a resume of a non-experiment."""
    record = storage.join(experiment, SEARCH_FILE)
    if not options.resume:
        if storage.exists(experiment):
            raise UserError(
                f"experiment {experiment} already exists; pass --resume to continue it, "
                "or choose another --name"
            )
        return None
    from ray.tune import Tuner

    if not storage.exists(record) or not Tuner.can_restore(experiment):
        raise UserError(
            f"cannot resume {experiment}: it is not an experiment of this tool "
            f"({SEARCH_FILE} or Ray Tune's state is missing); check --name and --storage"
        )
    try:
        return json.loads(storage.read_text(record))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot resume {experiment}: {record} is unreadable ({err})") from None


def _options_from_record(options: SearchOptions, recorded: dict[str, Any]) -> SearchOptions:
    """Take the data, space, budget and seed of the experiment being resumed."""
    data = recorded.get("data")
    if options.data is not None and data is not None and options.data.resolve() != Path(data):
        raise UserError(
            f"--data {options.data} differs from the experiment's dataset {data}; "
            "resume without --data"
        )
    budget = recorded["budget"]
    values = {
        **options.__dict__,
        "space": recorded["space"],
        "data": Path(data) if data else None,
        "seed": recorded["seed"],
        "val_fraction": recorded["val_fraction"],
        "init_from": recorded.get("init_from"),
        "samples": budget["samples"],
        "max_epochs": budget["max_epochs"],
        "grace_period": budget["grace_period"],
        "reduction_factor": budget["reduction_factor"],
    }
    return SearchOptions(**values)


def _resolve_init_from(space: SearchSpace, init_from: str | None):
    """Return the stage-1 config and checkpoint path for a fine-tune space."""
    if not space.needs_init_from:
        if init_from:
            raise UserError(
                f"--init-from is only for the finetune space, not {space.name!r}; remove it"
            )
        return None, None
    if not init_from:
        raise UserError(
            f"the {space.name} space starts every trial from a stage-1 checkpoint; pass "
            "--init-from CHECKPOINT or --init-from EXPERIMENT (its best trial)"
        )
    path = Path(init_from).expanduser().resolve()
    if path.is_dir():
        from results.export import export_best

        path = Path(export_best(path, by="best")["checkpoint"])
    state = load_checkpoint(path)
    return TrainConfig.from_dict(state["config"]), str(path)


def _write_record(
    experiment: str,
    options: SearchOptions,
    space: SearchSpace,
    budget: Budget,
    dataset: Dataset,
    stage1: TrainConfig | None,
) -> None:
    record = {
        "space": space.name,
        "data": str(options.data.resolve()) if options.data else None,
        "fingerprint": dataset.fingerprint,
        "num_classes": dataset.num_classes,
        "max_epochs": budget.max_epochs,
        "budget": budget.__dict__,
        "seed": options.seed,
        "val_fraction": options.val_fraction,
        "metric": METRIC,
        "mode": MODE,
        "init_from": options.init_from,
        "stage1": stage1.to_dict() if stage1 else None,
        "command": " ".join(shlex.quote(arg) for arg in sys.argv),
    }
    text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
    storage.write_text(storage.join(experiment, SEARCH_FILE), text)


if __name__ == "__main__":
    run_main(main)
