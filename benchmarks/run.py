"""Run the benchmarks, print a table, write BENCHMARKS.md and print one JSON line last.

``python benchmarks/run.py [--quick] [--only NAME ...] [--work-dir DIR] [--output FILE]``

A run with --only writes BENCHMARKS.md only when --output names a file, so that a partial run
does not replace the full page.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

# Run as a script: make the repository importable here and in the processes this run starts
# (spawned pools and Ray workers inherit the environment).
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(
    part for part in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if part
)

from benchmarks import asha, loader, memory, ray_overhead, step  # noqa: E402
from benchmarks.common import (  # noqa: E402
    DEFAULT_WORK_DIR,
    LoadRecorder,
    Outcome,
    Settings,
    json_line,
    machine_facts,
    write_text_atomic,
)
from benchmarks.report import markdown, text_table  # noqa: E402

logger = logging.getLogger("benchmarks")

MEASUREMENTS = {
    "loader": loader,
    "step": step,
    "ray_overhead": ray_overhead,
    "asha": asha,
    "memory": memory,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Measure the data path, the training step, Ray Tune's overhead, ASHA's "
        "savings and trial memory against their targets.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller runs (about 15 minutes on 2 idle cores): fewer trials and images",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(MEASUREMENTS),
        metavar="NAME",
        help=f"run only these measurements: {', '.join(MEASUREMENTS)}",
    )
    parser.add_argument(
        "--repetitions", type=int, default=3, help="repetitions of each timing (at least 3)"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        help="folder for generated datasets, caches and Ray results, reused across runs",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="markdown report to write (default: BENCHMARKS.md in the repository, "
        "for a run of every measurement)",
    )
    args = parser.parse_args(argv)
    if args.repetitions < 3:
        parser.error(f"--repetitions must be at least 3, got {args.repetitions}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(quick=args.quick, work_dir=args.work_dir, repetitions=args.repetitions)
    names = args.only or list(MEASUREMENTS)
    output = args.output
    if output is None and not args.only:
        output = REPO_ROOT / "BENCHMARKS.md"

    load = LoadRecorder()
    started = time.perf_counter()
    outcomes, failed = [], []
    for name in names:
        logger.info("%s: starting (load average %.1f)", name, load.sample())
        measured_at = time.perf_counter()
        try:
            outcome = MEASUREMENTS[name].measure(settings)
        except Exception as err:  # one failed measurement must not lose the others
            logger.exception("%s: failed", name)
            outcome = Outcome(name, f"{name} (failed)", method=f"The measurement failed: {err!r}")
            failed.append(name)
        outcome.seconds = time.perf_counter() - measured_at
        outcomes.append(outcome)
        logger.info("%s: done in %.0f s (load average %.1f)", name, outcome.seconds, load.sample())
    total_seconds = time.perf_counter() - started

    keys = {key: value for outcome in outcomes for key, value in outcome.keys.items()}
    keys["load_average"] = load.samples and sorted(load.samples)[len(load.samples) // 2]
    keys["seconds"] = round(total_seconds)
    if failed:
        keys["failed"] = failed
    line = json_line(keys)

    print()
    print(text_table(outcomes))
    print(f"load average (1 min): {load.summary()}; {total_seconds / 60:.1f} minutes")
    if output is not None:
        command = "python benchmarks/run.py " + " ".join(
            shlex.quote(arg) for arg in (argv if argv is not None else sys.argv[1:])
        )
        text = markdown(
            outcomes,
            command.strip(),
            machine_facts(),
            load.summary(),
            keys,
            total_seconds,
            line,
        )
        write_text_atomic(output, text)
        print(f"wrote {output}")
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
