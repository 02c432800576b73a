"""The search CLI against a real local Ray: end to end, resume, dashboard, cluster, bad input.

Each search runs as a subprocess, as a user runs it, with its own Ray instance, experiment
storage under tmp_path and the dataset cache in a temporary folder.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from PIL import Image

from search.cluster import TOKEN_PATH
from spaces import SpaceContext, get_space

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("cache")
    return {**os.environ, "RESNET_SEARCH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Write a 3-class dataset of 8x8 images (class = brightest third of the image)."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    (root / "trainval").mkdir()
    (root / "test").mkdir()
    rows = []
    for index in range(36):
        category = index % 3
        pixels = rng.integers(0, 60, size=(8, 8, 3), dtype=np.uint8)
        pixels[:, category * 2 : category * 2 + 3] = 255
        Image.fromarray(pixels).save(root / "trainval" / f"img{index}.png")
        rows.append((f"img{index}", category))
    for index in range(6):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
            root / "test" / f"t{index}.png"
        )
    pd.DataFrame(rows, columns=["Id", "Category"]).to_csv(root / "labels.csv", index=False)
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def search_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "search.run", "--dashboard-port", str(free_port()), *args]


def run_search(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        search_command(*args), env=env, capture_output=True, text=True, timeout=timeout
    )


def trial_folders(experiment: Path) -> list[Path]:
    return sorted(path for path in experiment.iterdir() if (path / "params.json").is_file())


def reported_epochs(folder: Path) -> list[int]:
    lines = (
        (folder / "result.json").read_text().splitlines()
        if (folder / "result.json").exists()
        else []
    )
    return [json.loads(line)["epoch"] for line in lines if line.strip()]


def trial_number(folder: Path) -> int:
    """Return Tune's 1-based creation number, the field after the trial id in the folder name."""
    return int(folder.name.split("_")[3])


# end to end on the embedded digits


@pytest.fixture(scope="module")
def digits_search(env, tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    completed = run_search(
        env,
        "--space", "resnet_family", "--samples", "6", "--max-epochs", "4",
        "--grace-period", "1", "--reduction-factor", "2", "--max-concurrent", "2",
        "--storage", str(storage), "--name", "digits",
    )  # fmt: skip
    return completed, storage / "digits"


def test_search_digits_exits_zero(digits_search):
    completed, _ = digits_search
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_search_digits_runs_all_trials(digits_search):
    _, experiment = digits_search
    assert len(trial_folders(experiment)) == 6


def test_search_digits_asha_stops_a_trial_early(digits_search):
    _, experiment = digits_search
    epochs_run = [max(reported_epochs(folder), default=0) for folder in trial_folders(experiment)]
    assert min(epochs_run) < 4


def test_search_digits_prints_leaderboard_and_savings(digits_search):
    completed, _ = digits_search
    assert "best val_acc" in completed.stdout
    assert "ASHA ran" in completed.stdout


def test_search_digits_reports_best_trial(digits_search):
    completed, experiment = digits_search
    best = json.loads((experiment / "best.json").read_text())
    assert f"val_acc {best['metrics']['val_acc']:.4f}" in completed.stdout
    assert best["metrics"]["val_acc"] > 0.5


def test_search_digits_writes_tables(digits_search):
    _, experiment = digits_search
    trials = pd.read_parquet(experiment / "trials.parquet")
    assert len(trials) == 6


@pytest.mark.parametrize("name", ["learning_curves.png", "asha_rungs.png", "param_importance.png"])
def test_search_digits_writes_plots(digits_search, name):
    _, experiment = digits_search
    assert (experiment / "plots" / name).stat().st_size > 10_000


def test_search_digits_prints_retrain_command(digits_search):
    completed, experiment = digits_search
    assert f"python -m trainable.final --config {experiment / 'best.json'}" in completed.stdout


def test_search_digits_points_to_evaluate_run_first(digits_search):
    _, experiment = digits_search
    context = SpaceContext(max_epochs=4, seed=0)
    points = get_space("resnet_family").initial_points(context)
    first = sorted(trial_folders(experiment), key=trial_number)[: len(points)]
    for folder, point in zip(first, points, strict=True):
        params = json.loads((folder / "params.json").read_text())
        assert {name: params[name] for name in point if name != "weight_decay"} == {
            name: value for name, value in point.items() if name != "weight_decay"
        }


# interrupt with SIGINT, resume; the dashboard is probed while the first run is alive


def wait_for(condition, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def listening_addresses(port: int) -> set[str]:
    return {
        connection.laddr.ip
        for connection in psutil.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    }


def http_status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module")
def interrupted(env, tiny_data, tmp_path_factory):
    """Start a 6-trial search, probe its dashboard, press Ctrl-C after two trials, resume it."""
    storage = tmp_path_factory.mktemp("resume")
    port = free_port()
    args = [
        "--data", str(tiny_data), "--samples", "6", "--max-epochs", "3", "--max-concurrent", "1",
        "--storage", str(storage), "--name", "resumable",
    ]  # fmt: skip
    command = [sys.executable, "-m", "search.run", "--dashboard-port", str(port), *args]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    experiment = storage / "resumable"
    probe = {}
    try:
        assert wait_for(lambda: listening_addresses(port), timeout=120), "dashboard never listened"
        probe["addresses"] = listening_addresses(port)
        url = f"http://127.0.0.1:{port}/api/version"
        probe["without_token"] = http_status(url, None)
        probe["with_token"] = http_status(url, TOKEN_PATH.expanduser().read_text().strip())

        def two_trials_finished() -> bool:
            folders = trial_folders(experiment) if experiment.exists() else []
            return sum(len(reported_epochs(folder)) >= 1 for folder in folders) >= 2

        assert wait_for(two_trials_finished, timeout=300), "trials never reported"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    before = {folder.name: reported_epochs(folder) for folder in trial_folders(experiment)}
    resumed = run_search(env, "--storage", str(storage), "--name", "resumable", "--resume")
    return {
        "probe": probe,
        "first": (process.returncode, stdout, stderr),
        "before": before,
        "resumed": resumed,
        "experiment": experiment,
    }


def test_dashboard_listens_on_loopback_only(interrupted):
    assert interrupted["probe"]["addresses"] == {"127.0.0.1"}


def test_dashboard_rejects_request_without_token(interrupted):
    assert interrupted["probe"]["without_token"] == 401


def test_dashboard_accepts_request_with_token(interrupted):
    assert interrupted["probe"]["with_token"] == 200


def test_interrupted_search_prints_resume_command(interrupted):
    _, stdout, _ = interrupted["first"]
    assert "continue with: python -m search.run --name resumable --resume" in stdout


def test_interrupted_search_left_trials_to_run(interrupted):
    assert sum(bool(epochs) for epochs in interrupted["before"].values()) < 6


def test_resumed_search_exits_zero(interrupted):
    resumed = interrupted["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_resumed_search_reaches_all_trials(interrupted):
    assert len(trial_folders(interrupted["experiment"])) == 6


def test_resumed_search_repeats_no_epoch(interrupted):
    for folder in trial_folders(interrupted["experiment"]):
        epochs = reported_epochs(folder)
        assert len(epochs) == len(set(epochs)), f"{folder.name} reported {epochs}"


def test_resumed_search_keeps_finished_trials(interrupted):
    after = {
        folder.name: reported_epochs(folder) for folder in trial_folders(interrupted["experiment"])
    }
    finished = {name: epochs for name, epochs in interrupted["before"].items() if len(epochs) == 3}
    assert finished
    for name, epochs in finished.items():
        assert after[name] == epochs


# two nodes of one machine, made with ray.cluster_utils.Cluster


def test_two_node_cluster_runs_trials_on_both_nodes(env, tiny_data, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        completed = run_search(
            env,
            "--address", cluster.address, "--data", str(tiny_data), "--samples", "4",
            "--max-epochs", "2", "--max-concurrent", "2", "--storage", str(tmp_path),
            "--name", "cluster",
        )  # fmt: skip
    finally:
        cluster.shutdown()
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Ray cluster: 2 nodes, 2 CPUs, 0 GPUs" in completed.stdout
    nodes = {
        json.loads(line)["node_id"]
        for folder in trial_folders(tmp_path / "cluster")
        for line in (folder / "result.json").read_text().splitlines()
    }
    assert len(nodes) == 2


# bad input: one line, exit status 2, before any trial starts


def bad_input_cases(tiny_data: Path, tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    missing = tmp_path / "missing"
    return {
        "unknown space": (["--space", "resnet_famly"], "resnet_family"),
        "data folder missing": (["--data", str(missing)], str(missing)),
        "unreachable address": (["--address", f"127.0.0.1:{free_port()}"], "cannot reach"),
        "gpus without GPUs": (["--data", str(tiny_data), "--gpus-per-trial", "1"], "no GPUs"),
        "resume of a non-experiment": (["--name", "nothing", "--resume"], "nothing"),
        "finetune without init-from": (["--space", "finetune"], "--init-from"),
        "zero samples": (["--samples", "0"], "--samples 0"),
        "negative epochs": (["--max-epochs", "-1"], "--max-epochs -1"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "unknown space",
        "data folder missing",
        "unreachable address",
        "gpus without GPUs",
        "resume of a non-experiment",
        "finetune without init-from",
        "zero samples",
        "negative epochs",
    ],
)
def test_search_bad_input_exits_2(case, env, tiny_data, tmp_path):
    args, expected = bad_input_cases(tiny_data, tmp_path)[case]
    storage = tmp_path / "storage"
    started = time.monotonic()
    completed = run_search(env, "--storage", str(storage), *args, timeout=120)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert expected in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not any(storage.glob("*/*")), "a trial started or files were written"
    assert time.monotonic() - started < 120


# storage given as a URI, through pyarrow's file systems as Ray Tune uses them


def test_search_with_uri_storage_writes_local_tables(env, tiny_data, tmp_path):
    storage = tmp_path / "bucket"
    workdir = tmp_path / "work"
    workdir.mkdir()
    completed = subprocess.run(
        search_command(
            "--data",
            str(tiny_data),
            "--samples",
            "2",
            "--max-epochs",
            "1",
            "--storage",
            f"file://{storage}",
            "--name",
            "remote",
        ),  # fmt: skip
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (storage / "remote" / "search.json").is_file()
    assert len(pd.read_parquet(workdir / "runs" / "remote" / "trials.parquet")) == 2
    assert not list((workdir / "runs" / "remote").glob("*/checkpoint_*"))


def test_search_final_writes_submission(env, tiny_data, tmp_path):
    completed = subprocess.run(
        search_command(
            "--data",
            str(tiny_data),
            "--samples",
            "1",
            "--max-epochs",
            "1",
            "--storage",
            str(tmp_path / "runs"),
            "--name",
            "with-final",
            "--final",
        ),  # fmt: skip
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    submission = pd.read_csv(tmp_path / "final" / "with-final" / "submission.csv")
    assert sorted(submission["Id"]) == [f"t{index}" for index in range(6)]
