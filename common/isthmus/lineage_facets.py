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


def step_facet_schema() -> dict[str, Any]:
    """The JSON schema shipped for the ``isthmus_step`` facet."""
    return json.loads(resources.files("isthmus.schemas").joinpath("IsthmusStepRunFacet.json").read_text())


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

    return {"step": IsthmusStepRunFacet}


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
