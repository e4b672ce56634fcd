"""Translate an Airflow task context into an isthmus ``RunContext`` and pipeline run."""

from __future__ import annotations

from typing import Any

from isthmus.context import RunContext, derived_run_id
from isthmus.records import PipelineRunRecord
from isthmus.redaction import safe_params


def run_context(context: Any, *, pipeline_name: str | None = None) -> RunContext:
    """dag_id, run_id, logical date, task_id, try_number and map_index of the running task instance."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    if map_index is None:
        map_index = -1
    logical_date = context.get("logical_date")
    native: dict[str, Any] = {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "try_number": ti.try_number,
        "map_index": map_index,
        "logical_date": logical_date.isoformat() if logical_date is not None else None,
    }
    return RunContext(
        orchestrator="airflow",
        pipeline_name=pipeline_name or ti.dag_id,
        pipeline_run_id=derived_run_id("airflow", ti.dag_id, ti.run_id),
        invocation=ti.task_id if map_index < 0 else f"{ti.task_id}[{map_index}]",
        attempt=int(ti.try_number or 1),
        native=native,
    )


def pipeline_run_row(ctx: RunContext, context: Any, project: str | None = None) -> PipelineRunRecord:
    """The pipeline run that stands for the Airflow DAG run (created once by whichever task is first);
    ``ctx`` from :func:`run_context`, which sets its pipeline run id and name; ``project`` from the
    isthmus connection (else the store's rule: ``ISTHMUS_PROJECT`` or ``default``)."""
    params = {}
    try:  # objects become typed placeholders, never their str()/repr(), which may show a password
        params = safe_params({str(k): v for k, v in dict(context.get("params") or {}).items()})
    except Exception:  # params are informational here
        params = {}
    row: PipelineRunRecord = {
        "id": str(ctx.pipeline_run_id),
        "pipeline": str(ctx.pipeline_name),
        "orchestrator": "airflow",
        "params": params,
        "context": {k: ctx.native[k] for k in ("dag_id", "run_id", "logical_date")},
    }
    if project:
        row["project"] = project
    return row
