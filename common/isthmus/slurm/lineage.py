"""The ``isthmus_slurm`` OpenLineage run facet: which Slurm job ran a step, where, and with what.

``openlineage-python`` is imported only when the facet object is built (the ``lineage`` extra).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

FACET_KEY = "isthmus_slurm"
SLURM_FACET_SCHEMA = "https://isthmus.dev/spec/facets/1-0-0/IsthmusSlurmRunFacet.json"


def slurm_facet_dict(job: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    """The facet's fields from a submitted job (``SubmittedJob.to_dict()``) and its last status."""
    status = status or {}
    backend = (job.get("backend") or {}).get("backend")
    return {
        "jobId": str(job.get("job_id")) if job.get("job_id") else None,
        "jobName": job.get("job_name"),
        "backend": backend if backend in ("cli", "rest") else None,
        "partition": status.get("partition") or (job.get("spec") or {}).get("partition"),
        "nodes": status.get("nodes"),
        "state": status.get("state"),
        "exitCode": status.get("exit_code"),
        "restarts": int(status.get("restarts") or 0),
        "adopted": bool(job.get("adopted")),
        "resources": dict(job.get("spec") or {}),
    }


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
