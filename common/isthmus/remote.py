"""The remote entrypoint contract: ``python -m isthmus run-step``.

A Slurm job, Kubernetes pod or Flyte container rebuilds the step from its import path, runs it through
the StepRunner, and writes a result manifest (JSON) next to the outputs. With ``record="manifest"``
(compute nodes that cannot reach the metadata database) the run is recorded in a private SQLite file
and its rows travel in the manifest; the submitting side calls :func:`ingest_manifest`.

Contexts, input refs and manifests come from other machines: the manifest path built from a context
stays under the artifact root (:mod:`isthmus.artifacts.paths`), input refs are validated before the
step is imported, and a manifest is validated (:mod:`isthmus.manifest`) and every artifact it names is
hash-verified in the store before any of its rows is recorded.

What an ingested manifest may create:

- an *authenticated* manifest (signed with the job's key, ``$ISTHMUS_MANIFEST_KEY`` where run-step ran,
  the same key given to :func:`ingest_manifest`) records its rows: step runs, artifact rows (each at this
  store's own uri for its hash), code and environment snapshots, links, and cache entries — for step runs
  this ingest created, never for a step run id the store already had;
- any other manifest records only its step runs (marked ``native.isthmus_manifest = "unauthenticated"``,
  outside any pipeline run) and their artifact links: no cache entry, no artifact row, no snapshot. It is
  history, not evidence that the step computed those outputs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from isthmus import defaults
from isthmus.artifacts.paths import join_under, safe_component
from isthmus.artifacts.refs import MAX_JSON_DEPTH, ArtifactRef, json_depth_error
from isthmus.artifacts.store import ArtifactStore
from isthmus.config import get_settings
from isthmus.context import RunContext
from isthmus.errors import IsthmusError, StepFailed
from isthmus.lineage.parent import parents_from_env
from isthmus.manifest import (
    MANIFEST_VERSION,
    Manifest,
    ManifestError,
    artifact_refs,
    is_authentic,
    key_from_env,
    manifest_tag,
    parse_manifest,
)
from isthmus.records import RunStatus
from isthmus.runner import StepRunner
from isthmus.secret_params import secret_params_from_env, secret_texts
from isthmus.step import load_step
from isthmus.store import schema as s
from isthmus.store.metadata import MetadataStore

_MAX_MANIFEST_BYTES = 256 * 1024 * 1024
_EXPORTED = ("code_snapshots", "environments", "step_runs", "artifacts", "step_run_artifacts", "cache_entries")


def default_manifest_path(context: RunContext) -> str:
    """``<artifact root>/manifests/<id>.json``, with the id derived from the run context.

    The id's parts come from the orchestrator (run ids, task names) and may be chosen by whoever triggers
    a run: each must be a plain file-name part, or UnsafePath is raised and nothing is written.
    """
    root = get_settings().artifact_root
    native = context.native
    if native.get("manifest_id") is not None:
        ident = safe_component(native["manifest_id"], "run context native.manifest_id")
    else:
        parts = [
            (context.pipeline_run_id or "adhoc", "run context pipeline_run_id"),
            (context.invocation or "step", "run context invocation"),
            (native.get("map_index", ""), "run context native.map_index"),
            (context.attempt, "run context attempt"),
        ]
        ident = "-".join(safe_component(value, what) for value, what in parts if value != "")
    return join_under(root, "manifests", safe_component(f"{ident}.json", "manifest file name"))


def _write_json(path: str, data: dict[str, Any], key: bytes | None = None) -> None:
    """Write the manifest atomically (temp + rename, or one PUT), signed with ``key`` when given;
    IsthmusError when it cannot be written."""
    if key is not None:
        written = json.loads(json.dumps(data, default=_json_default))  # the tag covers the JSON form
        data = {**data, "auth": {"alg": "hmac-sha256", "tag": manifest_tag(written, key)}}
    try:
        _put_json(path, data)
    except OSError as exc:
        raise IsthmusError(
            f"run-step: cannot write the manifest {path} ({exc.strerror or exc}); pass --manifest with a writable "
            "location, or fix ISTHMUS_ARTIFACT_ROOT (manifests go under it by default)"
        ) from None


def _put_json(path: str, data: dict[str, Any]) -> None:
    import fsspec

    fs, p = fsspec.core.url_to_fs(path)
    text = json.dumps(data, default=_json_default, sort_keys=True, indent=1)
    if fs.protocol in ("file", "local") or "file" in (
        fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    ):
        os.makedirs(os.path.dirname(p), exist_ok=True)
        tmp = f"{p}.{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        fs.pipe_file(p, text.encode())


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"__datetime__": value.isoformat()}
    raise TypeError(type(value).__name__)


def _revive(value: Any) -> Any:
    """A row's ``{"__datetime__": iso}`` columns back to datetimes (JSON columns hold none)."""
    if isinstance(value, dict):
        return {k: _revive_datetime(v) for k, v in value.items()}
    return value


def _revive_datetime(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__datetime__"} and isinstance(value["__datetime__"], str):
        try:
            parsed = dt.datetime.fromisoformat(value["__datetime__"])
        except ValueError:
            return value  # refused by the manifest schema, with its field named
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    return value


def read_manifest(path: str) -> dict[str, Any]:
    """The manifest's JSON (not yet validated); raises ManifestError when it cannot be read or parsed."""
    import fsspec

    try:
        with fsspec.open(path, "rb") as fh:
            raw = fh.read(_MAX_MANIFEST_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise ManifestError(f"manifest {path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest {path}: larger than {_MAX_MANIFEST_BYTES >> 20} MiB; not a run-step manifest")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"manifest {path}: not valid JSON ({exc})") from None
    except RecursionError:
        data = None
    problem = "nests deeper than JSON can be read" if data is None else json_depth_error(data)
    if problem:
        raise ManifestError(f"manifest {path}: {problem} (at most {MAX_JSON_DEPTH} levels); not a run-step manifest")
    return data


def check_context(ctx: RunContext) -> RunContext:
    """``ctx`` if its fields have the types and sizes the store records; raises IsthmusError otherwise."""

    def fail(field: str, value: Any, want: str) -> None:
        raise IsthmusError(f"run-step: --context {field}={value!r:.80} must be {want}")

    if not isinstance(ctx.orchestrator, str) or not 0 < len(ctx.orchestrator) <= 32:
        fail("orchestrator", ctx.orchestrator, "a name of 1-32 characters")
    if type(ctx.attempt) is not int or not 0 <= ctx.attempt <= 1_000_000:
        fail("attempt", ctx.attempt, "a non-negative integer")
    for field, limit in (("pipeline_run_id", 36), ("invocation", 255), ("pipeline_name", 255)):
        value = getattr(ctx, field)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= limit):
            fail(field, value, f"null or a string of 1-{limit} characters")
    if not isinstance(ctx.native, dict):
        fail("native", ctx.native, "a JSON object")
    return ctx


def _input_refs(inputs: dict[str, Any]) -> dict[str, ArtifactRef]:
    """The input refs, each valid and of this process's artifact store (checked before any import)."""
    refs: dict[str, ArtifactRef] = {}
    for name, value in inputs.items():
        store = defaults.artifact_store()
        try:
            ref = ArtifactRef.coerce(value)
            if ref is not None:
                store.check_ref(ref)
        except IsthmusError as exc:
            raise type(exc)(f"run-step: input {name!r}: {exc}") from None
        if ref is None:
            raise IsthmusError(
                f"run-step: input {name!r} is not an artifact ref: {value!r:.200}; pass it in --params instead"
            )
        refs[name] = ref
    return refs


def run_remote(
    step_path: str,
    *,
    inputs: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    context: RunContext | None = None,
    manifest_path: str | None = None,
    record: str = "db",
) -> dict[str, Any]:
    """Run one step by import path and write its manifest; returns the manifest.

    A context whose ids cannot name a file under the artifact root raises UnsafePath (nothing is written);
    an invalid input ref, an import error or a failure of the step gives a FAILED manifest.
    """
    signing_key = key_from_env(remove=True)  # the step never sees the key its manifest is signed with
    ctx = check_context(context or RunContext(orchestrator="remote"))
    if record not in ("db", "manifest"):
        raise IsthmusError(f"run-step: --record {record!r} must be 'db' or 'manifest'")
    for key, value in parents_from_env().items():  # OPENLINEAGE_PARENT_ID from whoever started this job
        ctx.native.setdefault(key, value)
    manifest_path = manifest_path or default_manifest_path(ctx)
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "step": step_path,
        "context": ctx.to_dict(),
        "record": record,
    }
    try:
        # secret parameters come through the job's credentials file (see isthmus.secret_params)
        hidden = secret_params_from_env()
        arguments: dict[str, Any] = {**(params or {}), **hidden, **_input_refs(inputs or {})}
    except IsthmusError as exc:  # refused before anything was imported or run
        manifest.update(status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}", step_run_id=None)
        _write_json(manifest_path, manifest, signing_key)
        return {**manifest, "path": manifest_path}
    private_db: str | None = None
    if record == "manifest":
        private_db = os.path.join(tempfile.mkdtemp(prefix="isthmus-run-"), "run.db")
        runner = StepRunner(MetadataStore(f"sqlite:///{private_db}"), defaults.artifact_store())
    else:
        runner = StepRunner()
    if ctx.pipeline_run_id:
        # The step run belongs to this pipeline run: the submitter normally created it (with record="manifest"
        # the real one lives in the submitter's store); a job started by hand creates it here.
        runner.metadata.ensure_pipeline_run(
            {"id": ctx.pipeline_run_id, "pipeline": ctx.pipeline_name or "?", "orchestrator": ctx.orchestrator}
        )

    try:
        step = load_step(step_path)
        result = runner.run(step, arguments, ctx, secrets=secret_texts(hidden))
    except StepFailed as exc:
        manifest.update(status=RunStatus.FAILED, error=str(exc), step_run_id=exc.step_run_id)
        if exc.step_run_id:
            try:
                manifest["traceback"] = runner.metadata.get_step_run(exc.step_run_id).get("traceback")
            except Exception:
                manifest["traceback"] = None
    except Exception as exc:  # import errors and bad input: nothing ran
        manifest.update(status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}", step_run_id=None)
    else:
        manifest.update(
            status=RunStatus.COMPLETED,
            step_run_id=result.step_run_id,
            cache_hit=result.cache_hit,
            source_step_run_id=result.source_step_run_id,
            cache_key=result.cache_key,
            outputs={k: v.to_dict() for k, v in result.outputs.items()},
        )
    if record == "manifest" and private_db:
        manifest["records"] = _export(runner.metadata)
        runner.metadata.dispose()
    _write_json(manifest_path, manifest, signing_key)
    manifest["path"] = manifest_path
    return manifest


# A store's own marks (``isthmus invalidate``), never carried from one store to another.
_LOCAL_COLUMNS = {"step_runs": frozenset({"invalidated_at", "invalidated_reason"})}


def _export(store: MetadataStore) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    with store.engine.connect() as conn:
        for name in _EXPORTED:
            table = s.metadata.tables[name]
            local = _LOCAL_COLUMNS.get(name, frozenset())
            rows = conn.execute(select(table)).mappings()
            out[name] = [{k: v for k, v in r.items() if k not in local} for r in rows]
    return out


@dataclass(frozen=True)
class IngestResult:
    """What :func:`ingest` recorded: new rows, of which cache entries, and whether the manifest was
    authenticated (only then does it create cache entries, artifact rows and snapshots)."""

    added: int
    cache_entries: int
    authenticated: bool


_KEYS = {
    "code_snapshots": ["hash"],
    "environments": ["hash"],
    "step_runs": ["id"],
    "artifacts": ["content_hash"],
    "step_run_artifacts": ["step_run_id", "role", "name"],
    "cache_entries": ["cache_key", "step_run_id"],
}


def ingest_manifest(
    store: MetadataStore,
    manifest: dict[str, Any] | str | Path,
    *,
    artifacts: ArtifactStore | None = None,
    key: bytes | None = None,
) -> int:
    """:func:`ingest`, returning how many rows were new."""
    return ingest(store, manifest, artifacts=artifacts, key=key).added


def ingest(
    store: MetadataStore,
    manifest: dict[str, Any] | str | Path,
    *,
    artifacts: ArtifactStore | None = None,
    key: bytes | None = None,
) -> IngestResult:
    """Insert the rows a ``record="manifest"`` run carried. Idempotent.

    The manifest is validated first (:func:`isthmus.manifest.parse_manifest`), then every artifact it names
    (inputs and outputs) must be of ``artifacts`` (default: the configured store) and match its hash,
    whatever ``ISTHMUS_VERIFY`` says; any problem raises ManifestError and nothing is recorded. What is
    recorded depends on whether the manifest is authentic under ``key`` (see the module docstring); a tag
    that does not verify under ``key`` is refused as an altered manifest.
    """
    source = str(manifest) if isinstance(manifest, (str, Path)) else "(in memory)"
    data = read_manifest(source) if isinstance(manifest, (str, Path)) else manifest
    if isinstance(data, dict) and isinstance(manifest, dict):
        problem = json_depth_error(data)
        if problem:
            raise ManifestError(f"manifest {source}: {problem}; not a run-step manifest")
    authenticated = is_authentic(data, key)
    if key is not None and isinstance(data, dict) and data.get("auth") is not None and not authenticated:
        raise ManifestError(
            f"manifest {source}: its authentication tag does not match the job's key: it was altered after the job "
            "wrote it, or it is another job's manifest; nothing was recorded"
        )
    if isinstance(data, dict) and isinstance(data.get("records"), dict):
        records_in = data["records"]
        revived = {k: [_revive(r) for r in v] if isinstance(v, list) else v for k, v in records_in.items()}
        data = {**data, "records": revived}
    parsed = parse_manifest(data, source)
    if parsed.records is None:
        return IngestResult(0, 0, authenticated)
    artifacts = artifacts or defaults.artifact_store()
    _verify_artifacts(parsed, artifacts, source)
    records = parsed.records.model_dump()
    known_pipelines = _known_pipeline_runs(store, records["step_runs"]) if authenticated else set()
    for run in records["step_runs"]:
        if run.get("pipeline_run_id") not in known_pipelines:
            run["pipeline_run_id"] = None
        if not authenticated:
            run["source_step_run_id"] = None
            context = dict(run["context"])
            context["native"] = {**(context.get("native") or {}), "isthmus_manifest": "unauthenticated"}
            run["context"] = context
    if not authenticated:
        for name in ("code_snapshots", "environments", "artifacts", "cache_entries"):
            records[name] = []

    def work(conn: Any) -> dict[str, int]:
        counts: dict[str, int] = {}
        new_runs: set[str] = set()
        for name in _EXPORTED:  # step runs before their links and cache entries
            rows = records[name]
            if name in ("step_run_artifacts", "cache_entries"):  # only for step runs this ingest created
                rows = [r for r in rows if r["step_run_id"] in new_runs]
            if name == "step_run_artifacts":  # the versions they make, locked in one order by every writer
                rows = sorted(rows, key=lambda r: (str(r["artifact_name"]), str(r["content_hash"])))
            if not rows:
                continue
            table = s.metadata.tables[name]
            stmt = store._insert_ignore(table, _KEYS[name]).returning(*[table.c[k] for k in _KEYS[name]])
            inserted = conn.execute(stmt, rows).all()
            if name == "step_runs":
                new_runs.update(row[0] for row in inserted)
            counts[name] = len(inserted)
        return counts

    try:
        counts = store._run_write(work)  # one transaction: all of it or nothing
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ManifestError(f"manifest {source}: the metadata store refused its records ({reason[:300]})") from None
    return IngestResult(sum(counts.values()), counts.get("cache_entries", 0), authenticated)


def _verify_artifacts(parsed: Manifest, artifacts: ArtifactStore, source: str) -> None:
    """Every ref the manifest names is of ``artifacts`` and its bytes match, and every artifact row is at
    the store's own uri for its hash; raises ManifestError otherwise."""
    for ref in artifact_refs(parsed):
        if not artifacts.holds(ref):
            raise ManifestError(
                f"manifest {source}: artifact {ref.content_hash} is at {ref.uri!r:.200}, not in this artifact store "
                f"({artifacts.url}); ingest it where ISTHMUS_ARTIFACT_ROOT is the store the job wrote to"
            )
        try:
            artifacts.check_ref(ref, loading=False)
        except IsthmusError as exc:
            raise ManifestError(f"manifest {source}: {exc}") from None
        if not artifacts.is_valid(ref, "hash"):
            raise ManifestError(
                f"manifest {source}: artifact {ref.content_hash} is missing from the artifact store or its bytes do "
                "not match; nothing was recorded (re-run the step)"
            )
    for i, row in enumerate(parsed.records.artifacts if parsed.records else []):
        if row.uri != artifacts.uri_for(row.content_hash):
            raise ManifestError(
                f"manifest {source}: records.artifacts.{i} ({row.content_hash}) has uri {row.uri!r:.200}, not this "
                "artifact store's for that hash; it was not written by run-step or was altered"
            )


def _known_pipeline_runs(store: MetadataStore, step_runs: list[dict[str, Any]]) -> set[str]:
    known = set()
    for pid in {r["pipeline_run_id"] for r in step_runs if r["pipeline_run_id"]}:
        try:
            if store.resolve_run_id(pid) == pid:
                known.add(pid)
        except IsthmusError:
            pass
    return known
