"""Faults a search survives, against a real local Ray.

A killed trial worker, a driver interrupted with SIGINT or killed with SIGKILL and then resumed,
a trial whose loss diverges, a corrupt checkpoint, an interrupted file write and the dashboard
exposure check. Searches run as subprocesses, as a user runs them, each with its own Ray, on a
generated 3-class dataset of 8x8 images. The diverging trial and the corrupt checkpoint run
through ``tune.Tuner`` in this process, with the search's own trainable, scheduler and run
config, because no search space proposes a learning rate that diverges.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import psutil
import pytest
from PIL import Image
from ray import tune

from results.experiment import read_experiment
from results.export import pick_best
from search.cluster import authentication_disabled, check_dashboard_exposure
from search.options import Budget
from search.tuner import METRIC, MODE, build_scheduler, build_trainable, run_config
from spaces import get_space
from trainable.atomic import write_atomic, write_text
from trainable.data import load_dataset
from trainable.errors import UserError

SAMPLES = 5
MAX_EPOCHS = 3
FINISHED = {"completed", "stopped_by_asha"}
# Seconds to wait after a new result appears before killing the driver. Ray Tune uploads its
# experiment state (a few small files, milliseconds on a local disk) after each trial checkpoint
# and at least 10 s apart otherwise, and the trial's next checkpoint (90-190 MB) takes longer.
STATE_UPLOAD_SETTLE_S = 0.5
WORKER_TITLE = "ray::ImplicitFunc"  # process title of a Ray Tune function trial's actor
# Base config of the in-process Tuner runs: small and fast on 8x8 images.
BASE_CONFIG = {
    "depth": 18,
    "stem": "cifar",
    "batch_size": 8,
    "momentum": 0.9,
    "augment": "none",
    "epochs": MAX_EPOCHS,
    "val_fraction": 0.2,
    "seed": 0,
}
GOOD_LR = 0.001  # reaches val_acc 1.0 in the first epoch on the tiny dataset
DIVERGING_LR = 1e6  # SGD steps of this size overflow the weights within the first epoch
WEAK_LR = 1e-6  # too small to learn anything in a few epochs


# --- helpers -----------------------------------------------------------------------------------


def write_tiny_dataset(root: Path, count: int = 60) -> Path:
    """Write a 3-class dataset of 8x8 images whose class is the bright third of the columns."""
    rng = np.random.default_rng(0)
    (root / "trainval").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for index in range(count):
        category = index % 3
        pixels = rng.integers(0, 60, size=(8, 8, 3), dtype=np.uint8)
        pixels[:, category * 3 : category * 3 + 2] = 255
        Image.fromarray(pixels).save(root / "trainval" / f"img{index}.png")
        rows.append((f"img{index}", category))
    for index in range(6):
        pixels = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "test" / f"t{index}.png")
    pd.DataFrame(rows, columns=["Id", "Category"]).to_csv(root / "labels.csv", index=False)
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def search_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "search.run", "--dashboard-port", str(free_port()), *args]


def start_search(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        search_command(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def trial_folders(experiment: Path) -> list[Path]:
    if not experiment.is_dir():
        return []
    return sorted(path for path in experiment.iterdir() if (path / "params.json").is_file())


def result_rows(folder: Path) -> list[dict[str, Any]]:
    """Read a trial's result.json; a last line that Ray is still writing is skipped."""
    path = folder / "result.json"
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def epochs_of(folder: Path) -> list[int]:
    return [row["epoch"] for row in result_rows(folder)]


def wait_for(condition: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Return the first truthy value of ``condition()``, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return None


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def title(process: psutil.Process) -> str:
    try:
        command = process.cmdline()
    except psutil.Error:
        return ""
    return command[0] if command else ""


def kill_survivors(processes: list[psutil.Process], grace: float = 10.0) -> list[str]:
    """Wait ``grace`` seconds for processes to exit, SIGKILL the rest; return their titles."""
    _, alive = psutil.wait_procs(processes, timeout=grace)
    survivors = [title(process) or str(process.pid) for process in alive]
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    return survivors


def stop_search(process: subprocess.Popen) -> None:
    """Kill a search that is still running, and every process it started."""
    if process.poll() is not None:
        return
    children = descendants(process.pid)
    process.kill()
    process.communicate(timeout=60)
    kill_survivors(children, grace=5)


def study_trials(experiment: Path) -> list:
    """Return the Optuna study's trials from OptunaSearch's newest saved state.

    The file is a pickle that Ray Tune wrote for this test's own search. Each run of the search
    writes its own file, named by its start time, and Ray Tune restores the last one by name.
    Modification times do not tell: a resumed search copies the older files again.
    """
    states = sorted(experiment.glob("searcher-state-*.pkl"))
    with open(states[-1], "rb") as file:
        return pickle.load(file)["_ot_study"].trials


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("cache")
    # One intra-op thread: torch threads that wait on each other run slower on a loaded CPU.
    return {
        **os.environ,
        "RESNET_SEARCH_CACHE": str(cache),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    }


# --- a trial worker killed mid-epoch ----------------------------------------------------------


@pytest.fixture(scope="module")
def killed_worker(env, tiny_data, tmp_path_factory) -> dict[str, Any]:
    """Run a 3-trial search and SIGKILL the worker of a trial that has reported an epoch."""
    storage = tmp_path_factory.mktemp("worker")
    experiment = storage / "worker"
    process = start_search(
        env,
        "--data", str(tiny_data), "--samples", "3", "--max-epochs", str(MAX_EPOCHS + 1),
        "--max-concurrent", "1", "--max-failures", "2", "--storage", str(storage),
        "--name", "worker",
    )  # fmt: skip

    def trial_mid_run() -> tuple[Path, int] | None:
        for folder in trial_folders(experiment):
            rows = result_rows(folder)
            if rows and rows[-1]["epoch"] < MAX_EPOCHS + 1 and not rows[-1].get("done"):
                return folder, rows[-1]["epoch"]
        return None

    try:
        found = wait_for(trial_mid_run, timeout=300)
        assert found, "no trial reported an epoch"
        workers = [
            child for child in descendants(process.pid) if title(child).startswith(WORKER_TITLE)
        ]
        for worker in workers:
            worker.kill()
        stdout, stderr = process.communicate(timeout=600)
    finally:
        stop_search(process)
    folder, killed_after = found
    return {
        "returncode": process.returncode,
        "stdout": stdout,
        "stderr": stderr,
        "workers": workers,
        "folder": folder,
        "killed_after": killed_after,
        "experiment": experiment,
    }


@pytest.mark.slow
def test_worker_kill_found_one_worker(killed_worker):
    assert len(killed_worker["workers"]) == 1


@pytest.mark.slow
def test_worker_kill_search_exits_zero(killed_worker):
    assert killed_worker["returncode"] == 0, killed_worker["stderr"][-3000:]


@pytest.mark.slow
def test_worker_kill_every_trial_finishes(killed_worker):
    trials = pd.read_parquet(killed_worker["experiment"] / "trials.parquet")
    assert len(trials) == 3
    assert set(trials["status"]) <= FINISHED, trials[["trial_id", "status", "error"]]


@pytest.mark.slow
def test_worker_kill_recorded_as_failure(killed_worker):
    # Ray writes error.txt when the worker dies, and keeps it after the retry succeeds.
    assert (killed_worker["folder"] / "error.txt").is_file()


@pytest.mark.slow
def test_worker_kill_trial_resumes_from_checkpoint(killed_worker):
    rows = result_rows(killed_worker["folder"])
    # Ray restarts its iterations_since_restore counter at 1 in the first result after a restore.
    restored = [row for row in rows if row["iterations_since_restore"] == 1 and row["epoch"] > 1]
    assert len(restored) == 1, [(row["epoch"], row["iterations_since_restore"]) for row in rows]
    assert restored[0]["epoch"] > killed_worker["killed_after"]


@pytest.mark.slow
def test_worker_kill_epochs_continue(killed_worker):
    epochs = epochs_of(killed_worker["folder"])
    assert epochs == list(range(1, len(epochs) + 1))


@pytest.mark.slow
def test_worker_kill_checkpoint_names_distinct(killed_worker):
    names = [row["checkpoint_dir_name"] for row in result_rows(killed_worker["folder"])]
    assert len(names) == len(set(names))
    assert names == sorted(names)


# --- a driver interrupted with SIGINT, resumed, killed with SIGKILL, resumed ------------------


@pytest.fixture(scope="module")
def interrupted_twice(env, tiny_data, tmp_path_factory) -> dict[str, Any]:
    """Interrupt a 5-trial search with SIGINT, resume it, SIGKILL it, resume it to the end."""
    storage = tmp_path_factory.mktemp("driver")
    experiment = storage / "driver"
    resume = ["--storage", str(storage), "--name", "driver", "--resume"]
    stages: dict[str, Any] = {"experiment": experiment}

    # 1: Ctrl-C once a second trial has reported an epoch
    process = start_search(
        env,
        "--data", str(tiny_data), "--samples", str(SAMPLES), "--max-epochs", str(MAX_EPOCHS),
        "--grace-period", "1", "--reduction-factor", "2", "--max-concurrent", "1",
        "--storage", str(storage), "--name", "driver",
    )  # fmt: skip
    try:
        started = wait_for(
            lambda: sum(bool(result_rows(folder)) for folder in trial_folders(experiment)) >= 2,
            timeout=300,
        )
        assert started, "two trials never reported"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        stop_search(process)
    stages["sigint"] = {
        "returncode": process.returncode,
        "stdout": stdout,
        "stderr": stderr,
        "rows": {folder.name: result_rows(folder) for folder in trial_folders(experiment)},
        "study": study_trials(experiment),
    }

    # 2: resume, then SIGKILL the driver while a trial it started is mid-run
    before = set(stages["sigint"]["rows"])

    def new_trial_mid_run() -> str | None:
        for folder in trial_folders(experiment):
            rows = result_rows(folder)
            if folder.name not in before and rows and not rows[-1].get("done"):
                return folder.name
        return None

    process = start_search(env, *resume)
    try:
        running = wait_for(new_trial_mid_run, timeout=300)
        assert running, "the resumed search started no trial"
        # The result just seen arrived with Ray's upload of the experiment state. Waiting lets
        # that upload finish, so the kill lands while the trial trains. A kill during the
        # upload can leave a torn state, a Ray Tune limitation that RELIABILITY.md describes.
        time.sleep(STATE_UPLOAD_SETTLE_S)
        children = descendants(process.pid)
        process.kill()
        stdout, stderr = process.communicate(timeout=60)
        survivors = kill_survivors(children)
    finally:
        stop_search(process)
    stages["sigkill"] = {
        "stderr": stderr,
        "running": running,
        "survivors": survivors,
        "rows": {folder.name: result_rows(folder) for folder in trial_folders(experiment)},
    }

    # 3: resume to the end
    process = start_search(env, *resume)
    try:
        stdout, stderr = process.communicate(timeout=900)
    finally:
        stop_search(process)
    stages["final"] = {
        "returncode": process.returncode,
        "stdout": stdout,
        "stderr": stderr,
        "rows": {folder.name: result_rows(folder) for folder in trial_folders(experiment)},
        "study": study_trials(experiment),
    }
    return stages


@pytest.mark.slow
def test_sigint_prints_resume_command(interrupted_twice):
    assert "--name driver --resume" in interrupted_twice["sigint"]["stdout"]


def asked_trials(study: list) -> list:
    """Return the study's trials that OptunaSearch asked for, leaving out enqueued ones.

    The search enqueues its initial points at the start, so they wait in the study until asked.
    """
    return [trial for trial in study if trial.state != optuna.trial.TrialState.WAITING]


@pytest.mark.slow
def test_sigint_saves_study_with_created_trials(interrupted_twice):
    sigint = interrupted_twice["sigint"]
    assert len(asked_trials(sigint["study"])) == len(sigint["rows"])


@pytest.mark.slow
def test_resumed_study_has_each_trial_once(interrupted_twice):
    numbers = [trial.number for trial in interrupted_twice["final"]["study"]]
    assert numbers == list(range(SAMPLES))


@pytest.mark.slow
def test_resumed_study_tells_every_trial(interrupted_twice):
    states = {trial.state for trial in interrupted_twice["final"]["study"]}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}


@pytest.mark.slow
def test_resumed_study_continues_first_trials(interrupted_twice):
    first = [trial.params for trial in asked_trials(interrupted_twice["sigint"]["study"])]
    final = [trial.params for trial in interrupted_twice["final"]["study"]]
    assert final[: len(first)] == first


@pytest.mark.slow
def test_resumed_asha_records_restored_rungs(interrupted_twice):
    stderr = interrupted_twice["sigkill"]["stderr"]
    for rows in interrupted_twice["sigint"]["rows"].values():
        if not rows:
            continue
        epochs = len({row["epoch"] for row in rows})
        line = f"ASHA: trial {rows[0]['trial_id']} restored with {epochs} reported epochs"
        assert line in stderr
        # grace period 1: every trial with an epoch has a result in the first rung
        assert f"{line}; rung results recorded at epochs 1" in stderr


@pytest.mark.slow
def test_killed_driver_resume_exits_zero(interrupted_twice):
    final = interrupted_twice["final"]
    assert final["returncode"] == 0, final["stderr"][-3000:]


@pytest.mark.slow
def test_killed_driver_resume_runs_every_trial(interrupted_twice):
    trials = pd.read_parquet(interrupted_twice["experiment"] / "trials.parquet")
    assert len(trials) == SAMPLES
    assert set(trials["status"]) <= FINISHED, trials[["trial_id", "status", "error"]]


@pytest.mark.slow
def test_killed_driver_resume_keeps_finished_trials(interrupted_twice):
    final = interrupted_twice["final"]["rows"]
    finished = {
        name: rows
        for name, rows in interrupted_twice["sigkill"]["rows"].items()
        if rows and rows[-1].get("done")
    }
    assert finished
    for name, rows in finished.items():
        assert final[name] == rows, f"{name} ran again"


@pytest.mark.slow
def test_killed_driver_trial_continues(interrupted_twice):
    running = interrupted_twice["sigkill"]["running"]
    before = [row["epoch"] for row in interrupted_twice["sigkill"]["rows"][running]]
    after = [row["epoch"] for row in interrupted_twice["final"]["rows"][running]]
    assert after[: len(before)] == before
    assert after == list(range(1, len(after) + 1))


@pytest.mark.slow
def test_resumed_search_repeats_no_epoch(interrupted_twice):
    for name, rows in interrupted_twice["final"]["rows"].items():
        epochs = [row["epoch"] for row in rows]
        assert len(epochs) == len(set(epochs)), f"{name} reported {epochs}"


@pytest.mark.slow
def test_resumed_search_checkpoint_names_distinct(interrupted_twice):
    for name, rows in interrupted_twice["final"]["rows"].items():
        names = [row["checkpoint_dir_name"] for row in rows if row.get("checkpoint_dir_name")]
        assert len(names) == len(set(names)), f"{name} reused {names}"


# --- a trial whose loss diverges, and a corrupt checkpoint, through tune.Tuner -----------------


def tune_trials(
    data: Path,
    storage: Path,
    name: str,
    lrs: list[float],
    max_failures: int,
    callbacks: list | None = None,
) -> dict[float, Any]:
    """Run one trial per learning rate, one at a time, as the search runs them."""
    dataset = load_dataset(data, progress=False)
    budget = Budget(samples=len(lrs), max_epochs=MAX_EPOCHS, grace_period=1, reduction_factor=2)
    config = run_config(name, str(storage), max_failures, MAX_EPOCHS)
    config.callbacks = [*(config.callbacks or []), *(callbacks or [])]
    tuner = tune.Tuner(
        build_trainable(dataset, cpus=1, gpus=0),
        param_space={**BASE_CONFIG, "lr": tune.grid_search(lrs)},
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            scheduler=build_scheduler(get_space("resnet_family"), budget),
            max_concurrent_trials=1,
        ),
        run_config=config,
    )
    grid = tuner.fit()
    return {result.config["lr"]: result for result in grid}


@pytest.fixture(scope="module")
def diverged(ray_session, search_cache, tiny_data, tmp_path_factory) -> dict[str, Any]:
    """Run a good, a diverging and a weak learning rate, in that order, under ASHA."""
    storage = tmp_path_factory.mktemp("diverged")
    lrs = [GOOD_LR, DIVERGING_LR, WEAK_LR]
    results = tune_trials(tiny_data, storage, "diverged", lrs, max_failures=2)
    experiment = read_experiment(storage / "diverged")
    return {"results": results, "experiment": experiment}


def trial_row(experiment, lr: float) -> pd.Series:
    trials = experiment.trials
    return trials[trials["config/lr"] == lr].iloc[0]


@pytest.mark.slow
def test_diverged_trial_is_not_retried(diverged):
    result = diverged["results"][DIVERGING_LR]
    assert result.error is None
    assert not (Path(result.path) / "error.txt").exists()


@pytest.mark.slow
def test_diverged_trial_reports_epoch_once(diverged):
    epochs = epochs_of(Path(diverged["results"][DIVERGING_LR].path))
    assert epochs == list(range(1, len(epochs) + 1))


@pytest.mark.slow
def test_diverged_trial_reports_reason(diverged):
    error = diverged["results"][DIVERGING_LR].metrics["error"]
    assert error.startswith("non-finite loss: training loss became")


@pytest.mark.slow
def test_results_show_diverged_trial_as_error(diverged):
    row = trial_row(diverged["experiment"], DIVERGING_LR)
    assert row["status"] == "error"
    assert "non-finite loss" in row["error"]


@pytest.mark.slow
def test_asha_stops_weak_trial_after_divergence(diverged):
    row = trial_row(diverged["experiment"], WEAK_LR)
    assert row["status"] == "stopped_by_asha", diverged["experiment"].trials[["status", "error"]]


@pytest.mark.slow
def test_best_result_stays_finite(diverged):
    best = pick_best(diverged["experiment"].results)
    assert math.isfinite(best["val_acc"])
    assert best["config/lr"] == GOOD_LR


def test_best_skips_diverged_trial():
    results = pd.DataFrame(
        {
            "trial_id": ["diverged", "diverged", "steady"],
            "epoch": [1, 2, 1],
            "val_acc": [0.9, math.nan, 0.5],
            "val_loss": [0.1, math.nan, 0.7],
            "error": [None, "non-finite loss: training loss became nan in epoch 2", None],
        }
    )
    assert pick_best(results)["trial_id"] == "steady"
    assert pick_best(results, "last")["trial_id"] == "steady"


class CorruptCheckpointAndKillWorker(tune.Callback):
    """A Tune callback that kills the trial's worker at its second checkpoint and truncates it.

    Tune then restores the trial from that checkpoint, as after any worker crash.
    """

    def __init__(self) -> None:
        self.path: Path | None = None

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        if self.path is not None or trial.last_result.get("epoch") != 2:
            return
        os.kill(trial.last_result["pid"], signal.SIGKILL)
        self.path = Path(checkpoint.path) / "checkpoint.pt"
        size = self.path.stat().st_size
        with open(self.path, "r+b") as file:
            file.truncate(size // 2)


@pytest.fixture(scope="module")
def corrupted(ray_session, search_cache, tiny_data, tmp_path_factory) -> dict[str, Any]:
    """Run one trial whose second checkpoint is truncated while its worker is killed."""
    storage = tmp_path_factory.mktemp("corrupted")
    callback = CorruptCheckpointAndKillWorker()
    results = tune_trials(
        tiny_data, storage, "corrupted", [GOOD_LR], max_failures=1, callbacks=[callback]
    )
    return {
        "result": results[GOOD_LR],
        "path": callback.path,
        "experiment": read_experiment(storage / "corrupted"),
    }


@pytest.mark.slow
def test_corrupt_checkpoint_fails_trial(corrupted):
    assert corrupted["path"] is not None, "the callback never ran"
    assert corrupted["result"].error is not None


@pytest.mark.slow
def test_corrupt_checkpoint_error_names_file(corrupted):
    error = trial_row(corrupted["experiment"], GOOD_LR)["error"]
    assert f"checkpoint {corrupted['path']} is corrupt or truncated" in error


@pytest.mark.slow
def test_corrupt_checkpoint_never_resumes(corrupted):
    epochs = epochs_of(Path(corrupted["result"].path))
    assert epochs == [1, 2]


# --- atomic writes -----------------------------------------------------------------------------


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("error", [Interrupted, KeyboardInterrupt])
def test_write_atomic_keeps_old_file_on_error(tmp_path, error):
    target = tmp_path / "results.parquet"
    write_text(target, "old contents\n")

    def write_half(file) -> None:
        file.write(b"new contents, first half")
        raise error

    with pytest.raises(error):
        write_atomic(target, write_half)
    assert target.read_text() == "old contents\n"
    assert [path.name for path in tmp_path.iterdir()] == ["results.parquet"]


WRITER = textwrap.dedent(
    """
    import sys, time
    from trainable.atomic import write_atomic

    def write_slowly(file):
        file.write(b"x" * 50_000_000)
        file.flush()
        print("half written", flush=True)
        time.sleep(600)

    write_atomic(sys.argv[1], write_slowly)
    """
)


@pytest.mark.slow
def test_write_atomic_keeps_old_file_when_killed(tmp_path):
    target = tmp_path / "checkpoint.pt"
    write_text(target, "old contents\n")
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "half written"
        process.kill()
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert target.read_text() == "old contents\n"
    # NOTE: SIGKILL leaves no chance to clean up, so the hidden temporary file stays behind.
    leftovers = [path.name for path in tmp_path.iterdir() if path != target]
    assert all(name.startswith(".checkpoint.pt.") for name in leftovers), leftovers


# --- dashboard exposure ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "disabled"),
    [
        (None, False),
        ("token", False),
        ("TOKEN", False),
        ("disabled", True),
        ("off", True),
        ("", True),
    ],
)
def test_authentication_disabled_reads_ray_auth_mode(monkeypatch, mode, disabled):
    if mode is None:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    else:
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
    assert authentication_disabled() is disabled


def test_dashboard_exposure_rejects_open_dashboard(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "off")
    with pytest.raises(UserError, match="--allow-unauthenticated"):
        check_dashboard_exposure("0.0.0.0", allow_unauthenticated=False)


@pytest.mark.parametrize(
    ("host", "mode", "allow"),
    [
        ("0.0.0.0", "off", True),  # the user accepts the risk explicitly
        ("127.0.0.1", "off", False),  # loopback only
        ("::1", "off", False),
        ("0.0.0.0", None, False),  # token authentication stays on
    ],
)
def test_dashboard_exposure_allows(monkeypatch, host, mode, allow):
    if mode is None:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    else:
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
    assert check_dashboard_exposure(host, allow_unauthenticated=allow) is None
