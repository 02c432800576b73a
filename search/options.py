"""Command-line options of ``python -m search.run``, validated into one typed value."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trainable.cli import ArgumentParser, UserError

DEFAULT_STORAGE = "runs"
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Budget:
    """How much to search: trials, epochs per trial and ASHA's rungs."""

    samples: int
    max_epochs: int
    grace_period: int
    reduction_factor: float


# The embedded digits on a CPU: about 5-10 s per ResNet18 epoch on 2 cores, so 10 trials of at
# most 6 epochs, two at a time, finish in about 5 minutes with ASHA stopping the weak ones.
DIGITS_CPU_BUDGET = Budget(samples=10, max_epochs=6, grace_period=1, reduction_factor=3)
# A real dataset or a GPU: the user scales it with --samples and --max-epochs.
DEFAULT_BUDGET = Budget(samples=32, max_epochs=30, grace_period=3, reduction_factor=3)


@dataclass(frozen=True)
class SearchOptions:
    space: str
    data: Path | None
    samples: int | None
    max_epochs: int | None
    grace_period: int | None
    reduction_factor: float | None
    max_concurrent: int | None
    time_budget: float | None
    seed: int
    val_fraction: float
    name: str | None
    storage: str
    resume: bool
    address: str | None
    cpus_per_trial: float
    gpus_per_trial: float | None
    max_failures: int
    init_from: str | None
    dashboard_host: str
    dashboard_port: int
    allow_unauthenticated: bool
    final: bool

    def budget(self, embedded_digits: bool, has_gpu: bool) -> Budget:
        """Fill the options the user left out from the default budget for this data and device."""
        base = DIGITS_CPU_BUDGET if embedded_digits and not has_gpu else DEFAULT_BUDGET
        max_epochs = self.max_epochs or base.max_epochs
        return Budget(
            samples=self.samples or base.samples,
            max_epochs=max_epochs,
            grace_period=min(self.grace_period or base.grace_period, max_epochs),
            reduction_factor=self.reduction_factor or base.reduction_factor,
        )

    def experiment_name(self) -> str:
        return self.name or f"{self.space}-{time.strftime('%Y%m%d-%H%M%S')}"

    def storage_path(self) -> str:
        """Return the storage as Ray Tune expects it: a URI as given, a local path made absolute."""
        if _URI.match(self.storage):
            return self.storage
        return str(Path(self.storage).expanduser().resolve())


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m search.run",
        description="Search the ResNet family with Ray Tune: Optuna TPE proposes configs, "
        "ASHA stops weak trials early. Without --data it runs on the embedded digits.",
    )
    what = parser.add_argument_group("what to search")
    what.add_argument(
        "--space", default="resnet_family", help="search space name (default: resnet_family)"
    )
    what.add_argument("--list-spaces", action="store_true", help="list the spaces and exit")
    what.add_argument(
        "--data", type=Path, metavar="DIR",
        help="dataset folder with labels.csv, trainval/ and test/ (default: the embedded digits)",
    )  # fmt: skip
    what.add_argument(
        "--init-from", metavar="CHECKPOINT|EXPERIMENT",
        help="finetune space: a stage-1 checkpoint file, or an experiment folder whose best "
        "trial's checkpoint is used",
    )  # fmt: skip

    budget = parser.add_argument_group("budget")
    budget.add_argument(
        "--samples", type=int, metavar="N",
        help="number of trials (default: 10 on the digits on a CPU, else 32)",
    )  # fmt: skip
    budget.add_argument(
        "--max-epochs", type=int, metavar="N",
        help="epochs of a trial that ASHA never stops, ASHA's max_t (default: 6 on the digits "
        "on a CPU, else 30)",
    )  # fmt: skip
    budget.add_argument(
        "--grace-period", type=int, metavar="EPOCHS",
        help="epochs every trial runs before ASHA may stop it (default: 1 on the digits on a "
        "CPU, else 3)",
    )  # fmt: skip
    budget.add_argument(
        "--reduction-factor", type=float, metavar="ETA",
        help="ASHA keeps the top 1/ETA of trials at each rung (default: 3)",
    )  # fmt: skip
    budget.add_argument(
        "--max-concurrent", type=int, metavar="N",
        help="trials at once (default: as many as the resources allow)",
    )  # fmt: skip
    budget.add_argument(
        "--time-budget", type=float, metavar="SECONDS",
        help="stop starting and running trials after this many seconds",
    )  # fmt: skip
    budget.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the TPE sampler and of every trial's split, init and augmentation (default: 0)",
    )
    budget.add_argument(
        "--val-fraction", type=float, default=0.1, metavar="FRACTION",
        help="share of trainval held out for validation, stratified by class, the same split "
        "for every trial (default: 0.1; the report used 0.01 on 100,000 images)",
    )  # fmt: skip

    where = parser.add_argument_group("experiment and cluster")
    where.add_argument(
        "--name", help="experiment name (default: SPACE-DATE-TIME); --resume needs it"
    )
    where.add_argument(
        "--storage", default=DEFAULT_STORAGE,
        help="experiment storage: a local path (absolute or relative) or a URI such as "
        "s3://bucket/prefix; several nodes need a shared path or a URI (default: runs)",
    )  # fmt: skip
    where.add_argument(
        "--resume", action="store_true",
        help="continue the interrupted experiment --name in --storage",
    )  # fmt: skip
    where.add_argument(
        "--address", metavar="auto|HOST:PORT",
        help="join a running Ray cluster (started with 'ray start --head') instead of "
        "starting a local one",
    )  # fmt: skip
    where.add_argument(
        "--cpus-per-trial",
        type=float,
        default=1.0,
        metavar="N",
        help="CPUs reserved per trial (default: 1)",
    )
    where.add_argument(
        "--gpus-per-trial", type=float, metavar="N",
        help="GPUs reserved per trial; fractions share a GPU (0.25 runs four trials on one) "
        "(default: 1 if the cluster has GPUs, else 0)",
    )  # fmt: skip
    where.add_argument(
        "--max-failures", type=int, default=2, metavar="N",
        help="times a failed trial is restarted from its last checkpoint (default: 2)",
    )  # fmt: skip
    where.add_argument(
        "--dashboard-host", default="127.0.0.1",
        help="address the local Ray dashboard binds to; anything but loopback exposes it "
        "(default: 127.0.0.1)",
    )  # fmt: skip
    where.add_argument(
        "--dashboard-port",
        type=int,
        default=8265,
        help="port of the local Ray dashboard (default: 8265)",
    )
    where.add_argument(
        "--allow-unauthenticated", action="store_true",
        help="allow a dashboard beyond loopback while Ray's token authentication is off",
    )  # fmt: skip
    parser.add_argument(
        "--final", action="store_true",
        help="after the search, retrain the best trial and write submission.csv",
    )  # fmt: skip
    return parser


def parse_options(argv: Sequence[str] | None = None) -> tuple[SearchOptions, bool]:
    """Parse and check the options; return them and whether --list-spaces was given."""
    args = build_parser().parse_args(argv)
    options = SearchOptions(
        **{key: value for key, value in vars(args).items() if key != "list_spaces"}
    )
    check_options(options)
    return options, args.list_spaces


def check_options(options: SearchOptions) -> None:
    """Raise UserError for values no search can run with, before anything starts."""
    positive = {
        "--samples": options.samples,
        "--max-epochs": options.max_epochs,
        "--grace-period": options.grace_period,
        "--max-concurrent": options.max_concurrent,
    }
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise UserError(f"{flag} {value} is invalid; pass a whole number of at least 1")
    if options.reduction_factor is not None and not options.reduction_factor > 1:
        raise UserError(
            f"--reduction-factor {options.reduction_factor} is invalid; it must be above 1 "
            "(ASHA keeps 1/ETA of the trials at each rung)"
        )
    if options.time_budget is not None and not options.time_budget > 0:
        raise UserError(f"--time-budget {options.time_budget} is invalid; pass seconds above 0")
    if not (options.cpus_per_trial > 0 and math.isfinite(options.cpus_per_trial)):
        raise UserError(
            f"--cpus-per-trial {options.cpus_per_trial} is invalid; pass a number above 0"
        )
    gpus = options.gpus_per_trial
    if gpus is not None and (gpus < 0 or (gpus > 1 and not float(gpus).is_integer())):
        raise UserError(
            f"--gpus-per-trial {gpus} is invalid; use a fraction in (0, 1] to share a GPU, "
            "or a whole number"
        )
    if not 0 < options.val_fraction < 1:
        raise UserError(
            f"--val-fraction {options.val_fraction} is invalid; pass a number in (0, 1)"
        )
    if options.max_failures < 0:
        raise UserError(f"--max-failures {options.max_failures} is invalid; pass 0 or more")
    if options.name is not None and not _NAME.match(options.name):
        raise UserError(
            f"--name {options.name!r} is invalid; use letters, digits, '.', '_' and '-'"
        )
    if options.resume and options.name is None:
        raise UserError("--resume needs the --name of the experiment to continue")
    if not 0 < options.dashboard_port < 65536:
        raise UserError(f"--dashboard-port {options.dashboard_port} is invalid; pass 1-65535")
