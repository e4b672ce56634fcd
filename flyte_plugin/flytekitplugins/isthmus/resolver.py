"""The task resolver a Flyte container uses to rebuild an isthmus task.

flytekit's default resolver imports the module a task's function lives in and takes the attribute of
that name. A task built from a step in *another* module (``train_task = isthmus_task(steps.train)``, or
the per-node tasks of ``Pipeline.to_flyte_workflow()``) is not that attribute: the attribute is the
step. So the serialized command carries the step's import path and the few options the task was built
with, and this resolver rebuilds the same task from them::

    pyflyte-execute ... --resolver flytekitplugins.isthmus.resolver.isthmus_task_resolver \\
        -- step dags_examples.steps:train options {"name":"...","pipeline":"ml_pipeline",...}

Bookkeeping tasks of a pipeline workflow are rebuilt from the pipeline's import path::

    -- pipeline dags_examples.steps:ml_pipeline role finish options {"name":"..."}
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from flytekit.configuration import SerializationSettings
from flytekit.core.base_task import Task, TaskResolverMixin
from flytekit.core.tracker import TrackedInstance

from flytekitplugins.isthmus.config import Isthmus
from isthmus.step import load_step

LOCATION = "flytekitplugins.isthmus.resolver.isthmus_task_resolver"


def _import(path: str) -> Any:
    module_name, sep, qualname = path.partition(":")
    if not sep:
        raise ValueError(f"{path!r} must look like 'package.module:name'")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class IsthmusTaskResolver(TrackedInstance, TaskResolverMixin):
    """Rebuilds isthmus tasks inside a Flyte container from their step (or pipeline) import path."""

    def name(self) -> str:
        return "IsthmusTaskResolver"

    @property
    def location(self) -> str:
        return LOCATION

    def loader_args(self, settings: SerializationSettings, t: Task) -> list[str]:
        resolver_args = getattr(t, "resolver_args", None)
        if resolver_args is None:
            raise TypeError(f"{t!r} is not an isthmus task; the isthmus resolver cannot serialize it")
        return resolver_args()

    def load_task(self, loader_args: list[str]) -> Task:
        # a cycle: tasks carry this resolver (task.py imports this module), and it rebuilds tasks
        from flytekitplugins.isthmus.task import IsthmusTask, isthmus_task

        args = list(loader_args)
        if len(args) % 2:
            raise ValueError(f"isthmus resolver: malformed loader args {args!r}")
        fields = dict(zip(args[::2], args[1::2], strict=True))
        options = json.loads(fields.get("options") or "{}")
        if "step" in fields:
            obj = _import(fields["step"])
            if isinstance(obj, IsthmusTask):  # @task(task_config=Isthmus()) at module level
                return obj

            step = load_step(fields["step"])
            config = Isthmus.from_options(options)
            return isthmus_task(
                step,
                name=options.get("name"),
                task_config=config,
                enable_deck=bool(options.get("enable_deck")) or None,
            )
        if "pipeline" in fields:
            from flytekitplugins.isthmus.workflow import control_task  # a cycle, as for the task module

            return control_task(_import(fields["pipeline"]), fields.get("role", ""), options)
        raise ValueError(f"isthmus resolver: loader args {args!r} name neither a step nor a pipeline")

    def get_all_tasks(self) -> list[Task]:
        return []


isthmus_task_resolver = IsthmusTaskResolver()
