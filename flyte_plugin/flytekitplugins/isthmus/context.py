"""Flyte's execution context -> an isthmus :class:`~isthmus.context.RunContext` and pipeline run.

Every task of one Flyte execution derives the same pipeline run id from the execution id
(``derived_run_id("flyte", project, domain, name)``), so tasks running in separate pods record into one
pipeline run without talking to each other; the first creates it (race-safe).

Local executions all carry flytekit's placeholder id ``local:local:local``; there the run is keyed by
the top-level local workflow execution instead (a fresh key per ``wf(...)`` call). A task called on its
own, outside any workflow, records a step run with no pipeline run (like ``step.run()``).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from flytekit.core.context_manager import ExecutionState, FlyteContext, FlyteContextManager, flyte_context_Var

from isthmus import lineage, pipeline_runs
from isthmus.context import RunContext, derived_run_id
from isthmus.records import RunStatus
from isthmus.run_closing import reopen_pipeline_run, settle_pipeline_run

log = logging.getLogger("flytekitplugins.isthmus")

_LOCAL_ATTR = "_isthmus_local_run"


@dataclass
class FlyteRun:
    """Where one task execution belongs."""

    context: RunContext
    local: bool
    pipeline_context: dict[str, Any] = field(default_factory=dict)

    @property
    def pipeline_run_id(self) -> str | None:
        return self.context.pipeline_run_id


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


_ROOT_MODES = (
    ExecutionState.Mode.LOCAL_WORKFLOW_EXECUTION,
    ExecutionState.Mode.EAGER_LOCAL_EXECUTION,
    ExecutionState.Mode.LOCAL_DYNAMIC_TASK_EXECUTION,
)


def _local_root(stack: list[FlyteContext]) -> ExecutionState | None:
    """The execution state of the outermost local workflow (eager or dynamic) execution on the stack."""
    for c in stack:
        es = c.execution_state
        if es is not None and es.mode in _ROOT_MODES:
            return es
    return None


def _local_workflow_name() -> str | None:
    """The name of the outermost workflow (or dynamic task) being executed locally, from the call stack."""
    name = None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in ("local_execute", "async_execute"):  # async_execute: an eager workflow
            owner = frame.f_locals.get("self")
            owner_name = getattr(owner, "name", None)
            if isinstance(owner_name, str):
                name = owner_name  # keep walking: the outermost wins
        frame = frame.f_back  # type: ignore[assignment]  # None ends the walk
    return name


@functools.lru_cache(maxsize=256)
def _remote_run_id(project: str, domain: str, name: str) -> str:
    return derived_run_id("flyte", project, domain, name)


def _short(name: str | None) -> str | None:
    """``project:domain:name`` -> ``name``."""
    return name.rsplit(":", 1)[-1] if name else name


def remote_pipeline(
    native: dict[str, Any], workflow: str | None, launch_plan: str | None, pipeline: str | None, task_name: str
) -> tuple[str, str, dict[str, Any]]:
    """The pipeline run id, pipeline name and pipeline context of a task in a Flyte execution (not
    local); adds the workflow and launch plan to ``native`` (which holds the execution's ids)."""
    native.update(workflow=workflow, launch_plan=launch_plan)
    run_id = _remote_run_id(native["project"], native["domain"], native["execution_name"])
    keys = ("execution_id", "project", "domain", "execution_name", "workflow", "launch_plan")
    return run_id, pipeline or _short(workflow) or task_name, {k: native[k] for k in keys}


def flyte_run(task_name: str, pipeline: str | None, invocation: str | None) -> FlyteRun:
    """The RunContext of the task now executing, and the pipeline run it belongs to."""
    ctx = FlyteContextManager.current_context()
    es = ctx.execution_state
    params = ctx.user_space_params
    exe = params.execution_id if params is not None else None
    tid = params.task_id if params is not None else None
    project, domain, name = (exe.project, exe.domain, exe.name) if exe is not None else ("local", "local", "local")
    local = es is None or es.is_local_execution()
    retry = int(_env("FLYTE_ATTEMPT_NUMBER") or 0) if not local else 0
    native: dict[str, Any] = {
        "execution_id": f"{project}:{domain}:{name}",
        "project": project,
        "domain": domain,
        "execution_name": name,
        "task_name": (tid.name if tid is not None and not local else None) or task_name,
        "task_version": tid.version if tid is not None else None,
        "retry_attempt": retry,
    }
    pipeline_context: dict[str, Any] = {}
    run_id: str | None = None
    if local:
        root = _local_root(flyte_context_Var.get())
        if root is not None:
            info = getattr(root, _LOCAL_ATTR, None)
            if info is None:
                key = uuid.uuid4().hex
                info = {"key": key, "workflow": _local_workflow_name(), "run_id": derived_run_id("flyte", "local", key)}
                object.__setattr__(root, _LOCAL_ATTR, info)
            native["local_execution"] = info["key"]
            run_id = info["run_id"]
            pipeline = pipeline or info["workflow"] or task_name
            pipeline_context = {
                "execution_id": native["execution_id"],
                "local_execution": info["key"],
                "workflow": info["workflow"],
            }
    else:
        workflow = _env("FLYTE_INTERNAL_EXECUTION_WORKFLOW", "_F_WF")
        launch_plan = _env("FLYTE_INTERNAL_EXECUTION_LAUNCHPLAN", "_F_LP")
        run_id, pipeline, pipeline_context = remote_pipeline(native, workflow, launch_plan, pipeline, task_name)
    run_ctx = RunContext(
        orchestrator="flyte",
        pipeline_name=pipeline if run_id else None,
        pipeline_run_id=run_id,
        invocation=invocation,
        attempt=retry + 1,
        native=native,
    )
    return FlyteRun(context=run_ctx, local=local, pipeline_context=pipeline_context)


def ensure_pipeline_run(runner: Any, run: FlyteRun, code: Any) -> None:
    """Create the run's pipeline run once (whichever task gets there first); emit its lineage start."""
    if run.pipeline_run_id is None:
        return
    pipeline_runs.ensure_pipeline_run(
        runner, run.pipeline_run_id, run.context.pipeline_name or "?", "flyte", run.pipeline_context, code
    )


def finish_pipeline_run(
    runner: Any,
    run_id: str,
    status: RunStatus,
    *,
    outputs: Any = None,
    error: str | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """Finish a pipeline run and emit its lineage end."""
    store = runner.metadata
    store.finish_pipeline_run(run_id, status, outputs=outputs, error=error, params=params)
    try:
        record = store.get_run(run_id)
    except Exception:
        record = {"id": run_id}
    lineage.emit("on_pipeline_end", {**record, "status": status, "outputs": outputs, "error": error})


def reopen_run(runner: Any, run_id: str) -> None:
    """A task of a hand-written workflow starts: its run is RUNNING (an earlier task may have settled it)."""
    try:
        reopen_pipeline_run(runner.metadata, run_id)
    except Exception as exc:  # bookkeeping never fails a step
        log.warning("isthmus: could not reopen pipeline run %s: %s: %s", run_id, type(exc).__name__, exc)


def settle_run(runner: Any, run_id: str) -> None:
    """A task of a hand-written workflow ended: close its run with the status derived from its step runs
    (:mod:`isthmus.run_closing`), unless another task of it still runs."""
    try:
        settle_pipeline_run(runner.metadata, run_id)
    except Exception as exc:  # bookkeeping never fails a step
        log.warning("isthmus: could not settle pipeline run %s: %s: %s", run_id, type(exc).__name__, exc)
