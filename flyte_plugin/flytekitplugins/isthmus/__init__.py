"""The isthmus flytekit plugin: portable isthmus steps as Flyte tasks and workflows.

``import flytekit`` imports this package (entry point ``flytekit.plugins``): it loads no isthmus module
and never fails ``import flytekit``. It registers a stand-in connector for ``isthmus_slurm`` tasks
(:mod:`.registration`); the names below load their module (and the isthmus core) on first access, and
the task configs register their task classes with flytekit (``@task(task_config=Isthmus())`` builds an
:class:`IsthmusTask`).

    from flytekitplugins.isthmus import Isthmus, IsthmusCachePolicy, SlurmJob, isthmus_task

    train_task = isthmus_task(steps.train)          # a Flyte task from a step
    gpu_train = isthmus_task(steps.train, slurm=SlurmJob(partition="gpu"))  # the step as a Slurm job
    wf = steps.ml_pipeline.to_flyte_workflow()      # a Flyte workflow from a pipeline
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flytekitplugins.isthmus.cache import IsthmusCachePolicy
    from flytekitplugins.isthmus.config import Isthmus
    from flytekitplugins.isthmus.refs import load
    from flytekitplugins.isthmus.resolver import IsthmusTaskResolver, isthmus_task_resolver
    from flytekitplugins.isthmus.slurm import IsthmusSlurmConnector, IsthmusSlurmTask, SlurmJob
    from flytekitplugins.isthmus.task import IsthmusTask, isthmus_task
    from flytekitplugins.isthmus.transformer import ArtifactRefTransformer
    from flytekitplugins.isthmus.workflow import pipeline_to_workflow

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

try:  # one version for the three packages: the one of the distribution that ships them (pyproject.toml)
    __version__ = importlib.metadata.version("isthmus")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_log = logging.getLogger("flytekitplugins.isthmus")

_LAZY = {
    "ArtifactRefTransformer": "flytekitplugins.isthmus.transformer",
    "Isthmus": "flytekitplugins.isthmus.config",
    "IsthmusCachePolicy": "flytekitplugins.isthmus.cache",
    "IsthmusSlurmConnector": "flytekitplugins.isthmus.slurm",
    "IsthmusSlurmTask": "flytekitplugins.isthmus.slurm",
    "IsthmusTask": "flytekitplugins.isthmus.task",
    "IsthmusTaskResolver": "flytekitplugins.isthmus.resolver",
    "SlurmJob": "flytekitplugins.isthmus.slurm",
    "isthmus_task": "flytekitplugins.isthmus.task",
    "isthmus_task_resolver": "flytekitplugins.isthmus.resolver",
    "load": "flytekitplugins.isthmus.refs",
    "pipeline_to_workflow": "flytekitplugins.isthmus.workflow",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flytekitplugins.isthmus' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


try:
    from flytekitplugins.isthmus.registration import register_deferred_connector

    register_deferred_connector()
    if "isthmus.artifacts.refs" in sys.modules:  # the core is loaded already: make refs known to flytekit now
        from flytekitplugins.isthmus.transformer import ensure_registered

        ensure_registered()
except Exception as exc:  # never break `import flytekit`
    _log.warning("the isthmus flytekit plugin could not be registered: %s: %s", type(exc).__name__, exc)
