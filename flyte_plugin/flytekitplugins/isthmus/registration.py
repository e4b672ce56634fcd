"""What ``import flytekit`` registers (entry point ``flytekit.plugins``), without loading the isthmus core.

``import flytekit`` imports this plugin in every process, so the plugin registers a stand-in connector for
``isthmus_slurm`` tasks: :class:`DeferredSlurmConnector` imports :mod:`flytekitplugins.isthmus.slurm` (and
with it the core) on its first call, which replaces it with the real
:class:`~flytekitplugins.isthmus.slurm.IsthmusSlurmConnector`. A Flyte cluster's connector service thus
serves isthmus Slurm tasks with no extra ``--modules``.

The task configs register their task classes where the classes are defined (the bottom of
:mod:`.task` and :mod:`.slurm.task`); ``Isthmus()`` loads :mod:`.task` when it is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flytekit.extend.backend.base_connector import AsyncConnectorBase, ConnectorRegistry, ResourceMeta, TaskCategory

TASK_TYPE = "isthmus_slurm"
CONNECTOR_NAME = "Isthmus Slurm Connector"


@dataclass
class SlurmStepMeta(ResourceMeta):
    """What the connector keeps between ``create`` and ``get``/``delete`` (JSON; no credentials).

    A cache hit has no ``job``: its ``outputs`` (artifact refs) are the result.
    """

    step: str
    step_name: str
    task_name: str
    options: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    step_run_id: str | None = None
    source_step_run_id: str | None = None
    pipeline_run_id: str | None = None  # a run this task settles as it ends (isthmus.run_closing)

    @property
    def job_id(self) -> str | None:
        return (self.job or {}).get("job_id") or None


class DeferredSlurmConnector(AsyncConnectorBase):
    """Stands in for the ``isthmus_slurm`` connector until its first call, which loads the real one."""

    name = CONNECTOR_NAME

    def __init__(self) -> None:
        super().__init__(task_type_name=TASK_TYPE, metadata_type=SlurmStepMeta)

    @staticmethod
    def _real() -> AsyncConnectorBase:
        # start-up cost: the connector module loads the isthmus core, which `import flytekit` must not
        from flytekitplugins.isthmus.slurm import register

        return register()

    async def create(self, *args: Any, **kwargs: Any) -> Any:
        return await self._real().create(*args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        return await self._real().get(*args, **kwargs)

    async def delete(self, *args: Any, **kwargs: Any) -> Any:
        return await self._real().delete(*args, **kwargs)


def register_deferred_connector() -> None:
    """Register :class:`DeferredSlurmConnector` unless a connector for ``isthmus_slurm`` is registered."""
    if TaskCategory(TASK_TYPE) not in ConnectorRegistry._REGISTRY:
        ConnectorRegistry.register(DeferredSlurmConnector())
