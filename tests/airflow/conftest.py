"""Real Airflow for the provider tests: a temporary AIRFLOW_HOME with a migrated SQLite metadata DB.

Airflow reads its configuration when first imported, so the environment is set when this conftest is
imported (before any test imports airflow), and ``airflow db migrate`` runs once per session. The
OpenLineage provider sends its events over HTTP to a Marquez-compatible receiver started here for the
session (as do Slurm jobs that Airflow tasks start, which get the provider's transport).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.airflow_live import live_airflow_fixture  # noqa: F401 - the live_airflow fixture
from tests.conftest import skip_or_fail
from tests.lineage.receiver import MarquezReceiver

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="isthmus-airflow-"))
DAGS = AIRFLOW_HOME / "dags"
RECEIVER = MarquezReceiver()

_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
    "AIRFLOW__CORE__DAG_DISCOVERY_SAFE_MODE": "False",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    "AIRFLOW__OPENLINEAGE__NAMESPACE": "isthmus-tests",
    "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "http", "url": RECEIVER.url, "timeout": 10}),
    # no background thread pools: events are sent before the task returns
    "AIRFLOW__OPENLINEAGE__EXECUTION_TIMEOUT": "30",
}
os.environ.update(_ENV)
DAGS.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """``airflow db migrate`` once per session; skips (fails in CI) if Airflow is not installed."""
    try:
        import airflow  # noqa: F401
    except ImportError as exc:
        skip_or_fail(f"apache-airflow is not installed ({exc}); install the 'airflow' extra")
    env = {**os.environ, **_ENV, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    airflow_bin = Path(sys.executable).with_name("airflow")
    proc = subprocess.run([str(airflow_bin), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    yield AIRFLOW_HOME
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


def put_dag(name: str, source: str) -> Path:
    """Write a DAG file into the dags folder."""
    path = DAGS / f"{name}.py"
    path.write_text(source)
    return path


def load_dag(path: Path, dag_id: str):
    """Import a DAG file the way the DAG processor does and return one DAG from it."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(path))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


def lineage_events() -> list[dict]:
    """Every event the receiver got this session, in arrival order."""
    return RECEIVER.received()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests on the live Airflow deployment (``tests/airflow_live.py``) run last, together: it starts
    once, on first use, and does not run beside the rest of the suite."""
    from tests.airflow_live import uses_live_airflow

    items.sort(key=uses_live_airflow)  # stable: the order within each group is kept
