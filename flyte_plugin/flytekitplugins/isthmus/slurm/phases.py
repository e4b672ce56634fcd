"""Flyte phases of Slurm job states, derived from :mod:`isthmus.slurm.states` (never declared here).

- success (``COMPLETED``) -> SUCCEEDED; failed states -> FAILED, or RETRYABLE_FAILED where
  :func:`isthmus.slurm.states.is_retryable` says so;
- waiting in the queue (``states.QUEUED``) -> QUEUED; the other waiting states (nodes being readied, the
  job paused) -> INITIALIZING; every other state, known or not -> RUNNING (never success).

The state sets: ``QUEUED_STATES``, ``INITIALIZING_STATES``, ``RUNNING_STATES``.
"""

from __future__ import annotations

from flyteidl.core.execution_pb2 import TaskExecution

from isthmus.slurm import states
from isthmus.slurm.states import FAILED, SUCCESS, is_retryable

QUEUED_STATES: frozenset[str] = states.QUEUED
INITIALIZING_STATES: frozenset[str] = states.WAITING - states.QUEUED
RUNNING_STATES: frozenset[str] = states.TRANSIENT - states.WAITING


def flyte_phase(state: str) -> int:
    """The Flyte ``TaskExecution`` phase of a Slurm job state (as normalized by
    :func:`isthmus.slurm.states.normalize_state`).

    ``COMPLETED`` maps to SUCCEEDED here, but the connector reports success only after the job's
    manifest confirms it. A state :mod:`isthmus.slurm.states` does not know is treated as still in
    progress (never success): the job is polled until it settles, and a job that vanishes without a
    result ends ``LOST`` (FAILED).
    """
    if state in SUCCESS:
        return TaskExecution.SUCCEEDED
    if state in FAILED:
        return TaskExecution.RETRYABLE_FAILED if is_retryable(state) else TaskExecution.FAILED
    if state in QUEUED_STATES:
        return TaskExecution.QUEUED
    if state in INITIALIZING_STATES:
        return TaskExecution.INITIALIZING
    return TaskExecution.RUNNING


__all__ = ["INITIALIZING_STATES", "QUEUED_STATES", "RUNNING_STATES", "flyte_phase"]
