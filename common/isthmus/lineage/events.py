"""OpenLineage RunEvents as plain JSON-ready dicts, built without importing ``openlineage-python``.

The default file lineage writes these (:mod:`isthmus.lineage.filesink`); a configured OpenLineage transport
gets the client's own objects (:meth:`OpenLineageEmitter._step_event`), which serialize to the same JSON
(a test compares the two). Facet schema URLs are those of the pinned ``openlineage-python``; the
``_producer`` of every facet is isthmus.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import platform
from collections.abc import Callable, Mapping
from typing import Any

from isthmus.lineage.backends import backend_job
from isthmus.lineage.facets import (
    METADATA_FACET,
    SCHEMA_BASE,
    STEP_FACET_SCHEMA,
    metadata_facet_dict,
    output_metadata_facet_dict,
    resources_facet_dict,
    step_facet_dict,
)
from isthmus.lineage.naming import dataset_id, namespace, step_job_name, step_job_namespace, step_run_uuid
from isthmus.lineage.parent import ROOT_KEY, external_parent

PRODUCER = "https://github.com/isthmus-dev/isthmus"
RUN_EVENT_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
_FACETS = "https://openlineage.io/spec/facets"
# The OpenLineage facets isthmus writes, by class name: the spec version of each (as in openlineage-python).
_SPEC_VERSIONS = {
    "ProcessingEngineRunFacet": "1-1-1",
    "NominalTimeRunFacet": "1-0-1",
    "ErrorMessageRunFacet": "1-0-1",
    "ParentRunFacet": "1-2-0",
    "JobTypeJobFacet": "2-0-4",
    "SourceCodeJobFacet": "1-0-1",
    "SourceCodeLocationJobFacet": "1-1-0",
    "OwnershipJobFacet": "1-0-1",
    "TagsJobFacet": "1-0-0",
    "DatasetVersionDatasetFacet": "1-0-1",
    "SchemaDatasetFacet": "1-2-0",
}


def facet(facet_class: str, /, **fields: Any) -> dict[str, Any]:
    """An OpenLineage standard facet (its class name, e.g. ``"JobTypeJobFacet"``) with ``fields``."""
    url = f"{_FACETS}/{_SPEC_VERSIONS[facet_class]}/{facet_class}.json#/$defs/{facet_class}"
    return {"_producer": PRODUCER, "_schemaURL": url, **{k: v for k, v in fields.items() if v is not None}}


def custom_facet(schema_url: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """An ``isthmus_*`` facet with its schema URL (nulls dropped, also inside its nested values)."""
    return {"_producer": PRODUCER, "_schemaURL": schema_url, **drop_nulls(fields)}


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def iso(value: Any) -> str:
    """A datetime as ISO 8601 (naive: UTC); anything else: now."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.isoformat()
    return now_iso()


def drop_nulls(obj: Any) -> Any:
    """What OpenLineage's serializer drops: ``None`` values in mappings, ``None`` and ``{}`` items in lists."""
    if isinstance(obj, dict):
        return {k: drop_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        items = [drop_nulls(v) for v in obj if v is not None]
        return [v for v in items if not (isinstance(v, dict) and not v)]
    return obj


def _non_json(value: Any) -> str:
    return f"<<non-serializable: {type(value).__qualname__}>>"


# json's default separators, as OpenLineage's file transport writes; keys in building order (sorting them
# costs half the encoding time again).
_encode: Callable[[Any], str] = json.JSONEncoder(default=_non_json).encode


def to_json_line(event: Mapping[str, Any]) -> bytes:
    """One event as a line of JSON (ASCII, newline-terminated)."""
    return (_encode(event) + "\n").encode()


def _base_run_facets(orchestrator: str) -> dict[str, Any]:
    import isthmus

    return {
        "processing_engine": facet(
            "ProcessingEngineRunFacet", version=isthmus.__version__, name=f"isthmus/{orchestrator}"
        )
    }


_JOB_TYPES = {kind: facet("JobTypeJobFacet", processingType="BATCH", integration="ISTHMUS", jobType=kind)
              for kind in ("DAG", "TASK")}  # fmt: skip


def pipeline_event(run: Mapping[str, Any], event_type: str) -> dict[str, Any]:
    """The RunEvent of a pipeline run."""
    orchestrator = run.get("orchestrator") or "local"
    run_facets = _base_run_facets(orchestrator)
    run_facets["nominalTime"] = facet("NominalTimeRunFacet", nominalStartTime=iso(run.get("started_at")))
    if run.get("error") and event_type in ("FAIL", "ABORT"):
        run_facets["errorMessage"] = facet(
            "ErrorMessageRunFacet", message=str(run["error"]), programmingLanguage="python"
        )
    return {
        "eventTime": now_iso(),
        "producer": PRODUCER,
        "schemaURL": RUN_EVENT_SCHEMA,
        "eventType": event_type,
        "run": {"runId": str(run["id"]), "facets": run_facets},
        "job": {
            "namespace": namespace(),
            "name": str(run.get("pipeline")),
            "facets": {"jobType": _JOB_TYPES["DAG"]},
        },
        "inputs": [],
        "outputs": [],
    }


def _parent_facet(step_run: Mapping[str, Any]) -> dict[str, Any] | None:
    ctx = step_run.get("context") or {}
    pipeline = ctx.get("pipeline_name")
    external = external_parent(step_run)
    if external:
        parent: dict[str, Any] = {
            "run": {"runId": external["run_id"], "facets": {}},
            "job": {"namespace": external["namespace"], "name": external["job_name"], "facets": {}},
        }
    elif step_run.get("pipeline_run_id") and pipeline:
        parent = {
            "run": {"runId": str(step_run["pipeline_run_id"]), "facets": {}},
            "job": {"namespace": namespace(), "name": str(pipeline), "facets": {}},
        }
    else:
        return None
    root = (ctx.get("native") or {}).get(ROOT_KEY)
    if isinstance(root, dict) and root.get("run_id") and root.get("job_name"):
        parent["root"] = {
            "run": {"runId": str(root["run_id"]), "facets": {}},
            "job": {"namespace": root.get("namespace") or namespace(), "name": str(root["job_name"]), "facets": {}},
        }
    return facet("ParentRunFacet", **parent)


@functools.cache
def _platform_fields() -> tuple[str, str, str]:
    return platform.python_version(), platform.python_implementation(), f"{platform.system()}-{platform.machine()}"


def _environment_fields(step_run: Mapping[str, Any]) -> dict[str, Any]:
    from isthmus.fingerprint.environment import IMAGE_VARS

    version, implementation, plat = _platform_fields()
    return {
        "pythonVersion": version,
        "pythonImplementation": implementation,
        "platform": plat,
        "containerImage": next((os.environ[v] for v in IMAGE_VARS if os.environ.get(v)), None),
        "dependencies": dict(step_run.get("deps") or {}),
        "environmentHash": step_run.get("environment_hash"),
    }


def _backend_facets(step_run: Mapping[str, Any]) -> dict[str, Any]:
    backend = backend_job(step_run)
    if backend is None or backend[0].facets is None:
        return {}
    out = {}
    for key, value in backend[0].facets(step_run).items():
        if not isinstance(value, Mapping):  # an OpenLineage facet object: the backend imported the client
            from openlineage.client.serde import Serde

            value = Serde.to_dict(value)
        out[key] = drop_nulls(dict(value))
    return out


def datasets(refs: Mapping[str, Any], *, output: bool) -> list[dict[str, Any]]:
    """Datasets of artifact refs: ``version`` (content hash), ``schema`` for tables, ``isthmus_metadata``
    for outputs the step logged metadata about."""
    out = []
    for output_name, ref in refs.items():
        if not isinstance(ref, dict) or "uri" not in ref:
            continue
        ns, name = dataset_id(ref["uri"])
        facets: dict[str, Any] = {"version": facet("DatasetVersionDatasetFacet", datasetVersion=ref["content_hash"])}
        columns = (ref.get("metadata") or {}).get("columns")
        if columns:
            fields = [{"name": c["name"], "fields": []} for c in columns]
            for field, column in zip(fields, columns, strict=True):
                if column.get("type") is not None:
                    field["type"] = column["type"]
            facets["schema"] = facet("SchemaDatasetFacet", fields=fields)
        logged = output_metadata_facet_dict(str(output_name), ref) if output else None
        if logged is not None:
            facets[METADATA_FACET] = custom_facet(f"{SCHEMA_BASE}/IsthmusMetadataDatasetFacet.json", logged)
        out.append(_dataset(ns, name, facets, output))
    return out


def _dataset(ns: str, name: str, facets: dict[str, Any], output: bool) -> dict[str, Any]:
    return {"namespace": ns, "name": name, "facets": facets, "outputFacets" if output else "inputFacets": {}}


def step_event(
    step_run: Mapping[str, Any], event_type: str, *, job_facets: Mapping[str, Any], step: Any = None
) -> dict[str, Any]:
    """The RunEvent of a step run. ``job_facets``: the step's source facets as dicts (see
    :func:`source_facets`); ``step``: the Step object (its declared external datasets), if importable."""
    ctx = step_run.get("context") or {}
    orchestrator = step_run.get("orchestrator") or ctx.get("orchestrator") or "local"
    facets = _base_run_facets(orchestrator)
    facets["isthmus_step"] = custom_facet(STEP_FACET_SCHEMA, step_facet_dict(step_run))
    logged = metadata_facet_dict(step_run)
    if logged is not None:
        facets[METADATA_FACET] = custom_facet(f"{SCHEMA_BASE}/IsthmusMetadataRunFacet.json", logged)
    facets["isthmus_environment"] = custom_facet(
        f"{SCHEMA_BASE}/IsthmusEnvironmentRunFacet.json", _environment_fields(step_run)
    )
    facets["isthmus_resources"] = custom_facet(
        f"{SCHEMA_BASE}/IsthmusResourcesRunFacet.json", resources_facet_dict(step_run)
    )
    facets.update(_backend_facets(step_run))
    parent = _parent_facet(step_run)
    if parent is not None:
        facets["parent"] = parent
    if event_type == "FAIL" and step_run.get("error"):
        facets["errorMessage"] = facet(
            "ErrorMessageRunFacet",
            message=str(step_run["error"]),
            programmingLanguage="python",
            stackTrace=step_run.get("traceback"),
        )
    inputs = datasets(step_run.get("inputs") or {}, output=False)
    outputs = datasets(step_run.get("outputs") or {}, output=True) if event_type != "START" else []
    if step is not None:
        inputs += [_dataset(ns, name, {}, False) for ns, name in getattr(step, "lineage_inputs", ())]
        outputs += [_dataset(ns, name, {}, True) for ns, name in getattr(step, "lineage_outputs", ())]
    return {
        "eventTime": now_iso(),
        "producer": PRODUCER,
        "schemaURL": RUN_EVENT_SCHEMA,
        "eventType": event_type,
        "run": {"runId": step_run_uuid(step_run), "facets": facets},
        "job": {
            "namespace": step_job_namespace(step_run),
            "name": step_job_name(step_run),
            "facets": {"jobType": _JOB_TYPES["TASK"], **job_facets},
        },
        "inputs": inputs,
        "outputs": outputs,
    }


def ended(
    start: Mapping[str, Any], step_run: Mapping[str, Any], event_type: str, *, step: Any = None
) -> dict[str, Any]:
    """The end event of ``step_run`` built from its START event ``start`` (:func:`step_event` of the same
    record): the same run and job facets, now, and the outputs. Not for FAIL, whose facets differ."""
    if event_type == "FAIL":
        raise ValueError("a FAIL event carries the error: build it with step_event")
    outputs = datasets(step_run.get("outputs") or {}, output=True)
    if step is not None:
        outputs += [_dataset(ns, name, {}, True) for ns, name in getattr(step, "lineage_outputs", ())]
    return {**start, "eventTime": now_iso(), "eventType": event_type, "outputs": outputs}


def source_facets(obj: Any) -> dict[str, Any]:
    """Job facets from a step's code: ``sourceCode``, ``sourceCodeLocation`` (git), ``ownership``, ``tags``."""
    import inspect

    from isthmus.fingerprint.code import shown_source
    from isthmus.fingerprint.environment import git_info
    from isthmus.redaction import redact_url

    out: dict[str, Any] = {}
    if obj is None:
        return out
    try:
        fn = getattr(obj, "fn", obj)
        out["sourceCode"] = facet("SourceCodeJobFacet", language="python", sourceCode=shown_source(fn))
        path = inspect.getsourcefile(fn)
    except Exception:
        return out
    owner, tags = getattr(obj, "owner", None), getattr(obj, "tags", ())
    if owner:
        out["ownership"] = facet("OwnershipJobFacet", owners=[{"name": str(owner)}])
    if tags:
        out["tags"] = facet("TagsJobFacet", tags=[{"key": str(t), "value": "true", "source": "isthmus"} for t in tags])
    git = git_info(os.path.dirname(path)) if path else None
    if path and git and git.get("remote") and git.get("root"):
        out["sourceCodeLocation"] = facet(
            "SourceCodeLocationJobFacet",
            type="git",
            url=redact_url(git["remote"]),
            repoUrl=redact_url(git["remote"]),
            path=os.path.relpath(path, git["root"]),
            version=git["commit"],
            branch=git.get("branch"),
        )
    return out
