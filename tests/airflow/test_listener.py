"""The DAG-run listener as the scheduler calls it: inside the scheduler's scoped ORM session.

The scheduler runs with ``_AIRFLOW_PROCESS_CONTEXT=server`` (its connection lookups then fall through
to Airflow's ``MetastoreBackend``) and holds the ``DagRun`` in ``settings.Session()``; the listener
must leave that session alone (a closed session detaches the DagRun and the scheduler crashed with
``DetachedInstanceError``), must not wait for the isthmus store, and must never raise.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pytest
import sqlalchemy

from isthmus.context import derived_run_id

pytestmark = pytest.mark.usefixtures("airflow_db")


def _isthmus_dag(dag_id: str, conn_id: str | None = None):
    from airflow.sdk import DAG

    from isthmus import step
    from isthmus_airflow.operators.step import StepOperator

    @step
    def one() -> int:
        return 1

    extra = {"isthmus_conn_id": conn_id} if conn_id else {}
    with DAG(dag_id, schedule=None) as dag:
        StepOperator(task_id="one", step=one, **extra)
    return dag


def _open_pipeline_run(store_url: str, run_id: str) -> None:
    from isthmus.store import MetadataStore

    store = MetadataStore(store_url)
    store.ensure_pipeline_run({"id": run_id, "pipeline": "p", "orchestrator": "airflow"})
    store.dispose()


def _status(store_url: str, run_id: str) -> str:
    from isthmus.store import MetadataStore

    store = MetadataStore(store_url)
    try:
        return store.get_run(run_id)["status"]
    finally:
        store.dispose()


@pytest.fixture
def closer(monkeypatch: pytest.MonkeyPatch):
    """A run-closing helper of this test's own (started with this test's environment and stderr)."""
    from isthmus_airflow.plugins import run_closer

    channel = run_closer.HelperChannel()
    monkeypatch.setattr(run_closer, "channel", channel)
    yield channel
    channel.close()


@pytest.fixture
def scheduler_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process looks up connections as the scheduler does (env variables, then the metadata DB)."""
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")


@pytest.fixture
def db_connection(tmp_path: Path):
    """``isthmus_default`` stored in Airflow's metadata DB, pointing at a store of its own."""
    from airflow.models import Connection
    from airflow.utils.session import create_session

    url = f"sqlite:///{tmp_path / 'db-conn' / 'isthmus.db'}"
    extra = {"store_url": url, "artifact_root": str(tmp_path / "db-conn" / "artifacts")}
    with create_session() as session:
        session.add(Connection(conn_id="isthmus_default", conn_type="isthmus", extra=json.dumps(extra)))
    yield url
    with create_session() as session:
        session.execute(sqlalchemy.delete(Connection).where(Connection.conn_id == "isthmus_default"))


@pytest.mark.parametrize("where", ["absent", "db", "env"])
def test_listener_leaves_the_schedulers_session_alone_and_closes_the_run(
    where: str, scheduler_process, closer, isthmus_home: Path, tmp_path: Path, request, monkeypatch
) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType

    from isthmus import config
    from isthmus_airflow.plugins.isthmus import dag_run_listener
    from isthmus_airflow.plugins.run_closer import flush

    if where == "absent":
        store_url = config.get_settings().store_url
    elif where == "db":
        store_url = request.getfixturevalue("db_connection")
    else:
        store_url = f"sqlite:///{tmp_path / 'env-conn' / 'isthmus.db'}"
        conn = {"conn_type": "isthmus", "extra": {"store_url": store_url, "artifact_root": str(tmp_path / "arts")}}
        monkeypatch.setenv("AIRFLOW_CONN_ISTHMUS_DEFAULT", json.dumps(conn))
    dag_id = f"listener_{where}"
    run_id = derived_run_id("airflow", dag_id, "manual__1")
    _open_pipeline_run(store_url, run_id)

    with create_session() as session:  # the scheduler's session, as in SchedulerJobRunner._do_scheduling
        dag_run = DagRun(dag_id=dag_id, run_id="manual__1", run_type=DagRunType.MANUAL, state=DagRunState.SUCCESS)
        session.add(dag_run)
        dag_run.dag = _isthmus_dag(dag_id)
        dag_run_listener.on_dag_run_success(dag_run=dag_run, msg="success")
        # what update_state does next: the DagRun is still in the scheduler's session
        assert sqlalchemy.inspect(dag_run).session is session, "the listener closed the scheduler's session"
        assert dag_run.state == DagRunState.SUCCESS
        session.expunge(dag_run)

    assert flush(30)
    assert _status(store_url, run_id) == "COMPLETED"


def test_listener_does_not_wait_for_the_store(isthmus_home: Path, closer, caplog: pytest.LogCaptureFixture) -> None:
    """The listener returns while the isthmus store is locked; a helper that cannot keep up makes it
    drop closes with a warning, never wait."""
    import sqlite3

    from isthmus import config
    from isthmus_airflow.plugins import run_closer
    from isthmus_airflow.plugins.isthmus import dag_run_listener

    store_url = config.get_settings().store_url
    run_id = derived_run_id("airflow", "slow_store", "manual__1")
    _open_pipeline_run(store_url, run_id)

    class Run:
        dag_id, run_id, dag = "slow_store", "manual__1", _isthmus_dag("slow_store")

    lock = sqlite3.connect(store_url.removeprefix("sqlite:///"), timeout=30)
    lock.execute("BEGIN IMMEDIATE")  # every write to the store waits for this transaction
    try:
        caller = threading.Thread(target=dag_run_listener.on_dag_run_failed, kwargs={"dag_run": Run(), "msg": "x"})
        caller.start()
        caller.join(60)  # a hang guard, not a timing assertion
        assert not caller.is_alive(), "the listener waited for the isthmus store"
        with caplog.at_level(logging.WARNING, logger="isthmus_airflow"):
            for i in range(5000):  # far more than the pipe holds while the helper is stuck
                run_closer.submit(
                    run_closer.RunEnd("slow_store", f"other__{i}", "COMPLETED", None, ("isthmus_default",))
                )
        assert "the run-closing helper is behind" in caplog.text
        assert _status(store_url, run_id) == "RUNNING"  # the close is still waiting for the lock
    finally:
        lock.rollback()
        lock.close()
    assert run_closer.flush(120)
    assert _status(store_url, run_id) == "FAILED"


def test_listener_never_raises(isthmus_home: Path, closer, capfd: pytest.CaptureFixture) -> None:
    from isthmus_airflow.plugins import run_closer
    from isthmus_airflow.plugins.isthmus import dag_run_listener

    class Broken:
        @property
        def dag_id(self):
            raise RuntimeError("no dag_id here")

    dag_run_listener.on_dag_run_success(dag_run=Broken(), msg="success")
    dag_run_listener.on_dag_run_failed(dag_run=object(), msg="task_failure")

    class Unknown:  # its tasks use a connection that exists nowhere: a warning, after bounded retries
        dag_id, run_id, dag = "unknown_conn", "manual__1", _isthmus_dag("unknown_conn", conn_id="nowhere")

    dag_run_listener.on_dag_run_success(dag_run=Unknown(), msg="success")
    run_closer.channel.submit(run_closer.RunEnd("x", "y", "COMPLETED", None, ()))  # nothing to do
    os.write(run_closer.channel._helper().stdin.fileno(), b"not json\n")  # a bad line: skipped
    assert run_closer.flush(60)
    err = capfd.readouterr().err
    assert "could not close the pipeline run of unknown_conn/manual__1" in err and "'nowhere' does not exist" in err
    assert "skipped a message" in err and "Traceback" not in err


def test_listener_ignores_dags_without_isthmus_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import DAG
    from airflow.sdk.bases.operator import BaseOperator

    from isthmus_airflow.plugins import run_closer
    from isthmus_airflow.plugins.isthmus import dag_run_listener

    submitted = []
    monkeypatch.setattr(run_closer, "submit", submitted.append)
    with DAG("plain", schedule=None) as dag:
        BaseOperator(task_id="plain")

    class Run:
        dag_id, run_id = "plain", "manual__1"

    Run.dag = dag
    dag_run_listener.on_dag_run_success(dag_run=Run(), msg="success")
    assert submitted == []
    Run.dag = _isthmus_dag("mixed", conn_id="other_store")
    dag_run_listener.on_dag_run_success(dag_run=Run(), msg="success")
    assert [s.conn_ids for s in submitted] == [("other_store",)]
