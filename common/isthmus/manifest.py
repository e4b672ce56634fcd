"""The result manifest of ``run-step``: its schema, and the checks a manifest passes before it is ingested.

A manifest is a file another machine wrote: untrusted. :func:`parse_manifest` validates its shape
(pydantic, unknown fields and versions refused) and its consistency (every cache entry belongs to a
completed step run of the same manifest with the same key; every artifact row matches a ref of a step
run). A problem is one :class:`ManifestError` line naming the manifest, the field and the fix.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from isthmus.artifacts.refs import ArtifactRef, check_content_hash
from isthmus.errors import IsthmusError

MANIFEST_VERSION = 1


class ManifestError(IsthmusError, ValueError):
    """A result manifest is unreadable, malformed, inconsistent, or its artifacts do not verify."""


def _ref(value: Any) -> dict[str, Any]:
    ArtifactRef.from_dict(value)  # raises InvalidArtifactRef (a ValueError: reported by pydantic)
    return value


Text = Annotated[str, StringConstraints(max_length=1 << 20)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=36, pattern=r"^[A-Za-z0-9._:-]+$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Status = Annotated[str, StringConstraints(min_length=1, max_length=16, pattern=r"^[A-Z_]+$")]
AnyHash = Annotated[str, StringConstraints(max_length=80, pattern=r"^[a-z0-9]+:[0-9a-f]{16,72}$")]
ContentHash = Annotated[str, AfterValidator(check_content_hash)]
RefDict = Annotated[dict[str, Any], AfterValidator(_ref)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CodeSnapshotRow(_Strict):
    hash: AnyHash
    components: dict[str, str]
    sources: dict[str, str]
    created_at: dt.datetime


class EnvironmentRow(_Strict):
    hash: AnyHash
    data: dict[str, Any]
    created_at: dt.datetime


class StepRunRow(_Strict):
    id: Id
    pipeline_run_id: Id | None = None
    invocation: Name
    step_name: Name
    step_path: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    orchestrator: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    attempt: Annotated[int, Field(ge=0, le=1_000_000)]
    status: Status
    error: Text | None = None
    traceback: Text | None = None
    code_hash: AnyHash | None = None
    deps_hash: AnyHash | None = None
    deps: dict[str, Any] | None = None
    environment_hash: AnyHash | None = None
    params: dict[str, Any]
    inputs: dict[str, RefDict]
    outputs: dict[str, RefDict] | None = None
    cache_key: AnyHash | None = None
    cache_hit: bool
    source_step_run_id: Id | None = None
    resources: dict[str, Any] | None = None
    context: dict[str, Any]
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    duration_ms: float | None = None


class ArtifactRow(_Strict):
    content_hash: ContentHash
    uri: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    size: Annotated[int, Field(ge=0)]
    materializer: Name
    python_type: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    metadata: dict[str, Any] | None = None
    producer_step_run_id: Id | None = None
    created_at: dt.datetime


class StepRunArtifactRow(_Strict):
    step_run_id: Id
    role: Literal["input", "output"]
    name: Name
    content_hash: ContentHash
    artifact_name: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class CacheEntryRow(_Strict):
    cache_key: AnyHash
    step_run_id: Id
    step_name: Name
    created_at: float
    expires_at: float | None = None


class Records(_Strict):
    code_snapshots: list[CodeSnapshotRow] = []
    environments: list[EnvironmentRow] = []
    step_runs: list[StepRunRow] = []
    artifacts: list[ArtifactRow] = []
    step_run_artifacts: list[StepRunArtifactRow] = []
    cache_entries: list[CacheEntryRow] = []


class Manifest(BaseModel):
    """A ``run-step`` result manifest (version 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: Literal[1]
    step: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    context: dict[str, Any]
    record: Literal["db", "manifest"]
    status: Literal["COMPLETED", "FAILED"]
    step_run_id: Id | None = None
    error: Text | None = None
    traceback: Text | None = None
    cache_hit: bool | None = None
    source_step_run_id: Id | None = None
    cache_key: AnyHash | None = None
    outputs: dict[str, RefDict] | None = None
    records: Records | None = None
    path: str | None = None  # added by run_remote's return value, never written; tolerated


def _where(error: dict[str, Any]) -> str:
    return ".".join(str(p) for p in error["loc"]) or "(top level)"


def parse_manifest(data: Any, source: str) -> Manifest:
    """The validated manifest; raises ManifestError (one line) for any problem of shape or consistency."""
    if not isinstance(data, dict):
        raise ManifestError(f"manifest {source}: must be a JSON object, got {type(data).__name__}")
    version = data.get("version")
    if version != MANIFEST_VERSION:
        raise ManifestError(
            f"manifest {source}: version {version!r} is not supported (this isthmus reads version "
            f"{MANIFEST_VERSION}); run the step with the same isthmus version on both sides"
        )
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        message = str(first.get("msg", "invalid")).replace("\n", " ")
        raise ManifestError(
            f"manifest {source}: {_where(first)}: {message[:300]}{more}; it was not written by run-step or was altered"
        ) from None
    _check_consistency(manifest, source)
    return manifest


def _check_consistency(manifest: Manifest, source: str) -> None:
    def fail(what: str) -> None:
        raise ManifestError(f"manifest {source}: {what}; it was not written by run-step or was altered")

    records = manifest.records or Records()
    runs = {r.id: r for r in records.step_runs}
    if len(runs) != len(records.step_runs):
        fail("records.step_runs has duplicate ids")
    if manifest.status == "COMPLETED" and manifest.outputs is None:
        fail("status is COMPLETED but there are no outputs")
    if manifest.records is not None and manifest.status == "COMPLETED":
        own = runs.get(manifest.step_run_id or "")
        if own is None or own.status != "COMPLETED" or own.outputs != manifest.outputs:
            fail(f"outputs do not match the recorded step run {manifest.step_run_id!r}")
    refs: dict[str, ArtifactRef] = {}
    for run in records.step_runs:
        for value in [*(run.outputs or {}).values(), *run.inputs.values()]:
            ref = ArtifactRef.from_dict(value)
            refs.setdefault(ref.content_hash, ref)
    for i, row in enumerate(records.artifacts):
        ref = refs.get(row.content_hash)
        if ref is None or (ref.size, ref.uri, ref.materializer) != (row.size, row.uri, row.materializer):
            fail(f"records.artifacts.{i} ({row.content_hash}) is not an input or output of a recorded step run")
    for i, link in enumerate(records.step_run_artifacts):
        run = runs.get(link.step_run_id)
        side = (run.outputs or {}) if run and link.role == "output" else (run.inputs if run else {})
        if run is None or (side.get(link.name) or {}).get("content_hash") != link.content_hash:
            fail(f"records.step_run_artifacts.{i} does not match the {link.role}s of step run {link.step_run_id!r}")
    for i, entry in enumerate(records.cache_entries):
        run = runs.get(entry.step_run_id)
        if (
            run is None
            or run.status != "COMPLETED"
            or run.cache_key != entry.cache_key
            or run.step_name != entry.step_name
            or run.outputs is None
        ):
            fail(f"records.cache_entries.{i} does not belong to a completed step run of this manifest with that key")


def output_refs(manifest: Manifest) -> list[ArtifactRef]:
    """Every output ref the manifest vouches for: of completed step runs, and the top-level outputs."""
    out: dict[str, ArtifactRef] = {}
    runs = manifest.records.step_runs if manifest.records else []
    values = [v for r in runs if r.status == "COMPLETED" for v in (r.outputs or {}).values()]
    values += list((manifest.outputs or {}).values())
    for value in values:
        ref = ArtifactRef.from_dict(value)
        out.setdefault(f"{ref.content_hash} {ref.uri}", ref)
    return list(out.values())


__all__ = ["MANIFEST_VERSION", "Manifest", "ManifestError", "output_refs", "parse_manifest"]
