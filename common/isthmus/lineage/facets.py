"""The ``isthmus_*`` OpenLineage facets built from isthmus records, and artifacts as datasets.
``openlineage-python`` (the ``lineage`` extra) is imported only when facet objects are built.

``isthmus_step``: fingerprints, cache key, cache hit and the run the outputs came from;
``isthmus_environment``: python, platform, image and dependency versions; ``isthmus_resources``: the
requested resources and the job id of the registered backend that ran the step (``<kind>JobId``).
Their JSON schemas ship in ``isthmus/lineage/schemas/``.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from collections.abc import Mapping
from importlib import resources
from typing import Any

from isthmus.fingerprint.environment import IMAGE_VARS
from isthmus.lineage.backends import backend_job, registered_backends
from isthmus.lineage.naming import dataset_id

FACET_VERSION = "1-0-0"
# Versioned location of the facet schemas; the same files ship in isthmus/lineage/schemas/.
SCHEMA_BASE = f"https://isthmus.dev/spec/facets/{FACET_VERSION}"
STEP_FACET_SCHEMA = f"{SCHEMA_BASE}/IsthmusStepRunFacet.json"
SCHEMA_FILES = {
    "isthmus_step": "IsthmusStepRunFacet.json",
    "isthmus_environment": "IsthmusEnvironmentRunFacet.json",
    "isthmus_resources": "IsthmusResourcesRunFacet.json",
}


def step_facet_dict(step_run: Mapping[str, Any]) -> dict[str, Any]:
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


def environment_facet_dict(step_run: Mapping[str, Any]) -> dict[str, Any]:
    """The ``isthmus_environment`` facet: python, platform, container image and the step's dependency versions."""
    image = next((os.environ[v] for v in IMAGE_VARS if os.environ.get(v)), None)
    return {
        "pythonVersion": platform.python_version(),
        "pythonImplementation": platform.python_implementation(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "containerImage": image,
        "dependencies": dict(step_run.get("deps") or {}),
        "environmentHash": step_run.get("environment_hash"),
    }


def resources_facet_dict(step_run: Mapping[str, Any]) -> dict[str, Any]:
    """The ``isthmus_resources`` facet: the requested resources and, when a registered backend ran the
    step, its job id as ``<kind>JobId``."""
    fields: dict[str, Any] = {"requested": dict(step_run.get("resources") or {})}
    backend = backend_job(step_run)
    if backend is not None:
        fields[backend[0].job_id_field] = backend[1]
    return fields


def schema(facet_key: str) -> dict[str, Any]:
    """The JSON schema shipped for a custom facet (``isthmus_step``, ``isthmus_environment``, ``isthmus_resources``)."""
    text = resources.files("isthmus.lineage").joinpath("schemas", SCHEMA_FILES[facet_key]).read_text()
    return json.loads(text)


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
        """What an isthmus step asked for (cpu, memory, gpus, …); see :func:`resources_facet`."""

        requested: dict[str, Any] = attr.field(factory=dict)

        @staticmethod
        def _get_schema() -> str:
            return f"{SCHEMA_BASE}/IsthmusResourcesRunFacet.json"

    return {
        "step": IsthmusStepRunFacet,
        "environment": IsthmusEnvironmentRunFacet,
        "resources": IsthmusResourcesRunFacet,
    }


@functools.cache
def _resources_class(job_id_fields: tuple[str, ...]) -> type:
    """``IsthmusResourcesRunFacet`` with an optional field for each registered backend's job id."""
    import attr  # with openlineage-python, an optional dependency

    base = _facet_classes()["resources"]
    if not job_id_fields:
        return base
    fields = {name: attr.field(default=None) for name in job_id_fields}
    return attr.make_class(base.__name__, fields, bases=(base,), slots=True)


def run_facets(step_run: Mapping[str, Any]) -> dict[str, Any]:
    """``{"isthmus_step": IsthmusStepRunFacet}`` for a step run record."""
    return {"isthmus_step": _facet_classes()["step"](**step_facet_dict(step_run))}


def environment_facet(step_run: Mapping[str, Any]) -> Any:
    """The ``isthmus_environment`` facet object of a step run."""
    return _facet_classes()["environment"](**environment_facet_dict(step_run))


def resources_facet(step_run: Mapping[str, Any]) -> Any:
    """The ``isthmus_resources`` facet object of a step run."""
    job_id_fields = tuple(backend.job_id_field for backend in registered_backends())
    return _resources_class(job_id_fields)(**resources_facet_dict(step_run))


def backend_run_facets(step_run: Mapping[str, Any]) -> dict[str, Any]:
    """The run facets the registered backend that ran the step adds (none when no backend ran it)."""
    backend = backend_job(step_run)
    if backend is None or backend[0].facets is None:
        return {}
    return dict(backend[0].facets(step_run))


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
