"""Flyte phases of Slurm job states, derived from :mod:`isthmus.slurm.states` (never declared here).

- success (``COMPLETED``) -> SUCCEEDED; failed states -> FAILED, or RETRYABLE_FAILED where
  :func:`isthmus.slurm.states.is_retryable` says so;
- waiting in the queue (``states.QUEUED``) -> QUEUED; the other waiting states (nodes being readied, the
  job paused) -> INITIALIZING; every other state, known or not -> RUNNING (never success).

The state sets (``QUEUED_STATES``, ``INITIALIZING_STATES``, ``RUNNING_STATES``) are computed on first
access: this module is imported with the plugin (``import flytekit``), before the isthmus core.
"""

from __future__ import annotations

import functools
from typing import Any

from flyteidl.core.execution_pb2 import TaskExecution


@functools.cache
def _groups() -> dict[str, frozenset[str]]:
    from isthmus.slurm import states

    return {
        "QUEUED_STATES": states.QUEUED,
        "INITIALIZING_STATES": states.WAITING - states.QUEUED,
        "RUNNING_STATES": states.TRANSIENT - states.WAITING,
    }


def __getattr__(name: str) -> Any:
    if name in ("QUEUED_STATES", "INITIALIZING_STATES", "RUNNING_STATES"):
        return _groups()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def flyte_phase(state: str) -> int:
    """The Flyte ``TaskExecution`` phase of a Slurm job state (as normalized by
    :func:`isthmus.slurm.states.normalize_state`).

    ``COMPLETED`` maps to SUCCEEDED here, but the connector reports success only after the job's
    manifest confirms it. A state :mod:`isthmus.slurm.states` does not know is treated as still in
    progress (never success): the job is polled until it settles, and a job that vanishes without a
    result ends ``LOST`` (FAILED).
    """
    from isthmus.slurm.states import FAILED, SUCCESS, is_retryable

    if state in SUCCESS:
        return TaskExecution.SUCCEEDED
    if state in FAILED:
        return TaskExecution.RETRYABLE_FAILED if is_retryable(state) else TaskExecution.FAILED
    groups = _groups()
    if state in groups["QUEUED_STATES"]:
        return TaskExecution.QUEUED
    if state in groups["INITIALIZING_STATES"]:
        return TaskExecution.INITIALIZING
    return TaskExecution.RUNNING


__all__ = ["flyte_phase"]  # and the state sets, through __getattr__
