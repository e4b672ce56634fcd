"""Pipeline-run rows: the one a pipeline run starts with, how it ends, and a step run outside any pipeline
recorded under a pipeline run of its own (named after the step, orchestrator ``local``), so ``isthmus
runs list``, ``runs show`` and ``isthmus diff`` see it like any other run."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from isthmus import lineage
from isthmus.context import RunContext
from isthmus.errors import StepFailed
from isthmus.records import PipelineRunRecord, RunStatus
from isthmus.redaction import safe_params, scrub, secret_values
from isthmus.runner import StepResult, StepRunner, default_runner
from isthmus.step import Step, _main_module_name

PIPELINE_PATH_KEY = "pipeline_path"  # a pipeline run's context: ``module:attr`` of its pipeline object


def importable_path(fn: Any) -> str | None:
    """``module:qualname`` another process can import ``fn`` (a pipeline's function) from, or None
    (defined inside a function, or in a script run as ``python script.py``)."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module == "__main__":
        module = _main_module_name()
    if not module or not qualname or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def start_pipeline_run(
    runner: StepRunner,
    name: str,
    ctx: RunContext,
    params: Mapping[str, Any],
    code: Any,
    secrets: Iterable[str] = (),
    *,
    pipeline_path: str | None = None,
) -> PipelineRunRecord:
    """Record (and announce to lineage) a new RUNNING pipeline run; ``code``: a function of the project,
    whose module's environment is snapshotted; ``pipeline_path``: where the pipeline object is imported
    from (``module:attr``, kept in the run's context so ``isthmus rerun`` can find it)."""
    context = json.loads(json.dumps(ctx.native, default=str))
    if pipeline_path:
        context[PIPELINE_PATH_KEY] = pipeline_path
    record: PipelineRunRecord = {
        "id": str(uuid.uuid4()),
        "pipeline": name,
        "orchestrator": ctx.orchestrator,
        "params": safe_params(params, secrets),
        "context": context,
        "user": _user(),
        "host": socket.gethostname(),
        "environment_hash": runner.environment_hash(code),
    }
    runner.metadata.create_pipeline_run(record)
    lineage.emit("on_pipeline_start", record)
    return record


_ensured: dict[tuple[str, str], None] = {}  # (store url, run id) already ensured by this process


def ensure_pipeline_run(
    runner: StepRunner, run_id: str, name: str, orchestrator: str, context: Mapping[str, Any], code: Any
) -> None:
    """Record the pipeline run ``run_id`` once, whichever task of an orchestrator's run gets there first
    (remembered per process and store), and announce it to lineage when this call created it."""
    memo = (runner.metadata.url, run_id)
    if memo in _ensured:
        return
    row: PipelineRunRecord = {
        "id": run_id,
        "pipeline": name,
        "orchestrator": orchestrator,
        "context": json.loads(json.dumps(context, default=str)),
        "params": {},
        "user": _user(),
        "host": socket.gethostname(),
        "environment_hash": runner.environment_hash(code),
    }
    if runner.metadata.ensure_pipeline_run(row):
        lineage.emit("on_pipeline_start", row)
    if len(_ensured) > 4096:
        _ensured.clear()
    _ensured[memo] = None


def fail_pipeline_run(
    runner: StepRunner,
    record: PipelineRunRecord,
    exc: BaseException,
    secrets: Iterable[str] = (),
    params: dict[str, Any] | None = None,
) -> None:
    """End a pipeline run that ``exc`` stopped: FAILED for an error, ABORTED for an interruption."""
    status = RunStatus.FAILED if isinstance(exc, Exception) else RunStatus.ABORTED
    error = scrub(f"{type(exc).__name__}: {exc}", secrets)
    runner.metadata.finish_pipeline_run(record["id"], status, error=error, params=params)
    lineage.emit("on_pipeline_end", {**record, "status": status, "error": error})
    if isinstance(exc, StepFailed):
        exc.pipeline_run_id = record["id"]  # type: ignore[attr-defined]


def complete_pipeline_run(
    runner: StepRunner, record: PipelineRunRecord, outputs: Any, params: dict[str, Any] | None = None
) -> None:
    """End a pipeline run COMPLETED with ``outputs`` (JSON); ``params`` when they were not known at the start."""
    runner.metadata.finish_pipeline_run(record["id"], RunStatus.COMPLETED, outputs=outputs, params=params)
    lineage.emit("on_pipeline_end", {**record, "status": RunStatus.COMPLETED, "outputs": outputs})


def run_alone(
    step: Step[Any, Any], arguments: Mapping[str, Any], *, recompute: bool = False, runner: StepRunner | None = None
) -> StepResult:
    """Run ``step`` outside any pipeline (``step.run(...)``), under a pipeline run of its own. The run's
    parameters are the step run's, as the runner recorded them (secrets as ``***``)."""
    runner = runner or default_runner()
    record = start_pipeline_run(runner, step.name, RunContext(orchestrator="local"), {}, step.fn)
    ctx = RunContext(orchestrator="local", pipeline_name=step.name, pipeline_run_id=record["id"], invocation=step.name)
    try:
        result = runner.run(step, arguments, ctx, recompute=recompute)
    except BaseException as exc:
        failed_run = getattr(exc, "step_run_id", None) if isinstance(exc, StepFailed) else None
        params = _recorded_params(runner, failed_run) if failed_run else None
        fail_pipeline_run(runner, record, exc, secret_values(arguments), params)
        arguments = None  # type: ignore[assignment]  # noqa: F841 - not shown by locals-printing formatters
        raise
    params = _recorded_params(runner, result.step_run_id)
    complete_pipeline_run(runner, record, {k: v.to_dict() for k, v in result.outputs.items()}, params)
    return result


def _recorded_params(runner: StepRunner, step_run_id: str) -> dict[str, Any]:
    return dict(runner.metadata.get_step_run(step_run_id).get("params") or {})


def _user() -> str | None:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return os.environ.get("USER")
