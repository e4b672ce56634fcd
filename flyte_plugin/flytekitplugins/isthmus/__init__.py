"""The isthmus flytekit plugin: portable isthmus steps as Flyte tasks and workflows.

``import flytekit`` imports this package (entry point ``flytekit.plugins``), which registers the
``Isthmus`` task config so ``@task(task_config=Isthmus())`` builds an :class:`IsthmusTask`. The import
stays light — the isthmus core loads on first use — and never fails ``import flytekit``.

    from flytekitplugins.isthmus import Isthmus, IsthmusCachePolicy, SlurmJob, isthmus_task

    train_task = isthmus_task(steps.train)          # a Flyte task from a step
    gpu_train = isthmus_task(steps.train, slurm=SlurmJob(partition="gpu"))  # the step as a Slurm job
    wf = steps.ml_pipeline.to_flyte_workflow()      # a Flyte workflow from a pipeline
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = [
    "ArtifactRefTransformer",
    "Isthmus",
    "IsthmusCachePolicy",
    "IsthmusSlurmConnector",
    "IsthmusSlurmTask",
    "IsthmusTask",
    "IsthmusTaskResolver",
    "SlurmJob",
    "isthmus_task",
    "isthmus_task_resolver",
    "load",
    "pipeline_to_workflow",
]

_log = logging.getLogger("flytekitplugins.isthmus")

_LAZY = {
    "ArtifactRefTransformer": "flytekitplugins.isthmus.transformer",
    "IsthmusCachePolicy": "flytekitplugins.isthmus.cache",
    "IsthmusSlurmConnector": "flytekitplugins.isthmus.slurm",
    "IsthmusSlurmTask": "flytekitplugins.isthmus.slurm",
    "SlurmJob": "flytekitplugins.isthmus.slurm",
    "IsthmusTaskResolver": "flytekitplugins.isthmus.resolver",
    "isthmus_task_resolver": "flytekitplugins.isthmus.resolver",
    "pipeline_to_workflow": "flytekitplugins.isthmus.workflow",
}

try:
    from flytekit.core.task import TaskPlugins

    from flytekitplugins.isthmus.config import Isthmus
    from flytekitplugins.isthmus.slurm import IsthmusSlurmTask, SlurmJob
    from flytekitplugins.isthmus.slurm import register as _register_slurm_connector
    from flytekitplugins.isthmus.task import IsthmusTask, isthmus_task

    TaskPlugins.register_pythontask_plugin(Isthmus, IsthmusTask)
    TaskPlugins.register_pythontask_plugin(SlurmJob, IsthmusSlurmTask)
    _register_slurm_connector()  # the connector service (and local executions) serve isthmus_slurm tasks
    if "isthmus.artifacts.refs" in sys.modules:  # the core is loaded already: make refs known to flytekit now
        from flytekitplugins.isthmus.transformer import ensure_registered

        ensure_registered()
except Exception as exc:  # never break `import flytekit`
    _log.warning("the isthmus flytekit plugin could not be registered: %s: %s", type(exc).__name__, exc)


def load(ref: Any) -> Any:
    """The value behind an isthmus ``ArtifactRef`` (or its dict/JSON), from the configured artifact store."""
    from isthmus import defaults
    from isthmus.artifacts.refs import ArtifactRef

    coerced = ArtifactRef.coerce(ref)
    if coerced is None:
        raise TypeError(f"{ref!r} is not an isthmus ArtifactRef")
    return defaults.artifact_store().load(coerced)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flytekitplugins.isthmus' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
