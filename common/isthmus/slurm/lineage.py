"""Slurm in isthmus's lineage: the ``isthmus_slurm`` run facet (which Slurm job ran a step, where, and
with what), OTHER events while a job waits, and the registration of Slurm as a lineage backend.

Importing :mod:`isthmus.slurm` registers the backend (bottom of this module), so every process that
sends events about Slurm jobs — the job itself (``python -m isthmus.slurm run-step``), the submitter,
an Airflow worker or triggerer, a Flyte connector — names them alike: the job id as ``slurmJobId`` in
``isthmus_resources``, the ``isthmus_slurm`` facet on a waiting job's events, and ``<task job>.slurm``
as the job name of a run an Airflow task started. ``openlineage-python`` is imported only when the
facet object is built (the ``lineage`` extra).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from isthmus import lineage
from isthmus.lineage.openlineage import OpenLineageEmitter
from isthmus.records import RunStatus, StepRunRecord
from isthmus.slurm.states import WAITING

FACET_KEY = "isthmus_slurm"
SLURM_FACET_SCHEMA = "https://isthmus.dev/spec/facets/1-0-0/IsthmusSlurmRunFacet.json"


def slurm_facet_dict(job: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    """The facet's fields from a submitted job (``SubmittedJob.to_dict()``) and its last status."""
    status = status or {}
    backend = (job.get("backend") or {}).get("backend")
    return {
        "jobId": str(job.get("job_id")) if job.get("job_id") else None,
        "jobName": job.get("job_name"),
        "backend": backend if backend in ("cli", "rest", "pyslurm") else None,
        "partition": status.get("partition") or (job.get("spec") or {}).get("partition"),
        "nodes": status.get("nodes"),
        "state": status.get("state"),
        "exitCode": status.get("exit_code"),
        "restarts": int(status.get("restarts") or 0),
        "adopted": bool(job.get("adopted")),
        "resources": dict(job.get("spec") or {}),
    }


def waiting_step_run(job: dict[str, Any], status: dict[str, Any]) -> StepRunRecord:
    """The step run a waiting job stands for, as the lineage emitter reads it: the same derived run id
    (pipeline run, invocation, attempt) the job's own events carry, and the Slurm job as a facet."""
    ctx = dict(job.get("context") or {})
    return {
        "pipeline_run_id": ctx.get("pipeline_run_id"),
        "invocation": str(ctx.get("invocation") or job.get("step_name") or ""),
        "attempt": ctx.get("attempt") or 1,
        "step_name": str(job.get("step_name") or ""),
        "step_path": str(job.get("step_path") or ""),
        "orchestrator": str(ctx.get("orchestrator") or ""),
        "status": RunStatus.WAITING,
        "inputs": dict(job.get("inputs") or {}),
        "cache_key": job.get("cache_key"),
        "code_hash": job.get("code_hash"),
        "deps_hash": job.get("deps_hash"),
        "resources": dict(job.get("spec") or {}),
        "context": ctx,
        "slurm": {"job": job, "status": status},
    }


def emit_waiting(job: dict[str, Any], status: dict[str, Any], client: Any | None = None) -> bool:
    """Send OpenLineage OTHER for a step whose job is queued (or held, requeued, suspended); True if
    the state is such a state. With an OpenLineage ``client`` (e.g. Airflow's) the event is sent
    through it, in this thread; otherwise through the process's lineage hook. Never raises."""
    if status.get("state") not in WAITING:
        return False
    payload = waiting_step_run(job, status)
    if client is not None:
        OpenLineageEmitter(client).emit_now("on_step_waiting", payload)
    else:
        lineage.emit("on_step_waiting", payload)
    return True


def slurm_facet_schema() -> dict[str, Any]:
    """The JSON schema shipped for the facet."""
    text = resources.files("isthmus.slurm").joinpath("schemas/IsthmusSlurmRunFacet.json").read_text()
    return json.loads(text)


@functools.cache
def _facet_class() -> type:
    import attr
    from openlineage.client.facet_v2 import RunFacet

    @attr.define
    class IsthmusSlurmRunFacet(RunFacet):
        """The Slurm job of an isthmus step run."""

        jobId: str | None = attr.field(default=None)  # noqa: N815 - OpenLineage field names
        jobName: str | None = attr.field(default=None)  # noqa: N815
        backend: str | None = attr.field(default=None)
        partition: str | None = attr.field(default=None)
        nodes: str | None = attr.field(default=None)
        state: str | None = attr.field(default=None)
        exitCode: str | None = attr.field(default=None)  # noqa: N815
        restarts: int | None = attr.field(default=None)
        adopted: bool = attr.field(default=False)
        resources: dict[str, Any] = attr.field(factory=dict)

        @staticmethod
        def _get_schema() -> str:
            return SLURM_FACET_SCHEMA

    return IsthmusSlurmRunFacet


def slurm_run_facet(job: dict[str, Any], status: dict[str, Any] | None = None) -> Any:
    """``IsthmusSlurmRunFacet`` for a job (for ``run_facets["isthmus_slurm"]``)."""
    return _facet_class()(**slurm_facet_dict(job, status))


def slurm_job_id(step_run: Mapping[str, Any]) -> str | None:
    """The id of the Slurm job that ran a step run: recorded by the job itself (native ``slurm_job_id``)
    or carried by a waiting job's step run; None for a run that was no Slurm job."""
    native = (step_run.get("context") or {}).get("native") or {}
    job_id = native.get("slurm_job_id") or ((step_run.get("slurm") or {}).get("job") or {}).get("job_id")
    return str(job_id) if job_id else None


def slurm_run_facets(step_run: Mapping[str, Any]) -> dict[str, Any]:
    """``{"isthmus_slurm": ...}`` for the step run of a waiting job (:func:`waiting_step_run`), else none."""
    slurm = step_run.get("slurm")
    if not slurm:
        return {}
    return {FACET_KEY: slurm_run_facet(slurm.get("job") or {}, slurm.get("status"))}


lineage.register_backend("slurm", job_id=slurm_job_id, facets=slurm_run_facets)
