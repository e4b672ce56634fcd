"""Slurm job states: what each means for a caller waiting on a job.

Every state is one of: *transient* (keep polling), *success* (only ``COMPLETED``), or *failed*
(terminal); a failed state may be *retryable* (the job did not fail because of the step: a node
died, the job was preempted or its node never booted). An unknown state is never success: while the
controller still reports it the caller keeps polling, and a job that vanishes without a result is
``LOST``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SUCCESS = frozenset({"COMPLETED"})
TRANSIENT = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SUSPENDED",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
        "POWER_UP_NODE",
        "UPDATE_DB",
    }
)
FAILED = frozenset(
    {
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "DEADLINE",
        "BOOT_FAIL",
        "NODE_FAIL",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "LOST",  # ours: the job is gone from the controller and left no result
    }
)
# Transient states in which the step's code is not running (yet, or for now): lineage says OTHER.
WAITING = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "SUSPENDED",
        "STOPPED",
        "RESV_DEL_HOLD",
        "POWER_UP_NODE",
    }
)
# Waiting states in which the job holds no nodes: it is in the queue (the other waiting states: its nodes
# are being readied, or it is paused on them).
QUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD"})
# Not the step's fault: worth another try on a healthy node.
RETRYABLE = frozenset({"NODE_FAIL", "BOOT_FAIL", "PREEMPTED"})
# Flags that, present on a job whose base state is terminal, mean it is still being processed.
_BUSY_FLAGS = (
    "COMPLETING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
)
# Pending reasons that mean the job can never start as submitted (the controller keeps it queued when
# partition limits are not enforced at submission): the waiter cancels such a job and says why.
UNSATISFIABLE_REASONS = {
    "PartitionConfig": "no node of the partition has the requested cpus/memory/GPUs; lower the request or pick another partition",
    "PartitionNodeLimit": "the job asks for more nodes than the partition allows",
    "PartitionTimeLimit": "Resources(time_limit=...) exceeds the partition's MaxTime; lower it",
    "BadConstraints": "no node has the requested features (constraint); check 'sinfo -o %f'",
    "InvalidAccount": "the account does not exist or is not yours; set another account",
    "InvalidQOS": "the QOS does not exist or is not allowed; set another qos",
    "AccountNotAllowed": "the partition does not allow this account",
    "QOSNotAllowed": "the partition does not allow this QOS",
    "DependencyNeverSatisfied": "a job it depends on failed",
}
# Compact codes (squeue %t, sacct) to names.
_CODES = {
    "PD": "PENDING",
    "CF": "CONFIGURING",
    "R": "RUNNING",
    "CG": "COMPLETING",
    "CD": "COMPLETED",
    "F": "FAILED",
    "CA": "CANCELLED",
    "TO": "TIMEOUT",
    "PR": "PREEMPTED",
    "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY",
    "RQ": "REQUEUED",
    "RH": "REQUEUE_HOLD",
    "RF": "REQUEUE_FED",
    "S": "SUSPENDED",
    "BF": "BOOT_FAIL",
    "DL": "DEADLINE",
    "RV": "REVOKED",
    "SE": "SPECIAL_EXIT",
    "SI": "SIGNALING",
    "SO": "STAGE_OUT",
    "ST": "STOPPED",
    "RS": "RESIZING",
    "RD": "RESV_DEL_HOLD",
}


def normalize_state(raw: Any) -> str:
    """One state name from what Slurm prints or returns.

    Accepts ``"RUNNING"``, ``"CANCELLED by 0"``, ``"COMPLETING+"``, codes (``"CG"``), and the flag
    lists of the data_parser REST API (``["COMPLETED", "COMPLETING"]`` -> ``COMPLETING``,
    ``["PENDING", "REQUEUED"]`` -> ``REQUEUED``). Empty input gives ``"UNKNOWN"``.
    """
    if raw is None:
        return "UNKNOWN"
    if isinstance(raw, (list, tuple)):
        names = [normalize_state(x) for x in raw if x]
        if not names:
            return "UNKNOWN"
        for flag in _BUSY_FLAGS:
            if flag in names[1:]:
                return flag
        return names[0]
    text = str(raw).strip().upper()
    if not text:
        return "UNKNOWN"
    text = text.split()[0].rstrip("+*")  # "CANCELLED by 123", "COMPLETING+"
    return _CODES.get(text, text)


def is_terminal(state: str) -> bool:
    return state in SUCCESS or state in FAILED


def is_success(state: str) -> bool:
    return state in SUCCESS


def is_retryable(state: str) -> bool:
    return state in RETRYABLE


def is_transient(state: str) -> bool:
    """True for known in-progress states and for states this module does not know (never success)."""
    return not is_terminal(state)


def phase(state: str) -> str:
    """``pending``, ``running``, ``succeeded``, ``failed`` or ``unknown``."""
    if state in SUCCESS:
        return "succeeded"
    if state in FAILED:
        return "failed"
    if state in ("PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "POWER_UP_NODE"):
        return "pending"
    if state in TRANSIENT:
        return "running"
    return "unknown"


ALL_STATES = SUCCESS | TRANSIENT | FAILED


@dataclass
class JobStatus:
    """What the cluster says about one job. ``source`` is where it came from: ``scontrol``, ``squeue``,
    ``sacct``, ``rest`` or ``manifest``."""

    job_id: str
    state: str
    raw_state: Any = None
    name: str | None = None
    reason: str | None = None
    exit_code: str | None = None
    partition: str | None = None
    nodes: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    restarts: int = 0
    time_limit: str | None = None
    tres: str | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return is_terminal(self.state)

    @property
    def success(self) -> bool:
        return is_success(self.state)

    @property
    def retryable(self) -> bool:
        return is_retryable(self.state)

    @property
    def phase(self) -> str:
        return phase(self.state)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "state": self.state,
            "name": self.name,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "partition": self.partition,
            "nodes": self.nodes,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "restarts": self.restarts,
            "time_limit": self.time_limit,
            "tres": self.tres,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobStatus:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def worst(states: Iterable[str]) -> str:
    """The state that decides a set of states (e.g. of a job's steps): any failure beats success."""
    states = list(states)
    for s in states:
        if s in FAILED:
            return s
    for s in states:
        if not is_terminal(s):
            return s
    return "COMPLETED" if states else "UNKNOWN"
