"""OpenLineage pieces built from isthmus records: dataset names for artifacts and the ``isthmus_step``
run facet. ``openlineage-python`` is imported only when facet objects are built (the ``lineage`` extra).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any
from urllib.parse import urlparse

FACET_VERSION = "1-0-0"
# Versioned location of the facet schemas; the same files ship in isthmus/schemas/.
SCHEMA_BASE = f"https://isthmus.dev/spec/facets/{FACET_VERSION}"
STEP_FACET_SCHEMA = f"{SCHEMA_BASE}/IsthmusStepRunFacet.json"
SCHEMA_FILES = {
    "isthmus_step": "IsthmusStepRunFacet.json",
    "isthmus_environment": "IsthmusEnvironmentRunFacet.json",
    "isthmus_resources": "IsthmusResourcesRunFacet.json",
}


def dataset_id(uri: str) -> tuple[str, str]:
    """(namespace, name) of an artifact by the OpenLineage naming spec: ``file`` + absolute path for
    local files, ``s3://bucket`` + key, ``gs://bucket`` + key, ``abfss://container@account`` + path, …"""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return "file", parsed.path or uri
    namespace = f"{parsed.scheme}://{parsed.netloc}"
    return namespace, parsed.path.lstrip("/")


def step_facet_dict(step_run: dict[str, Any]) -> dict[str, Any]:
    """The ``isthmus_step`` facet's fields from a step run record (no OpenLineage import)."""
    return {
        "stepName": step_run.get("step_name"),
        "stepRunId": step_run.get("id"),
        "pipelineRunId": step_run.get("pipeline_run_id"),
        "codeFingerprint": step_run.get("code_hash"),
        "dependencyFingerprint": step_run.get("deps_hash"),
        "cacheKey": step_run.get("cache_key"),
        "cacheHit": bool(step_run.get("cache_hit")),
        "sourceStepRunId": step_run.get("source_step_run_id"),
        "attempt": step_run.get("attempt"),
        "status": step_run.get("status"),
    }


def environment_facet_dict(step_run: dict[str, Any]) -> dict[str, Any]:
    """The ``isthmus_environment`` facet: python, platform, container image and the step's dependency versions."""
    import os
    import platform

    from isthmus.fingerprint.environment import IMAGE_VARS

    image = next((os.environ[v] for v in IMAGE_VARS if os.environ.get(v)), None)
    return {
        "pythonVersion": platform.python_version(),
        "pythonImplementation": platform.python_implementation(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "containerImage": image,
        "dependencies": dict(step_run.get("deps") or {}),
        "environmentHash": step_run.get("environment_hash"),
    }


def resources_facet_dict(step_run: dict[str, Any]) -> dict[str, Any]:
    """The ``isthmus_resources`` facet: the requested resources and the Slurm job id when there is one."""
    native = (step_run.get("context") or {}).get("native") or {}
    job_id = native.get("slurm_job_id") or ((step_run.get("slurm") or {}).get("job") or {}).get("job_id")
    return {"requested": dict(step_run.get("resources") or {}), "slurmJobId": str(job_id) if job_id else None}


def schema(facet_key: str) -> dict[str, Any]:
    """The JSON schema shipped for a custom facet (``isthmus_step``, ``isthmus_environment``, ``isthmus_resources``)."""
    return json.loads(resources.files("isthmus.schemas").joinpath(SCHEMA_FILES[facet_key]).read_text())


def step_facet_schema() -> dict[str, Any]:
    """The JSON schema shipped for the ``isthmus_step`` facet."""
    return schema("isthmus_step")


@functools.cache
def _facet_classes() -> dict[str, type]:
    import attr
    from openlineage.client.facet_v2 import RunFacet

    @attr.define
    class IsthmusStepRunFacet(RunFacet):
        """isthmus step run: fingerprints, cache key, cache hit and the run the outputs came from."""

        stepName: str | None = attr.field(default=None)  # noqa: N815 - OpenLineage field names
        stepRunId: str | None = attr.field(default=None)  # noqa: N815
        pipelineRunId: str | None = attr.field(default=None)  # noqa: N815
        codeFingerprint: str | None = attr.field(default=None)  # noqa: N815
        dependencyFingerprint: str | None = attr.field(default=None)  # noqa: N815
        cacheKey: str | None = attr.field(default=None)  # noqa: N815
        cacheHit: bool = attr.field(default=False)  # noqa: N815
        sourceStepRunId: str | None = attr.field(default=None)  # noqa: N815
        attempt: int | None = attr.field(default=None)
        status: str | None = attr.field(default=None)

        @staticmethod
        def _get_schema() -> str:
            return STEP_FACET_SCHEMA

    @attr.define
    class IsthmusEnvironmentRunFacet(RunFacet):
        """Where an isthmus step ran: python, platform, image and the versions its code imports."""

        pythonVersion: str | None = attr.field(default=None)  # noqa: N815
        pythonImplementation: str | None = attr.field(default=None)  # noqa: N815
        platform: str | None = attr.field(default=None)
        containerImage: str | None = attr.field(default=None)  # noqa: N815
        dependencies: dict[str, str] = attr.field(factory=dict)
        environmentHash: str | None = attr.field(default=None)  # noqa: N815

        @staticmethod
        def _get_schema() -> str:
            return f"{SCHEMA_BASE}/IsthmusEnvironmentRunFacet.json"

    @attr.define
    class IsthmusResourcesRunFacet(RunFacet):
        """What an isthmus step asked for (cpu, memory, gpus, …), and its Slurm job id when it has one."""

        requested: dict[str, Any] = attr.field(factory=dict)
        slurmJobId: str | None = attr.field(default=None)  # noqa: N815

        @staticmethod
        def _get_schema() -> str:
            return f"{SCHEMA_BASE}/IsthmusResourcesRunFacet.json"

    return {
        "step": IsthmusStepRunFacet,
        "environment": IsthmusEnvironmentRunFacet,
        "resources": IsthmusResourcesRunFacet,
    }


def facet_class(kind: str) -> type:
    """The attrs class of a custom facet: ``step``, ``environment`` or ``resources``."""
    return _facet_classes()[kind]


def run_facets(step_run: dict[str, Any]) -> dict[str, Any]:
    """``{"isthmus_step": IsthmusStepRunFacet}`` for a step run record."""
    return {"isthmus_step": _facet_classes()["step"](**step_facet_dict(step_run))}


def datasets(refs: dict[str, dict[str, Any]], *, output: bool) -> list[Any]:
    """OpenLineage datasets for artifact refs, with ``version`` (content hash) and, for tables, ``schema``."""
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import dataset_version_dataset, schema_dataset

    out = []
    for ref in refs.values():
        if not isinstance(ref, dict) or "uri" not in ref:
            continue
        namespace, name = dataset_id(ref["uri"])
        facets: dict[str, Any] = {
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=ref["content_hash"])
        }
        columns = (ref.get("metadata") or {}).get("columns")
        if columns:
            facets["schema"] = schema_dataset.SchemaDatasetFacet(
                fields=[schema_dataset.SchemaDatasetFacetFields(name=c["name"], type=c.get("type")) for c in columns]
            )
        cls = OutputDataset if output else InputDataset
        out.append(cls(namespace=namespace, name=name, facets=facets))
    return out
