"""The isthmus Airflow plugin: a listener that closes the isthmus pipeline run when its DAG run ends."""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)
_OPERATOR_TYPES = {"StepOperator", "_IsthmusDecoratedOperator"}


def _uses_isthmus(dag_run: Any) -> bool:
    dag = getattr(dag_run, "dag", None)
    tasks = getattr(dag, "tasks", None)
    if not tasks:
        return True  # cannot tell: finishing a run that does not exist changes nothing
    return any(getattr(t, "task_type", type(t).__name__) in _OPERATOR_TYPES for t in tasks)


def _finish(dag_run: Any, status: str, msg: str | None) -> None:
    if not _uses_isthmus(dag_run):
        return
    try:
        from isthmus.context import derived_run_id
        from isthmus_airflow.hooks.isthmus import IsthmusHook

        run_id = derived_run_id("airflow", dag_run.dag_id, dag_run.run_id)
        meta = IsthmusHook().get_conn().metadata
        meta.finish_pipeline_run(run_id, status, error=msg if status != "COMPLETED" else None)
    except Exception as exc:  # never disturb the scheduler
        log.warning("isthmus: could not close pipeline run of %s/%s: %s", dag_run.dag_id, dag_run.run_id, exc)


class _DagRunListener:
    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        _finish(dag_run, "COMPLETED", None)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        _finish(dag_run, "FAILED", msg or "DAG run failed")


dag_run_listener = _DagRunListener()


class IsthmusPlugin(AirflowPlugin):
    """Registered under the ``airflow.plugins`` entry point and in the provider info."""

    name = "isthmus"
    listeners = [dag_run_listener]


__all__ = ["IsthmusPlugin", "dag_run_listener"]
