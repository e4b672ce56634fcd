"""The rows every layer shares: a run's status, the step-run record and the pipeline-run record.

Records are the rows of ``step_runs`` and ``pipeline_runs`` as plain dicts (what SQLAlchemy's
``.mappings()``, JSON manifests and lineage payloads carry), typed with :class:`~typing.TypedDict`.
:class:`RunStatus` is a :class:`~enum.StrEnum`: it compares equal to its text, so stored values and
JSON stay plain strings.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any, TypedDict


class RunStatus(StrEnum):
    """The status of a step run or a pipeline run (stored as its text).

    Each member's name is its value: SQLite stores a member as its value, psycopg (PostgreSQL) as its name.
    """

    RUNNING = "RUNNING"
    """Started; not finished (or its process died without saying so: see ABORTED)."""
    WAITING = "WAITING"
    """Queued elsewhere (a batch job pending); only in lineage payloads, never stored."""
    RETRY = "RETRY"
    """This attempt failed; another attempt follows as a new step run."""
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    ABORTED = "ABORTED"
    """Interrupted (Ctrl-C, a killed task), or taken over from a dead process."""


class StepRunRecord(TypedDict, total=False):
    """A row of ``step_runs`` (and the payload of step lineage events). Rows read from the store
    have every column; rows being written carry what is known so far."""

    id: str
    pipeline_run_id: str | None
    invocation: str
    step_name: str
    step_path: str
    orchestrator: str
    attempt: int
    status: RunStatus
    error: str | None
    traceback: str | None
    code_hash: str | None
    deps_hash: str | None
    deps: dict[str, Any] | None
    environment_hash: str | None
    params: dict[str, Any]
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    cache_key: str | None
    cache_hit: bool
    source_step_run_id: str | None
    resources: dict[str, Any] | None
    context: dict[str, Any]
    started_at: dt.datetime
    ended_at: dt.datetime | None
    duration_ms: float | None
    metadata: dict[str, Any] | None
    """What the step logged while it ran (``isthmus.log_metadata``); a cache hit shows its source's."""
    slurm: dict[str, Any]
    """Lineage payloads of batch jobs only (the job and its last status): never stored."""


class PipelineRunRecord(TypedDict, total=False):
    """A row of ``pipeline_runs`` (and the payload of pipeline lineage events)."""

    id: str
    pipeline: str
    orchestrator: str
    status: RunStatus
    params: dict[str, Any]
    context: dict[str, Any]
    user: str | None
    host: str | None
    environment_hash: str | None
    outputs: Any
    error: str | None
    started_at: dt.datetime
    ended_at: dt.datetime | None
    project: str | None
    """The project the run belongs to (``ISTHMUS_PROJECT``, the Flyte project, or ``default``)."""
