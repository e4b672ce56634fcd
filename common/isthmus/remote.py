"""The remote entrypoint contract: ``python -m isthmus run-step``.

A Slurm job, Kubernetes pod or Flyte container rebuilds the step from its import path, runs it through
the StepRunner, and writes a result manifest (JSON) next to the outputs. With ``record="manifest"``
(compute nodes that cannot reach the metadata database) the run is recorded in a private SQLite file
and its rows travel in the manifest; the submitting side calls :func:`ingest_manifest`.

Contexts, input refs and manifests come from other machines: the manifest path built from a context
stays under the artifact root (:mod:`isthmus.artifacts.paths`), input refs are validated before the
step is imported, and a manifest is validated (:mod:`isthmus.manifest`) and its output artifacts are
hash-verified in the store before any of its rows, cache entries above all, is recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from isthmus import _defaults
from isthmus.artifacts.paths import join_under, safe_component
from isthmus.artifacts.refs import ArtifactRef
from isthmus.artifacts.store import ArtifactStore
from isthmus.config import get_settings
from isthmus.context import RunContext
from isthmus.errors import IsthmusError, StepFailed
from isthmus.lineage_parent import parents_from_env
from isthmus.manifest import MANIFEST_VERSION, ManifestError, output_refs, parse_manifest
from isthmus.runner import StepRunner
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


def _write_json(path: str, data: dict[str, Any]) -> None:
    """Write the manifest atomically (temp + rename, or one PUT); IsthmusError when it cannot be written."""
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
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"manifest {path}: not valid JSON ({exc})") from None


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
        store = _defaults.artifact_store()
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
        arguments: dict[str, Any] = {**(params or {}), **_input_refs(inputs or {})}
    except IsthmusError as exc:  # refused before anything was imported or run
        manifest.update(status="FAILED", error=f"{type(exc).__name__}: {exc}", step_run_id=None)
        _write_json(manifest_path, manifest)
        return {**manifest, "path": manifest_path}
    private_db: str | None = None
    if record == "manifest":
        private_db = os.path.join(tempfile.mkdtemp(prefix="isthmus-run-"), "run.db")
        runner = StepRunner(MetadataStore(f"sqlite:///{private_db}"), _defaults.artifact_store())
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
        result = runner.run(step, arguments, ctx)
    except StepFailed as exc:
        manifest.update(status="FAILED", error=str(exc), step_run_id=exc.step_run_id)
        if exc.step_run_id:
            try:
                manifest["traceback"] = runner.metadata.get_step_run(exc.step_run_id).get("traceback")
            except Exception:
                manifest["traceback"] = None
    except Exception as exc:  # import errors and bad input: nothing ran
        manifest.update(status="FAILED", error=f"{type(exc).__name__}: {exc}", step_run_id=None)
    else:
        manifest.update(
            status="COMPLETED",
            step_run_id=result.step_run_id,
            cache_hit=result.cache_hit,
            source_step_run_id=result.source_step_run_id,
            cache_key=result.cache_key,
            outputs={k: v.to_dict() for k, v in result.outputs.items()},
        )
    if record == "manifest" and private_db:
        manifest["records"] = _export(runner.metadata)
        runner.metadata.dispose()
    _write_json(manifest_path, manifest)
    manifest["path"] = manifest_path
    return manifest


def _export(store: MetadataStore) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    with store.engine.connect() as conn:
        for name in _EXPORTED:
            table = s.metadata.tables[name]
            out[name] = [dict(r) for r in conn.execute(select(table)).mappings()]
    return out


def ingest_manifest(
    store: MetadataStore, manifest: dict[str, Any] | str | Path, *, artifacts: ArtifactStore | None = None
) -> int:
    """Insert the rows a ``record="manifest"`` run carried; returns how many were new. Idempotent.

    The manifest is validated first (:func:`isthmus.manifest.parse_manifest`), then every output artifact it
    vouches for is hash-verified in ``artifacts`` (default: the configured store), whatever
    ``ISTHMUS_VERIFY`` says; any problem raises ManifestError and nothing is recorded.
    """
    source = str(manifest) if isinstance(manifest, (str, Path)) else "(in memory)"
    data = read_manifest(source) if isinstance(manifest, (str, Path)) else manifest
    if isinstance(data, dict) and isinstance(data.get("records"), dict):
        records_in = data["records"]
        revived = {k: [_revive(r) for r in v] if isinstance(v, list) else v for k, v in records_in.items()}
        data = {**data, "records": revived}
    parsed = parse_manifest(data, source)
    if parsed.records is None:
        return 0
    artifacts = artifacts or _defaults.artifact_store()
    for ref in output_refs(parsed):
        if not artifacts.holds(ref):
            raise ManifestError(
                f"manifest {source}: output {ref.content_hash} is at {ref.uri!r:.200}, not in this artifact store "
                f"({artifacts.url}); ingest it where ISTHMUS_ARTIFACT_ROOT is the store the job wrote to"
            )
        if not artifacts.is_valid(ref, "hash"):
            raise ManifestError(
                f"manifest {source}: output {ref.content_hash} is missing from the artifact store or its bytes do "
                "not match; nothing was recorded (re-run the step)"
            )
    records = parsed.records.model_dump()
    pipeline_ids = {r["pipeline_run_id"] for r in records["step_runs"] if r["pipeline_run_id"]}
    known = set()
    for pid in pipeline_ids:
        try:
            if store.resolve_run_id(pid) == pid:
                known.add(pid)
        except IsthmusError:
            pass
    added = 0
    keys = {
        "code_snapshots": ["hash"],
        "environments": ["hash"],
        "step_runs": ["id"],
        "artifacts": ["content_hash"],
        "step_run_artifacts": ["step_run_id", "role", "name"],
        "cache_entries": ["cache_key", "step_run_id"],
    }
    try:
        for name in _EXPORTED:
            rows = records[name]
            if not rows:
                continue
            if name == "step_runs":
                for r in rows:
                    if r.get("pipeline_run_id") not in known:
                        r["pipeline_run_id"] = None
            table = s.metadata.tables[name]
            stmt = store._insert_ignore(table, keys[name]).returning(*[table.c[k] for k in keys[name]])
            added += int(store._run_write(lambda c, st=stmt, rs=rows: len(c.execute(st, rs).all())))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ManifestError(f"manifest {source}: the metadata store refused its records ({reason[:300]})") from None
    return added
