"""The remote entrypoint contract: ``python -m isthmus run-step``.

A Slurm job, Kubernetes pod or Flyte container rebuilds the step from its import path, runs it through
the StepRunner, and writes a result manifest (JSON) next to the outputs. With ``record="manifest"``
(compute nodes that cannot reach the metadata database) the run is recorded in a private SQLite file
and its rows travel in the manifest; the submitting side calls :func:`ingest_manifest`.
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

from isthmus import _defaults
from isthmus.artifacts.refs import ArtifactRef
from isthmus.config import get_settings
from isthmus.context import RunContext
from isthmus.errors import IsthmusError, StepFailed
from isthmus.lineage_parent import parents_from_env
from isthmus.runner import StepRunner
from isthmus.step import load_step
from isthmus.store import schema as s
from isthmus.store.metadata import MetadataStore

MANIFEST_VERSION = 1
_EXPORTED = ("code_snapshots", "environments", "step_runs", "artifacts", "step_run_artifacts", "cache_entries")


def default_manifest_path(context: RunContext) -> str:
    """``<artifact root>/manifests/<id>.json``, with the id derived from the run context."""
    root = get_settings().artifact_root
    native = context.native
    ident = native.get("manifest_id") or "-".join(
        str(x)
        for x in (
            context.pipeline_run_id or "adhoc",
            context.invocation or "step",
            native.get("map_index", ""),
            context.attempt,
        )
        if x != ""
    )
    return f"{root.rstrip('/')}/manifests/{ident}.json"


def _write_json(path: str, data: dict[str, Any]) -> None:
    import fsspec

    fs, p = fsspec.core.url_to_fs(path)
    text = json.dumps(data, default=_json_default, sort_keys=True, indent=1)
    if fs.protocol in ("file", "local") or "file" in (
        fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    ):
        os.makedirs(os.path.dirname(p), exist_ok=True)
        tmp = f"{p}.{uuid.uuid4().hex}.part"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, p)
    else:
        fs.pipe_file(p, text.encode())


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"__datetime__": value.isoformat()}
    raise TypeError(type(value).__name__)


def _revive(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__datetime__"}:
            parsed = dt.datetime.fromisoformat(value["__datetime__"])
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
        return {k: _revive(v) for k, v in value.items()}
    return value


def read_manifest(path: str) -> dict[str, Any]:
    import fsspec

    with fsspec.open(path, "r", encoding="utf-8") as fh:
        return json.load(fh)


def run_remote(
    step_path: str,
    *,
    inputs: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    context: RunContext | None = None,
    manifest_path: str | None = None,
    record: str = "db",
) -> dict[str, Any]:
    """Run one step by import path and write its manifest; returns the manifest."""
    ctx = context or RunContext(orchestrator="remote")
    for key, value in parents_from_env().items():  # OPENLINEAGE_PARENT_ID from whoever started this job
        ctx.native.setdefault(key, value)
    manifest_path = manifest_path or default_manifest_path(ctx)
    arguments: dict[str, Any] = dict(params or {})
    for name, value in (inputs or {}).items():
        ref = ArtifactRef.coerce(value)
        if ref is None:
            raise IsthmusError(
                f"run-step: input {name!r} is not an artifact ref: {value!r}; pass it in --params instead"
            )
        arguments[name] = ref
    private_db: str | None = None
    if record == "manifest":
        private_db = os.path.join(tempfile.mkdtemp(prefix="isthmus-run-"), "run.db")
        metadata = MetadataStore(f"sqlite:///{private_db}")
        if ctx.pipeline_run_id:  # the real pipeline run lives in the submitter's store
            metadata.create_pipeline_run(
                {"id": ctx.pipeline_run_id, "pipeline": ctx.pipeline_name or "?", "orchestrator": ctx.orchestrator}
            )
        runner = StepRunner(metadata, _defaults.artifact_store())
    elif record == "db":
        runner = StepRunner()
    else:
        raise IsthmusError(f"run-step: --record {record!r} must be 'db' or 'manifest'")

    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "step": step_path,
        "context": ctx.to_dict(),
        "record": record,
    }
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


def ingest_manifest(store: MetadataStore, manifest: dict[str, Any] | str | Path) -> int:
    """Insert the rows a ``record="manifest"`` run carried; returns how many were new. Idempotent."""
    data = read_manifest(str(manifest)) if isinstance(manifest, (str, Path)) else manifest
    records = data.get("records") or {}
    pipeline_ids = {r.get("pipeline_run_id") for r in records.get("step_runs", []) if r.get("pipeline_run_id")}
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
    for name in _EXPORTED:
        rows = [_revive(r) for r in records.get(name, [])]
        if not rows:
            continue
        if name == "step_runs":
            for r in rows:
                if r.get("pipeline_run_id") not in known:
                    r["pipeline_run_id"] = None
        table = s.metadata.tables[name]
        stmt = store._insert_ignore(table, keys[name]).returning(*[table.c[k] for k in keys[name]])
        added += int(store._run_write(lambda c, st=stmt, rs=rows: len(c.execute(st, rs).all())))
    return added
