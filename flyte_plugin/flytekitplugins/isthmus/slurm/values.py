"""What the Slurm connector turns into and out of Flyte's terms: the run of a task it was asked to run
(from the task execution metadata), the step's arguments from input literals and its outputs as literals
(the same literal form an :class:`~flytekitplugins.isthmus.task.IsthmusTask` produces)."""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from flytekit.core.context_manager import FlyteContextManager
from flytekit.models.literals import LiteralMap

from flytekitplugins.isthmus.context import FlyteRun, remote_pipeline
from flytekitplugins.isthmus.task import step_interface
from flytekitplugins.isthmus.transformer import REF_METADATA_KEY, ensure_registered, is_small_type, ref_from_literal
from isthmus.context import RunContext

if TYPE_CHECKING:
    from flytekit.models.task import TaskExecutionMetadata

    from flytekitplugins.isthmus.context import FlyteRun
    from isthmus.step import Step


def run_from_metadata(
    task_name: str, pipeline: str | None, invocation: str | None, tem: TaskExecutionMetadata | None
) -> FlyteRun:
    """The run of a task the connector service was asked to run — the same pipeline run id, invocation
    and attempt :func:`flytekitplugins.isthmus.context.flyte_run` gives a task running in its own pod."""
    tid = getattr(tem, "task_execution_id", None)
    if tid is None:  # asked directly, outside any execution: a step run without a pipeline run
        native: dict[str, Any] = {"task_name": task_name, "retry_attempt": 0}
        ctx = RunContext(orchestrator="flyte", invocation=invocation, attempt=1, native=native)
        return FlyteRun(context=ctx, local=False)
    exe = tid.node_execution_id.execution_id
    project, domain, name = exe.project, exe.domain, exe.name
    retry = int(tid.retry_attempt or 0)
    env = dict(getattr(tem, "environment_variables", None) or {})
    labels = dict(getattr(tem, "labels", None) or {})
    workflow = env.get("FLYTE_INTERNAL_EXECUTION_WORKFLOW") or env.get("_F_WF") or labels.get("workflow-name")
    launch_plan = env.get("FLYTE_INTERNAL_EXECUTION_LAUNCHPLAN") or env.get("_F_LP")
    native = {
        "execution_id": f"{project}:{domain}:{name}",
        "project": project,
        "domain": domain,
        "execution_name": name,
        "task_name": (tid.task_id.name if tid.task_id is not None else None) or task_name,
        "task_version": tid.task_id.version if tid.task_id is not None else None,
        "retry_attempt": retry,
    }
    run_id, pipeline, pipeline_context = remote_pipeline(native, workflow, launch_plan, pipeline, task_name)
    ctx = RunContext(
        orchestrator="flyte",
        pipeline_name=pipeline,
        pipeline_run_id=run_id,
        invocation=invocation,
        attempt=retry + 1,
        native=native,
    )
    return FlyteRun(context=ctx, local=False, pipeline_context=pipeline_context)


# -- literals <-> step values ----------------------------------------------------------------------
def _interface(step: Step[Any, Any], options: dict[str, Any]) -> Any:
    ensure_registered()
    return step_interface(step, tuple(options.get("ref_inputs") or ()), tuple(options.get("ref_outputs") or ()))


async def step_arguments(step: Step[Any, Any], options: dict[str, Any], inputs: LiteralMap | None) -> dict[str, Any]:
    """The step's arguments from the task's input literals: a literal carrying an artifact ref is that
    ref (as in :class:`IsthmusTask`), any other literal its Python value."""
    from flytekit.core.type_engine import TypeEngine

    types = _interface(step, options).inputs
    ctx = FlyteContextManager.current_context()
    kwargs: dict[str, Any] = {}
    for name, lv in (inputs.literals if inputs is not None else {}).items():
        ref = ref_from_literal(lv)
        if ref is not None:
            kwargs[name] = ref
        elif name in types:
            kwargs[name] = await TypeEngine.async_to_python_value(ctx, lv, types[name])
        else:
            raise ValueError(f"step {step.name!r} has no parameter {name!r} (task inputs: {sorted(types)})")
    positional = [
        kwargs.pop(n)
        for n, p in step.signature.parameters.items()
        if p.kind is inspect.Parameter.POSITIONAL_ONLY and n in kwargs
    ]
    return step.bind(positional, kwargs)


async def output_literals(
    step: Step[Any, Any], options: dict[str, Any], refs: dict[str, Any], runner: Any
) -> LiteralMap:
    """The outputs as an :class:`IsthmusTask` returns them: small values as plain literals, everything
    else as ArtifactRef literals — each with its artifact ref in the literal's metadata."""
    from flytekit.core.type_engine import TypeEngine

    ctx = FlyteContextManager.current_context()
    literals = {}
    for name, tp in _interface(step, options).outputs.items():
        ref = refs.get(name)
        if ref is None:
            raise ValueError(f"step {step.name!r}: the run produced no output {name!r} (got {sorted(refs)})")
        value = await asyncio.to_thread(runner.artifacts.load, ref) if is_small_type(tp) else ref
        lv = await TypeEngine.async_to_literal(ctx, value, tp, TypeEngine.to_literal_type(tp))
        lv.set_metadata({**(lv.metadata or {}), REF_METADATA_KEY: ref.to_json()})
        literals[name] = lv
    return LiteralMap(literals)
