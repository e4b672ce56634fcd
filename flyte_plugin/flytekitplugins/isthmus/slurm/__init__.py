"""An isthmus step as a Slurm job from Flyte: the ``SlurmJob`` task config and its async connector.

    train_task = isthmus_task(steps.train, slurm=SlurmJob(partition="gpu"))

- :mod:`.task`: :class:`SlurmJob` (the task config) and :class:`IsthmusSlurmTask` (task type
  ``isthmus_slurm``);
- :mod:`.connector`: :class:`IsthmusSlurmConnector` (create / get / delete) and :func:`register`;
- :mod:`.phases`: Flyte phases of Slurm states, derived from :mod:`isthmus.slurm.states`;
- :mod:`.values`: the run, the step's arguments and its output literals, in Flyte's terms.

Outputs are the step's artifact refs in the same literal form an :class:`IsthmusTask` produces (small
values as plain literals with their ref in the literal metadata), so a downstream isthmus task receives
the ref and a plain Flyte task the value.

Importing it registers the connector with flytekit (``import flytekit`` registers a stand-in that
loads this package on its first call: :mod:`flytekitplugins.isthmus.registration`).
"""

from __future__ import annotations

from flytekitplugins.isthmus.slurm.connector import IsthmusSlurmConnector, SlurmStepMeta, register
from flytekitplugins.isthmus.slurm.phases import INITIALIZING_STATES, QUEUED_STATES, RUNNING_STATES, flyte_phase
from flytekitplugins.isthmus.slurm.task import TASK_TYPE, IsthmusSlurmTask, SlurmJob
from flytekitplugins.isthmus.slurm.values import run_from_metadata

register()  # local executions (and a connector service) serve isthmus_slurm tasks with this connector

__all__ = [
    "INITIALIZING_STATES",
    "QUEUED_STATES",
    "RUNNING_STATES",
    "TASK_TYPE",
    "IsthmusSlurmConnector",
    "IsthmusSlurmTask",
    "SlurmJob",
    "SlurmStepMeta",
    "flyte_phase",
    "register",
    "run_from_metadata",
]
