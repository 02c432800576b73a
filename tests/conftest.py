"""Session-wide fixtures shared by the test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """Start one local Ray for the whole test session: 2 CPUs, no dashboard.

    ``address="local"`` starts a new Ray even when another one runs on this machine, which
    ``ray.init()`` would otherwise connect to.
    """
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def search_cache(tmp_path_factory):
    """Point RESNET_SEARCH_CACHE at one temporary folder for the session, never the real cache.

    The digits are written there once and reused by every test that loads them.
    """
    folder = tmp_path_factory.mktemp("resnet-search-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RESNET_SEARCH_CACHE", str(folder))
        yield folder
