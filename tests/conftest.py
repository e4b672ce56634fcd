"""Shared fixtures: every test gets its own isthmus home (SQLite store + artifact root).

Markers are set here from where a test lives, what it imports and which fixtures it uses (see
:func:`pytest_collection_modifyitems`), so ``-m "not airflow and not slurm"`` selects the fast lane.
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


# -- markers by directory, import and fixture ----------------------------------------------------
TESTS_DIR = Path(__file__).resolve().parent
# tests/<directory>/... -> marker
DIRECTORY_MARKS = {"airflow": "airflow", "flyte": "flyte", "slurm": "slurm"}
# a fixture the test uses (directly or through other fixtures) -> marker
FIXTURE_MARKS = {"pg_server": "postgres", "pg_url": "postgres", "slurm_cluster": "slurm", "live_airflow": "airflow"}
# a top-level package the test module (at its top level) or the test function imports -> marker
IMPORT_MARKS = {"airflow": "airflow", "isthmus_airflow": "airflow", "flytekit": "flyte", "flytekitplugins": "flyte"}


def _import_marks(nodes: Iterable[ast.AST]) -> set[str]:
    marks = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        marks |= {IMPORT_MARKS[n.partition(".")[0]] for n in names if n.partition(".")[0] in IMPORT_MARKS}
    return marks


@functools.cache
def _module_marks(path: Path) -> frozenset[str]:
    """Markers of the imports at a test module's top level (they concern every test in it)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return frozenset()
    return frozenset(_import_marks(tree.body))


@functools.cache
def _function_marks(function: Any) -> frozenset[str]:
    """Markers of the imports inside one test function (anywhere in its body)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError, ValueError):
        return frozenset()
    return frozenset(_import_marks(ast.walk(tree)))


def marks_for(item: pytest.Item) -> set[str]:
    """The markers ``item`` gets from its directory, its imports and its fixtures."""
    marks: set[str] = set()
    path = Path(item.path).resolve()
    if path.is_relative_to(TESTS_DIR):
        parts = path.relative_to(TESTS_DIR).parts
        if len(parts) > 1 and parts[0] in DIRECTORY_MARKS:
            marks.add(DIRECTORY_MARKS[parts[0]])
    marks |= _module_marks(path)
    function = getattr(item, "function", None)
    if function is not None:
        marks |= _function_marks(function)
    fixtures = getattr(item, "fixturenames", ())
    marks |= {mark for fixture, mark in FIXTURE_MARKS.items() if fixture in fixtures}
    return marks


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test ``airflow``, ``flyte``, ``slurm`` and ``postgres`` from :func:`marks_for`."""
    for item in items:
        present = {mark.name for mark in item.iter_markers()}
        for name in sorted(marks_for(item) - present):
            item.add_marker(getattr(pytest.mark, name))
