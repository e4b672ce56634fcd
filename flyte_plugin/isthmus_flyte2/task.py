"""``isthmus_task(step, env=flyte.TaskEnvironment(...))``: a step as a Flyte 2 task of ``env``.

The task is an ordinary ``env.task`` (Flyte 2's plugin registry, ``TaskPluginRegistry``, is for task
*types* configured per environment, such as Ray or Spark; an isthmus step is a plain Python task): its
function has the step's signature, with small JSON-like values as themselves and everything else as an
``ArtifactRef``, and its body hands the arguments to :meth:`isthmus.runner.StepRunner.run` — the path a
local, Airflow or flytekit run takes — so caching, recording, retries and lineage are the core's. It is
synchronous (Flyte 2 runs it in a thread): call it as ``train(...)`` from a sync task and as
``await train.aio(...)`` from an async one.

The task resolves in a container through :class:`~isthmus_flyte2.resolver.IsthmusResolver`, which
rebuilds it from the step's import path.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from isthmus.errors import StepDefinitionError
from isthmus.runner import default_runner
from isthmus.step import Step, as_step
from isthmus.step_summary import log_step_summary, summary_logger
from isthmus_flyte2.context import ensure_pipeline_run, flyte2_run, reopen_run, settle_run
from isthmus_flyte2.resources import flyte2_resources, pod_template, timeout_for
from isthmus_flyte2.types import is_small_type, step_signature

SUMMARY_LOGGER = "isthmus_flyte2.summary"  # one INFO line per task: silence it with setLevel(WARNING)
log = logging.getLogger("isthmus_flyte2")


def _execute(step: Step[Any, Any], arguments: dict[str, Any], task_name: str, pipeline: str, small: list[bool]) -> Any:
    runner = default_runner()
    run = flyte2_run(task_name, pipeline, step.name)
    ensure_pipeline_run(runner, run, step.fn)
    if run.pipeline_run_id:
        reopen_run(runner, run.pipeline_run_id)
    positional = [
        arguments.pop(n) for n, p in step.signature.parameters.items() if p.kind is inspect.Parameter.POSITIONAL_ONLY
    ]
    bound = step.bind(positional, arguments)
    try:
        result = runner.run(step, bound, run.context)
    except BaseException as exc:
        if run.pipeline_run_id:
            settle_run(runner, run.pipeline_run_id)
        ended = "failed" if isinstance(exc, Exception) else "aborted"
        summary_logger(SUMMARY_LOGGER).info("isthmus %s: %s; run %s", step.name, ended, run.pipeline_run_id or "-")
        bound = arguments = None  # type: ignore[assignment]  # noqa: F841 - not shown by locals-printing formatters
        raise
    if run.pipeline_run_id:
        settle_run(runner, run.pipeline_run_id)
    log_step_summary(SUMMARY_LOGGER, runner.metadata, result, run.pipeline_run_id)
    values = [
        runner.artifacts.load(result.outputs[name]) if is_small else result.outputs[name]
        for name, is_small in zip(step.output_names, small, strict=True)
    ]
    return values[0] if len(values) == 1 else tuple(values)


def task_function(step: Step[Any, Any], task_name: str, pipeline: str) -> Any:
    """A function with the step's Flyte 2 signature whose body runs the step through the StepRunner."""
    signature, annotations, outputs = step_signature(step)
    small = [is_small_type(t) for t in outputs]

    def isthmus_step(*args: Any, **kwargs: Any) -> Any:
        arguments = dict(signature.bind(*args, **kwargs).arguments)
        return _execute(step, arguments, task_name, pipeline, small)

    isthmus_step.__signature__ = signature  # type: ignore[attr-defined]
    isthmus_step.__annotations__ = annotations
    isthmus_step.__name__ = step.fn.__name__
    isthmus_step.__qualname__ = step.fn.__qualname__
    isthmus_step.__module__ = step.module
    isthmus_step.__doc__ = step.fn.__doc__
    return isthmus_step


def isthmus_task(
    step: Any,
    *,
    env: Any,
    pipeline: str | None = None,
    cache: Any = "disable",
    retries: int = 0,
    **task_kwargs: Any,
) -> Any:
    """A Flyte 2 task of ``env`` (a ``flyte.TaskEnvironment``) running ``step`` (a ``@step`` or a function).

    - ``pipeline``: the name of the isthmus pipeline run its Flyte 2 run records into (default: the
      environment's name).
    - ``cache``: isthmus caches through its own store (hits recorded and shared with local, Airflow and
      flytekit runs); Flyte's own cache stays off (``"disable"``) because a Flyte cache hit skips the
      task and isthmus would record nothing. Pass a Flyte ``cache=`` to turn it on anyway.
    - ``retries``: Flyte retries (a lost container); the step's own ``retries`` run inside the task.
    - The step's ``Resources`` become the task's ``flyte.Resources`` (requests = limits), GPU device,
      disk, pod template (node selector) and timeout; explicit ``resources``/``pod_template``/``timeout``
      win. Any other keyword goes to ``env.task`` (``short_name``, ``report``, ``interruptible`` …).
    """
    import flyte

    from isthmus_flyte2.resolver import IsthmusResolver

    if not isinstance(env, flyte.TaskEnvironment):
        raise TypeError(f"env={env!r} must be a flyte.TaskEnvironment(...)")
    s = as_step(step)
    where = f"step {s.name!r}"
    pipeline = pipeline or env.name
    task_name = f"{env.name}.{s.fn.__name__}"
    if task_name in env.tasks:
        raise StepDefinitionError(
            f"{where}: environment {env.name!r} already has a task {task_name!r}; give the step another "
            "function name or use another environment"
        )
    resources = task_kwargs.pop("resources", None) or flyte2_resources(s.resources, where)
    timeout = task_kwargs.pop("timeout", None) or timeout_for(s.resources) or 0
    template = task_kwargs.pop("pod_template", None) or pod_template(s.resources, where)
    fn = task_function(s, task_name, pipeline)
    options: dict[str, Any] = {
        "short_name": task_kwargs.pop("short_name", s.name),
        "cache": cache,
        "retries": retries,
        "timeout": timeout,
        "pod_template": template,
        "task_resolver": IsthmusResolver(),
        **task_kwargs,
    }
    task: Any = env.task(**options)(fn)
    if resources is not None:
        task = task.override(resources=resources)
        env._tasks[task_name] = task  # the environment deploys the task with its resources
    task.isthmus_step = s  # what the resolver rebuilds it from
    task.isthmus_pipeline = pipeline
    return task
