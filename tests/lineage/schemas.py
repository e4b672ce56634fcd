"""Offline validation of OpenLineage events against the official JSON Schemas (../shared/openlineage-spec)
and of the isthmus custom facets against the schemas shipped in the package."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SPEC_DIR = Path(__file__).resolve().parents[3] / "shared" / "openlineage-spec"


@functools.cache
def _load() -> tuple[Any, dict[str, str], str]:
    from jsonschema import Draft202012Validator  # noqa: F401
    from referencing import Registry, Resource

    from isthmus.lineage_facets import SCHEMA_FILES, schema
    from isthmus.slurm.lineage import slurm_facet_schema

    schemas = [
        json.loads(p.read_text())
        for p in [SPEC_DIR / "OpenLineage.json", *sorted((SPEC_DIR / "facets").glob("*.json"))]
    ]
    custom = [schema(key) for key in SCHEMA_FILES] + [slurm_facet_schema()]
    registry = Registry().with_resources([(s["$id"], Resource.from_contents(s)) for s in [*schemas, *custom]])
    facet_files: dict[str, str] = {}
    for s in [*schemas[1:], *custom]:
        for key in s.get("properties", {}):
            facet_files[key] = s["$id"]
    return registry, facet_files, schemas[0]["$id"]


def available() -> bool:
    return (SPEC_DIR / "OpenLineage.json").exists()


def validate_event(event: dict[str, Any]) -> None:
    """Validate the event, then every run/job/dataset facet it carries as ``{key: facet}``."""
    from jsonschema import Draft202012Validator

    registry, facet_files, core_id = _load()
    Draft202012Validator({"$ref": core_id + "#/$defs/RunEvent"}, registry=registry).validate(event)
    facets: list[tuple[str, Any]] = []
    facets += list((event.get("run", {}).get("facets") or {}).items())
    facets += list((event.get("job", {}).get("facets") or {}).items())
    for ds in [*event.get("inputs", []), *event.get("outputs", [])]:
        facets += list((ds.get("facets") or {}).items())
        facets += list((ds.get("inputFacets") or {}).items())
        facets += list((ds.get("outputFacets") or {}).items())
    for key, facet in facets:
        schema_id = facet_files.get(key)
        if schema_id is None:
            if key.startswith("isthmus_"):
                raise AssertionError(f"custom facet {key} has no shipped schema")
            continue  # a producer-specific facet (e.g. Airflow's own)
        Draft202012Validator({"$ref": schema_id}, registry=registry).validate({key: facet})
