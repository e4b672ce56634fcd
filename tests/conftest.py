"""Shared fixtures: every test gets its own isthmus home (SQLite store + artifact root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import isthmus
from isthmus import config

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip with a printed reason outside CI; fail inside CI, where every service must be present."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def isthmus_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ISTHMUS_HOME for each test; the process-wide stores are rebuilt for it."""
    home = tmp_path / "isthmus-home"
    monkeypatch.setenv("ISTHMUS_HOME", str(home))
    for var in ("ISTHMUS_STORE_URL", "ISTHMUS_ARTIFACT_ROOT", "ISTHMUS_VERIFY", "ISTHMUS_LEASE_TTL"):
        monkeypatch.delenv(var, raising=False)
    config.reset()
    yield home
    config.reset()


@pytest.fixture
def runner(isthmus_home: Path) -> isthmus.StepRunner:
    from isthmus.runner import default_runner

    return default_runner()


# -- metadata stores: SQLite and a real PostgreSQL ------------------------------------------------
@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL server (see tests/postgres_server.py); skips (fails in CI) without one."""
    from tests.postgres_server import start_server

    server, reason = start_server()
    if server is None:
        skip_or_fail(f"PostgreSQL: {reason}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_url(pg_server) -> str:
    """SQLAlchemy URL of the session's PostgreSQL database (``postgresql+psycopg://...``)."""
    return pg_server.url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh, empty metadata-store database for this test: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'isthmus.db'}"
        return
    server = request.getfixturevalue("pg_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest.fixture
def metadata_store(store_url: str):
    """``isthmus.store.MetadataStore`` on ``store_url``."""
    from isthmus.store import MetadataStore

    store = MetadataStore(store_url)
    yield store
    store.dispose()


# -- an S3-protocol server (moto) -------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server():
    """The session's S3-protocol server (see tests/s3_server.py); skips (fails in CI) without one."""
    from tests.s3_server import start_server

    server, reason = start_server()
    if server is None:
        skip_or_fail(f"S3 server: {reason}")
    yield server
    server.stop()
