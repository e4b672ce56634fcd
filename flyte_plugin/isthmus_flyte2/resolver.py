"""Rebuilds an isthmus Flyte 2 task inside a container from the step's import path.

Flyte 2's default resolver imports ``<function module>.<function name>``, which for an isthmus task
is the ``@step`` object, not the task. This resolver's loader args are
``["step", "<module>:<qualname>", "env", "<environment name>", "pipeline", "<pipeline>"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isthmus.errors import StepDefinitionError
from isthmus.step import load_step


class IsthmusResolver:
    """A ``flyte`` task resolver (``import_path``, ``loader_args``, ``load_task``)."""

    @property
    def import_path(self) -> str:
        return "isthmus_flyte2.resolver.IsthmusResolver"

    def loader_args(self, task: Any, root_dir: Path | None = None) -> list[str]:
        step = getattr(task, "isthmus_step", None)
        if step is None:
            raise StepDefinitionError(f"task {getattr(task, 'name', task)!r} is not an isthmus Flyte 2 task")
        step.check_importable()
        env = task.parent_env_name or task.name.rsplit(".", 1)[0]
        return ["step", step.import_path, "env", env, "pipeline", task.isthmus_pipeline]

    def load_task(self, loader_args: list[str]) -> Any:
        import flyte

        from isthmus_flyte2.task import isthmus_task

        args = list(loader_args)
        if len(args) != 6 or args[0::2] != ["step", "env", "pipeline"]:
            raise ValueError(f"isthmus Flyte 2 resolver: unexpected loader args {args!r}")
        step = load_step(args[1])
        return isthmus_task(step, env=flyte.TaskEnvironment(name=args[3]), pipeline=args[5])
