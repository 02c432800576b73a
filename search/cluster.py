"""Ray start and connect: a local Ray with its dashboard on loopback, or a running cluster."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import ray

from trainable.cli import UserError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
TOKEN_PATH = Path("~/.ray/auth_token")


@dataclass(frozen=True)
class ClusterInfo:
    """Alive nodes of the cluster and their resources."""

    nodes: int
    cpus: float
    gpus: float
    max_node_cpus: float  # the most CPUs any one node has: a trial runs on one node
    max_node_gpus: float
    dashboard_url: str | None

    def summary(self) -> str:
        return (
            f"Ray cluster: {self.nodes} node{'s' if self.nodes != 1 else ''}, "
            f"{self.cpus:g} CPUs, {self.gpus:g} GPUs"
        )


def authentication_disabled() -> bool:
    """Tell whether RAY_AUTH_MODE turns off Ray's token authentication for a new local Ray.

    Unset, Ray 2.60 turns token authentication on for a local ``ray.init``; set, only ``token``
    (in any case) keeps it on, and any other value (``disabled``, a typo, empty) turns it off.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    return mode is not None and mode.lower() != "token"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_dashboard_exposure(host: str, allow_unauthenticated: bool) -> None:
    """Reject a dashboard beyond loopback without authentication, unless explicitly allowed.

    An open dashboard accepts jobs, and a job runs any code on the cluster: the ShadowRay
    disclosure (CVE-2023-48022) showed remote code execution through exposed Ray dashboards.
    """
    if is_loopback(host) or not authentication_disabled() or allow_unauthenticated:
        return
    raise UserError(
        f"--dashboard-host {host} exposes the Ray dashboard and job API beyond this machine "
        f"while token authentication is off (RAY_AUTH_MODE={os.environ.get('RAY_AUTH_MODE')!r}), "
        "so anyone who can reach it can run code here (CVE-2023-48022, ShadowRay); unset "
        "RAY_AUTH_MODE or set it to token, bind to "
        "127.0.0.1, or pass --allow-unauthenticated if a firewall protects the port"
    )


def check_address_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast on a HOST:PORT that accepts no connection, instead of letting Ray retry."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r} is invalid; use auto or HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise UserError(
            f"cannot reach a Ray cluster at {address} ({err.strerror or err}); start one with "
            f"'ray start --head' there, or check the address and the firewall"
        ) from None


def start_or_connect(address: str | None, dashboard_host: str, dashboard_port: int) -> ClusterInfo:
    """Join the cluster at ``address``, or start a local Ray with its dashboard."""
    if address:
        check_address_reachable(address)
        try:
            context = ray.init(address=address, logging_level=logging.WARNING)
        except ConnectionError as err:
            if os.environ.get("RAY_AUTH_MODE") is None:
                # Ray 2.60's 'ray start --head' turns token authentication on, and a client
                # sends the token only when RAY_AUTH_MODE=token.
                hint = (
                    "if the cluster was started with 'ray start', it requires token "
                    f"authentication: export RAY_AUTH_MODE=token (the token is in {TOKEN_PATH})"
                )
            else:
                hint = "start one with 'ray start --head'"
            raise UserError(
                f"cannot connect to a Ray cluster at --address {address}: "
                f"{str(err).splitlines()[0]}; {hint}"
            ) from None
    else:
        # "local" starts a new instance: with no address, ray.init would join any cluster
        # already running on this machine.
        context = ray.init(
            address="local",
            include_dashboard=True,
            dashboard_host=dashboard_host,
            dashboard_port=dashboard_port,
            logging_level=logging.WARNING,
        )
    url = context.dashboard_url
    return describe_cluster(f"http://{url}" if url else None)


def describe_cluster(dashboard_url: str | None = None) -> ClusterInfo:
    alive = [node for node in ray.nodes() if node.get("Alive")]
    cpus = [node["Resources"].get("CPU", 0.0) for node in alive]
    gpus = [node["Resources"].get("GPU", 0.0) for node in alive]
    return ClusterInfo(
        nodes=len(alive),
        cpus=sum(cpus),
        gpus=sum(gpus),
        max_node_cpus=max(cpus, default=0.0),
        max_node_gpus=max(gpus, default=0.0),
        dashboard_url=dashboard_url,
    )


def check_trial_resources(cluster: ClusterInfo, cpus: float, gpus: float) -> None:
    """Reject a per-trial request that no node can ever satisfy: Tune would wait forever."""
    if gpus > 0 and cluster.gpus == 0:
        raise UserError(
            f"--gpus-per-trial {gpus:g} requested, but the cluster has no GPUs; "
            "pass --gpus-per-trial 0 or join a cluster with GPU nodes"
        )
    if gpus > cluster.max_node_gpus:
        raise UserError(
            f"--gpus-per-trial {gpus:g} is more than any node has (at most "
            f"{cluster.max_node_gpus:g}); lower it, a trial runs on one node"
        )
    if cpus > cluster.max_node_cpus:
        raise UserError(
            f"--cpus-per-trial {cpus:g} is more than any node has (at most "
            f"{cluster.max_node_cpus:g}); lower it, a trial runs on one node"
        )


def dashboard_sign_in_lines(cluster: ClusterInfo) -> list[str]:
    """Return how to open the dashboard: its URL and where the sign-in token is."""
    if cluster.dashboard_url is None:
        return ["Ray dashboard: not running"]
    lines = [f"Ray dashboard: {cluster.dashboard_url}"]
    if authentication_disabled():
        mode = os.environ.get("RAY_AUTH_MODE")
        lines.append(f"  token authentication is off (RAY_AUTH_MODE={mode!r})")
    else:
        lines.append(
            f"  sign in with the token in {TOKEN_PATH} (the dashboard answers 401 without it)"
        )
    return lines
