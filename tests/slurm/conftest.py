"""Fixtures: one real single-node Slurm for the session (tests/slurm/cluster.py), clients of both
backends, and an isthmus home on the "shared filesystem" (the local disk) for each test."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from tests.slurm.cluster import SlurmCluster, start_cluster


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The session's cluster; ``SLURM_CONF`` points at it while the session runs."""
    cluster, reason = start_cluster()
    if cluster is None:
        skip_or_fail(f"Slurm: {reason}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
    cluster.stop()


def make_client(cluster: SlurmCluster, backend: str):
    from isthmus.slurm import connect

    if backend == "cli":
        return connect("cli", env=cluster.env, timeout=30)
    if backend == "rest":
        return connect("rest", socket=str(cluster.rest_socket))
    if backend == "rest-jwt":
        return connect("rest", url=cluster.rest_url, token=cluster.token())
    raise ValueError(backend)


@pytest.fixture(params=["cli", "rest"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def client(slurm_cluster: SlurmCluster, backend: str):
    c = make_client(slurm_cluster, backend)
    yield c
    asyncio.run(c.close())


@pytest.fixture
def job_home(isthmus_home: Path) -> Path:
    """The test's isthmus home; jobs (running as root here) read and write it like a shared filesystem."""
    isthmus_home.mkdir(parents=True, exist_ok=True)
    return isthmus_home


@pytest.fixture(autouse=True)
def _no_jobs_left(request: pytest.FixtureRequest):
    """After each test that used the cluster, no job of that test may still be queued or running."""
    yield
    if "slurm_cluster" not in request.fixturenames:
        return
    cluster: SlurmCluster = request.getfixturevalue("slurm_cluster")
    left = cluster.active_jobs(wait_for_ending=30)
    if left:
        cluster.run("scancel", *left, check=False)
        pytest.fail(f"jobs left behind: {left}")
