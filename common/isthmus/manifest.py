"""The result manifest of ``run-step``: its schema, its authentication, and the checks a manifest passes
before it is ingested.

A manifest is a file another machine wrote: untrusted. :func:`parse_manifest` validates its shape
(pydantic, unknown fields and versions refused) and its consistency (every cache entry belongs to a
completed step run of the same manifest with the same key; every artifact row matches a ref of a step
run, and names as its producer only a step run that output it). A problem is one :class:`ManifestError`
line naming the manifest, the field and the fix.

Hash-checked outputs do not prove that the step computed them: anyone who can write the manifest file can
name any artifact of the store. So a job signs its manifest: ``auth`` is an HMAC-SHA256 of the manifest's
canonical JSON under a key the submitter generated for that job and handed to it in its environment
(:data:`MANIFEST_KEY_ENV`, from the job's 0600 ``job.env``; never in the batch script, the job record or
the manifest). :func:`job_manifest_key` derives that key from the metadata store's secret salt and the
job's directory, so whichever process collects the job derives it again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic_core import ErrorDetails

from isthmus.artifacts.refs import ArtifactRef, check_content_hash, metadata_problem
from isthmus.errors import IsthmusError
from isthmus.records import RunStatus

MANIFEST_VERSION = 1
MANIFEST_KEY_ENV = "ISTHMUS_MANIFEST_KEY"  # 64 hex digits: the key run-step signs its manifest with
_KEY = re.compile(r"[0-9a-f]{64}")


class ManifestError(IsthmusError, ValueError):
    """A result manifest is unreadable, malformed, inconsistent, or its artifacts do not verify."""


def parse_key(text: str, where: str = MANIFEST_KEY_ENV) -> bytes:
    """The 32-byte key written as 64 lowercase hex digits; raises ManifestError otherwise."""
    value = text.strip().lower()
    if not _KEY.fullmatch(value):
        raise ManifestError(
            f"{where} must be 64 hex digits (a 32-byte key, e.g. python -c 'import secrets; print(secrets.token_hex(32))'),"
            f" got {len(value)} characters"
        )
    return bytes.fromhex(value)


def key_from_env(*, remove: bool = False) -> bytes | None:
    """The manifest key in ``$ISTHMUS_MANIFEST_KEY`` (None when unset); ``remove`` takes it out of the
    environment, so the step a job runs never sees it."""
    text = os.environ.pop(MANIFEST_KEY_ENV, None) if remove else os.environ.get(MANIFEST_KEY_ENV)
    return parse_key(text) if text else None


def job_manifest_key(salt: bytes, job_dir: str) -> bytes:
    """The key of the job whose directory is ``job_dir``, derived from a metadata store's secret salt:
    every process that shares the store derives it again, and no job can derive another job's key."""
    return hmac.new(salt, b"isthmus manifest key v1\x00" + job_dir.encode(), hashlib.sha256).digest()


def _signed_text(data: dict[str, Any]) -> bytes:
    """The canonical JSON the tag covers: the manifest as written, without ``auth`` and ``path``."""
    payload = {k: v for k, v in data.items() if k not in ("auth", "path")}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_tag(data: dict[str, Any], key: bytes) -> str:
    """The authentication tag of a manifest in its JSON form (as written to or read from the file)."""
    return hmac.new(key, _signed_text(data), hashlib.sha256).hexdigest()


def is_authentic(data: Any, key: bytes | None) -> bool:
    """Whether ``data`` (a manifest's JSON) carries a valid tag under ``key``."""
    if key is None or not isinstance(data, dict):
        return False
    auth = data.get("auth")
    if not isinstance(auth, dict) or auth.get("alg") != "hmac-sha256" or not isinstance(auth.get("tag"), str):
        return False
    try:
        expected = manifest_tag(data, key)
    except (TypeError, ValueError, RecursionError):
        return False
    return hmac.compare_digest(expected, auth["tag"])


def _ref(value: Any) -> dict[str, Any]:
    ArtifactRef.from_dict(value)  # raises InvalidArtifactRef (a ValueError: reported by pydantic)
    return value


Text = Annotated[str, StringConstraints(max_length=1 << 20)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=36, pattern=r"^[A-Za-z0-9._:-]+$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Status = Annotated[str, StringConstraints(min_length=1, max_length=16, pattern=r"^[A-Z_]+$")]
AnyHash = Annotated[str, StringConstraints(max_length=80, pattern=r"^[a-z0-9]+:[0-9a-f]{16,72}$")]


def _logged(value: dict[str, Any]) -> dict[str, Any]:
    problem = metadata_problem(value)
    if problem:
        raise ValueError(f"step run metadata {problem}")
    return value


ContentHash = Annotated[str, AfterValidator(check_content_hash)]
LoggedMetadata = Annotated[dict[str, Any], AfterValidator(_logged)]
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
    metadata: LoggedMetadata | None = None  # what the step logged (isthmus.log_metadata)


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


class ManifestAuth(_Strict):
    alg: Literal["hmac-sha256"]
    tag: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


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
    auth: ManifestAuth | None = None
    path: str | None = None  # added by run_remote's return value, never written; tolerated


def _where(error: ErrorDetails) -> str:
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
    if manifest.status == RunStatus.COMPLETED and manifest.outputs is None:
        fail("status is COMPLETED but there are no outputs")
    if manifest.records is not None and manifest.status == RunStatus.COMPLETED:
        own = runs.get(manifest.step_run_id or "")
        if own is None or own.status != RunStatus.COMPLETED or own.outputs != manifest.outputs:
            fail(f"outputs do not match the recorded step run {manifest.step_run_id!r}")
    refs: dict[str, ArtifactRef] = {}
    for run in records.step_runs:
        for value in [*(run.outputs or {}).values(), *run.inputs.values()]:
            ref = ArtifactRef.from_dict(value)
            refs.setdefault(ref.content_hash, ref)
    for i, row in enumerate(records.artifacts):
        known = refs.get(row.content_hash)
        if known is None or (known.size, known.uri, known.materializer, known.python_type) != (
            row.size,
            row.uri,
            row.materializer,
            row.python_type,
        ):
            fail(f"records.artifacts.{i} ({row.content_hash}) is not an input or output of a recorded step run")
        producer = runs.get(row.producer_step_run_id or "")
        if row.producer_step_run_id is not None and (
            producer is None
            or row.content_hash not in {v.get("content_hash") for v in (producer.outputs or {}).values()}
        ):
            fail(f"records.artifacts.{i} names a producer that is not a step run of this manifest with that output")
    for i, link in enumerate(records.step_run_artifacts):
        linked = runs.get(link.step_run_id)
        side = (linked.outputs or {}) if linked and link.role == "output" else (linked.inputs if linked else {})
        if linked is None or (side.get(link.name) or {}).get("content_hash") != link.content_hash:
            fail(f"records.step_run_artifacts.{i} does not match the {link.role}s of step run {link.step_run_id!r}")
    for i, entry in enumerate(records.cache_entries):
        owner = runs.get(entry.step_run_id)
        if (
            owner is None
            or owner.status != RunStatus.COMPLETED
            or owner.cache_key != entry.cache_key
            or owner.step_name != entry.step_name
            or owner.outputs is None
        ):
            fail(f"records.cache_entries.{i} does not belong to a completed step run of this manifest with that key")


def artifact_refs(manifest: Manifest) -> list[ArtifactRef]:
    """Every ref the manifest names: inputs and outputs of its step runs, and the top-level outputs."""
    out: dict[str, ArtifactRef] = {}
    runs = manifest.records.step_runs if manifest.records else []
    values = [v for r in runs for v in [*(r.outputs or {}).values(), *r.inputs.values()]]
    values += list((manifest.outputs or {}).values())
    for value in values:
        ref = ArtifactRef.from_dict(value)
        out.setdefault(f"{ref.content_hash} {ref.uri}", ref)
    return list(out.values())


__all__ = [
    "MANIFEST_KEY_ENV",
    "MANIFEST_VERSION",
    "Manifest",
    "ManifestError",
    "artifact_refs",
    "is_authentic",
    "job_manifest_key",
    "key_from_env",
    "manifest_tag",
    "parse_key",
    "parse_manifest",
]
