"""The ``isthmus_*`` OpenLineage facets built from isthmus records, and artifacts as datasets.
``openlineage-python`` (the ``lineage`` extra) is imported only when facet objects are built.

``isthmus_step``: fingerprints, cache key, cache hit and the run the outputs came from;
``isthmus_environment``: python, platform, image and dependency versions; ``isthmus_resources``: the
requested resources and the job id of the registered backend that ran the step (``<kind>JobId``);
``isthmus_metadata``: what the step logged with ``isthmus.log_metadata`` — about its run as a run facet,
about one output as a dataset facet on that output's dataset (where Marquez shows it, with the dataset
version; it does not return ``outputFacets``). Their JSON schemas ship in ``isthmus/lineage/schemas/``.
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
from isthmus.redaction import REDACTED, is_secret_name, looks_like_credential, redact_text, scrub, secret_env_values

FACET_VERSION = "1-0-0"
# Versioned location of the facet schemas; the same files ship in isthmus/lineage/schemas/.
SCHEMA_BASE = f"https://isthmus.dev/spec/facets/{FACET_VERSION}"
STEP_FACET_SCHEMA = f"{SCHEMA_BASE}/IsthmusStepRunFacet.json"
SCHEMA_FILES = {
    "isthmus_step": "IsthmusStepRunFacet.json",
    "isthmus_environment": "IsthmusEnvironmentRunFacet.json",
    "isthmus_resources": "IsthmusResourcesRunFacet.json",
    "isthmus_metadata": "IsthmusMetadataRunFacet.json",
}
# Dataset facets (on an output's dataset), by key; ``isthmus_metadata`` is a run facet and a dataset facet.
DATASET_SCHEMA_FILES = {"isthmus_metadata": "IsthmusMetadataDatasetFacet.json"}
METADATA_FACET = "isthmus_metadata"


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


def metadata_facet_dict(step_run: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``isthmus_metadata`` run facet's fields: what the step logged about its run (None when it logged
    nothing). A cache hit carries the metadata of the step run it reused, and says so."""
    logged = step_run.get("metadata")
    if not isinstance(logged, Mapping) or not logged:
        return None
    hit = bool(step_run.get("cache_hit"))
    return {
        "metadata": shown_metadata(logged),
        "loggedByStepRunId": step_run.get("source_step_run_id") if hit else step_run.get("id"),
        "fromCache": hit,
    }


def output_metadata_facet_dict(output: str, ref: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``isthmus_metadata`` dataset facet's fields for one output ref (None when nothing was logged about it)."""
    logged = (ref.get("metadata") or {}).get("logged") if isinstance(ref.get("metadata"), Mapping) else None
    if not isinstance(logged, Mapping) or not logged:
        return None
    return {"output": output, "metadata": shown_metadata(logged)}


def shown_metadata(logged: Mapping[str, Any]) -> dict[str, Any]:
    """Logged metadata as a lineage event may carry it: numbers, booleans and nulls as they are; text under a
    secret-named key, or shaped like a credential, as ``***``; credentials inside other text (URL passwords,
    bearer tokens, values of the environment's secrets) scrubbed. ``log_metadata`` already refuses secrets:
    this keeps records that reached the store another way (an older version, a hand-written manifest) out
    of lineage too."""
    known = secret_env_values()
    return {_shown_text(str(k), known): _shown_value(v, is_secret_name(str(k)), known) for k, v in logged.items()}


def _shown_value(value: Any, secret: bool, known: frozenset[str]) -> Any:
    if isinstance(value, str):
        return REDACTED if secret or looks_like_credential(value) else _shown_text(value, known)
    if isinstance(value, Mapping):
        return {
            _shown_text(str(k), known): _shown_value(v, secret or is_secret_name(str(k)), known)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_shown_value(v, secret, known) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return REDACTED  # not JSON: never shown by its repr()


def _shown_text(text: str, known: frozenset[str]) -> str:
    return scrub(redact_text(text), known)


def schema(facet_key: str, *, dataset: bool = False) -> dict[str, Any]:
    """The JSON schema shipped for a custom facet (``isthmus_step``, ``isthmus_environment``,
    ``isthmus_resources``, ``isthmus_metadata``; with ``dataset``, a dataset facet: ``isthmus_metadata``)."""
    name = (DATASET_SCHEMA_FILES if dataset else SCHEMA_FILES)[facet_key]
    text = resources.files("isthmus.lineage").joinpath("schemas", name).read_text()
    return json.loads(text)


def shipped_schemas() -> list[dict[str, Any]]:
    """Every facet schema in ``isthmus/lineage/schemas/`` of the core (run facets, then dataset facets)."""
    return [schema(key) for key in SCHEMA_FILES] + [schema(key, dataset=True) for key in DATASET_SCHEMA_FILES]


def step_facet_schema() -> dict[str, Any]:
    """The JSON schema shipped for the ``isthmus_step`` facet."""
    return schema("isthmus_step")


@functools.cache
def _facet_classes() -> dict[str, type]:
    import attr
    from openlineage.client.facet_v2 import DatasetFacet, RunFacet

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

    @attr.define
    class IsthmusMetadataRunFacet(RunFacet):
        """What an isthmus step logged about its run (``isthmus.log_metadata``); a cache hit's is its source's."""

        metadata: dict[str, Any] = attr.field(factory=dict)
        loggedByStepRunId: str | None = attr.field(default=None)  # noqa: N815
        fromCache: bool = attr.field(default=False)  # noqa: N815

        @staticmethod
        def _get_schema() -> str:
            return f"{SCHEMA_BASE}/IsthmusMetadataRunFacet.json"

    @attr.define
    class IsthmusMetadataDatasetFacet(DatasetFacet):
        """What an isthmus step logged about one output (``log_metadata(..., output=NAME)``)."""

        metadata: dict[str, Any] = attr.field(factory=dict)
        output: str | None = attr.field(default=None)

        @staticmethod
        def _get_schema() -> str:
            return f"{SCHEMA_BASE}/IsthmusMetadataDatasetFacet.json"

    return {
        "step": IsthmusStepRunFacet,
        "environment": IsthmusEnvironmentRunFacet,
        "resources": IsthmusResourcesRunFacet,
        "metadata": IsthmusMetadataRunFacet,
        "output_metadata": IsthmusMetadataDatasetFacet,
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
    """``{"isthmus_step": IsthmusStepRunFacet}`` for a step run record, and ``isthmus_metadata`` when the
    record carries logged metadata (a finished run, or a cache hit)."""
    facets = {"isthmus_step": _facet_classes()["step"](**step_facet_dict(step_run))}
    logged = metadata_facet_dict(step_run)
    if logged is not None:
        facets[METADATA_FACET] = _facet_classes()["metadata"](**logged)
    return facets


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
    """OpenLineage datasets for artifact refs, with ``version`` (content hash), for tables ``schema``, and
    for outputs the metadata the step logged about them (``isthmus_metadata``)."""
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import dataset_version_dataset, schema_dataset

    out = []
    for output_name, ref in refs.items():
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
        logged = output_metadata_facet_dict(str(output_name), ref) if output else None
        if logged is not None:
            facets[METADATA_FACET] = _facet_classes()["output_metadata"](**logged)
        cls = OutputDataset if output else InputDataset
        out.append(cls(namespace=namespace, name=name, facets=facets))
    return out
