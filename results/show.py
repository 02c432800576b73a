"""Print an experiment's leaderboard and rewrite its tables and plots.

``python -m results.show EXPERIMENT [--top N]`` works on a finished or a running search. It
writes results.parquet and trials.parquet into EXPERIMENT and the plots into EXPERIMENT/plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from results.experiment import RESULTS_FILE, TRIALS_FILE, read_experiment, write_tables
from results.leaderboard import asha_savings_line, leaderboard_text
from results.plots import write_plots
from trainable.cli import ArgumentParser, UserError, run_main


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m results.show",
        description="Print the leaderboard of an experiment and rewrite its tables and plots.",
    )
    parser.add_argument("experiment", type=Path, help="the experiment folder (runs/NAME)")
    parser.add_argument(
        "--top", type=int, default=10, metavar="N", help="trials in the leaderboard (default: 10)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.top < 1:
        raise UserError(f"--top {args.top} is invalid; pass a positive number of trials")
    experiment = read_experiment(args.experiment)

    print(leaderboard_text(experiment.trials, top=args.top))
    print()
    print(asha_savings_line(experiment.trials, experiment.max_epochs))

    try:
        write_tables(experiment)
        plots = write_plots(experiment)
    except OSError as err:
        raise UserError(
            f"cannot write into {experiment.path}: {err.strerror}; make the folder writable"
        ) from None
    tables = [experiment.path / RESULTS_FILE, experiment.path / TRIALS_FILE]
    print(f"wrote {', '.join(str(path) for path in (*tables, *plots))}")
    return 0


if __name__ == "__main__":
    run_main(main)
