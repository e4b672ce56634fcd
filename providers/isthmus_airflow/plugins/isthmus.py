"""The isthmus Airflow plugin: a listener that closes the isthmus pipeline run when its DAG run ends;
the isthmus web UI mounted at ``/isthmus`` with an "isthmus" tab on DAG runs and task instances and a nav
entry (:mod:`isthmus_airflow.plugins.ui`); the "isthmus step run" extra link of isthmus tasks.

The listener runs inside the scheduler loop (and the api-server), so it never touches Airflow's ORM
session, never waits on I/O and never raises: it reads a few plain attributes of the DAG run and
hands them to :mod:`isthmus_airflow.plugins.run_closer`, whose helper process does the rest.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

from isthmus_airflow.links.step_run import IsthmusStepRunLink
from isthmus_airflow.plugins import run_closer
from isthmus_airflow.plugins.run_closer import EndStatus
from isthmus_airflow.plugins.ui import URL_PREFIX, LazyUIApp, isthmus_views

log = logging.getLogger(__name__)
DEFAULT_CONN_ID = "isthmus_default"  # IsthmusHook.default_conn_name, without importing the hook here


def _is_isthmus_task(task: Any) -> bool:
    module = getattr(task, "_task_module", None) or type(task).__module__
    return str(module).startswith("isthmus_airflow.")


def _conn_id(task: Any) -> str:
    """A task's ``isthmus_conn_id`` (a template field, so serialized; in ``partial_kwargs`` when mapped)."""
    conn_id = getattr(task, "isthmus_conn_id", None) or (getattr(task, "partial_kwargs", None) or {}).get(
        "isthmus_conn_id"
    )
    return str(conn_id or DEFAULT_CONN_ID)


def _conn_ids(dag_run: Any) -> tuple[str, ...] | None:
    """The isthmus connections of the DAG's isthmus tasks; None when the DAG has none of them."""
    tasks = getattr(getattr(dag_run, "dag", None), "tasks", None)
    if not tasks:
        return (DEFAULT_CONN_ID,)  # cannot tell: closing a run that does not exist changes nothing
    ids = {_conn_id(t) for t in tasks if _is_isthmus_task(t)}
    if not ids:
        return None
    templated = {i for i in ids if "{{" in str(i)}
    if templated:  # rendered only in the task: the pipeline run in that store is closed by no one here
        log.info("isthmus: templated isthmus_conn_id %s; its pipeline runs are not closed at DAG run end", templated)
    return tuple(sorted(ids - templated)) or None


def _finish(dag_run: Any, status: EndStatus, msg: str | None) -> None:
    try:
        conn_ids = _conn_ids(dag_run)
        if conn_ids is None:
            return
        error = None if status == "COMPLETED" else f"the Airflow DAG run failed ({msg or 'no reason given'})"
        run_closer.submit(run_closer.RunEnd(str(dag_run.dag_id), str(dag_run.run_id), status, error, conn_ids))
    except Exception as exc:  # never disturb the scheduler
        log.warning("isthmus: could not queue the pipeline run close: %s: %s", type(exc).__name__, exc)


class _DagRunListener:
    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        _finish(dag_run, "COMPLETED", None)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        _finish(dag_run, "FAILED", msg)

    @hookimpl
    def before_stopping(self, component: Any) -> None:
        try:
            run_closer.flush(10)
        except Exception:  # a stopping component must stop
            pass


dag_run_listener = _DagRunListener()


class IsthmusPlugin(AirflowPlugin):
    """Registered under the ``airflow.plugins`` entry point and in the provider info."""

    name = "isthmus"
    listeners = [dag_run_listener]
    fastapi_apps = [{"app": LazyUIApp(), "url_prefix": URL_PREFIX, "name": "isthmus"}]
    external_views = isthmus_views()
    operator_extra_links = [IsthmusStepRunLink()]


__all__ = ["IsthmusPlugin", "dag_run_listener"]
