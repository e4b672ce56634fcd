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

This package stays light at import (``import flytekit`` imports it): the isthmus core loads on first use.
"""

from __future__ import annotations

from typing import Any

from flytekitplugins.isthmus.slurm.connector import IsthmusSlurmConnector, SlurmStepMeta, register
from flytekitplugins.isthmus.slurm.phases import flyte_phase
from flytekitplugins.isthmus.slurm.task import TASK_TYPE, IsthmusSlurmTask, SlurmJob
from flytekitplugins.isthmus.slurm.values import run_from_metadata

_PHASE_SETS = ("INITIALIZING_STATES", "QUEUED_STATES", "RUNNING_STATES")


def __getattr__(name: str) -> Any:
    if name in _PHASE_SETS:  # derived from isthmus.slurm.states on first access
        from flytekitplugins.isthmus.slurm import phases

        return getattr(phases, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [  # and the phase state sets, through __getattr__
    "TASK_TYPE",
    "IsthmusSlurmConnector",
    "IsthmusSlurmTask",
    "SlurmJob",
    "SlurmStepMeta",
    "flyte_phase",
    "register",
    "run_from_metadata",
]
