"""Offline validation of OpenLineage events against the official JSON Schemas (a copy of the files the
tests need, in ``openlineage_spec/``) and of the isthmus custom facets against the schemas shipped in the
package.

A facet is validated against the schema of its key *at its place*: ``tags`` in a job's facets against
``TagsJobFacet``, in a run's against ``TagsRunFacet``. A standard key with no schema here fails the
validation (copy its file from the OpenLineage spec); producer-specific facets (Airflow's ``airflow``,
``airflowDagRun``, ``airflowState``) are passed over.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from isthmus.lineage.facets import shipped_schemas
from isthmus.slurm.lineage import slurm_facet_schema

SPEC_DIR = Path(__file__).resolve().parent / "openlineage_spec"
# Facets of Airflow's OpenLineage provider that the spec does not define.
PRODUCER_FACETS = frozenset({"airflow", "airflowDagRun", "airflowState"})
# Where a facet sits in an event -> how the names of the schemas for that place end.
_PLACES = {
    "run": "RunFacet.json",
    "job": "JobFacet.json",
    "dataset": "DatasetFacet.json",
    "input": "InputDatasetFacet.json",
    "output": "OutputDatasetFacet.json",
}


def _place(schema_id: str) -> str:
    """The place a facet schema is for, from its file name (``...InputDatasetFacet.json``: input)."""
    return max((p for p, suffix in _PLACES.items() if schema_id.endswith(suffix)), key=lambda p: len(_PLACES[p]))


@functools.cache
def _load() -> tuple[Registry, dict[tuple[str, str], str], str]:
    core = json.loads((SPEC_DIR / "OpenLineage.json").read_text())
    facets = [json.loads(p.read_text()) for p in sorted((SPEC_DIR / "facets").glob("*.json"))]
    custom = [*shipped_schemas(), slurm_facet_schema()]
    registry = Registry().with_resources([(s["$id"], Resource.from_contents(s)) for s in [core, *facets, *custom]])
    facet_files: dict[tuple[str, str], str] = {}
    for s in [*facets, *custom]:
        for key in s.get("properties", {}):
            facet_files[(_place(s["$id"]), key)] = s["$id"]
    return registry, facet_files, core["$id"]


def available() -> bool:
    """Whether events can be validated: the schemas are part of the tests, so always; a missing file is
    an error here, never a reason to skip."""
    missing = [p for p in [SPEC_DIR / "OpenLineage.json", SPEC_DIR / "facets"] if not p.exists()]
    if missing:
        raise FileNotFoundError(f"OpenLineage JSON Schemas missing from the tests: {missing}")
    return True


def validate_event(event: dict[str, Any]) -> None:
    """Validate the event, then every run/job/dataset facet it carries as ``{key: facet}``."""
    registry, facet_files, core_id = _load()
    Draft202012Validator({"$ref": core_id + "#/$defs/RunEvent"}, registry=registry).validate(event)
    facets: list[tuple[str, str, Any]] = []
    facets += [("run", k, f) for k, f in (event.get("run", {}).get("facets") or {}).items()]
    facets += [("job", k, f) for k, f in (event.get("job", {}).get("facets") or {}).items()]
    for ds in [*event.get("inputs", []), *event.get("outputs", [])]:
        facets += [("dataset", k, f) for k, f in (ds.get("facets") or {}).items()]
        facets += [("input", k, f) for k, f in (ds.get("inputFacets") or {}).items()]
        facets += [("output", k, f) for k, f in (ds.get("outputFacets") or {}).items()]
    for place, key, facet in facets:
        schema_id = facet_files.get((place, key))
        if schema_id is None:
            if key in PRODUCER_FACETS:
                continue
            raise AssertionError(f"{place} facet {key!r} has no schema in {SPEC_DIR} or the isthmus package")
        Draft202012Validator({"$ref": schema_id}, registry=registry).validate({key: facet})
