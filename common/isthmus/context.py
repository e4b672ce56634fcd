"""``RunContext``: who is running a step, in the orchestrator's own terms."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

# Namespace of the run ids derived from orchestrator-native ids (any process derives the same id).
RUN_NAMESPACE = uuid.UUID("6f1c9a52-3b0e-4f7d-9a43-2a6c1d8e5b71")


def derived_run_id(orchestrator: str, *native_ids: Any) -> str:
    """A stable pipeline run id for an orchestrator run, e.g. ``derived_run_id("airflow", dag_id, run_id)``.

    Every task process of the same DAG run / Flyte execution / Slurm array derives the same id, so they
    all record into one pipeline run without talking to each other.
    """
    return str(uuid.uuid5(RUN_NAMESPACE, "\x1f".join([orchestrator, *[str(x) for x in native_ids]])))


@dataclass
class RunContext:
    """Orchestrator-native identity of one step execution.

    ``native`` holds the orchestrator's ids, e.g. Airflow ``dag_id``/``run_id``/``task_id``/
    ``try_number``/``map_index``, a Flyte execution id, or a Slurm job id. Adapters fill it in and hand
    it to the StepRunner; it is recorded with the step run.
    """

    orchestrator: str = "local"
    pipeline_name: str | None = None
    pipeline_run_id: str | None = None
    invocation: str | None = None
    attempt: int = 1
    native: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "orchestrator": self.orchestrator,
            "pipeline_name": self.pipeline_name,
            "pipeline_run_id": self.pipeline_run_id,
            "invocation": self.invocation,
            "attempt": self.attempt,
            "native": dict(self.native),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunContext:
        data = dict(data or {})
        known = {k: data.pop(k) for k in list(data) if k in cls.__dataclass_fields__}
        ctx = cls(**known)
        ctx.native.update(data)  # unknown keys are orchestrator-native ids
        return ctx
