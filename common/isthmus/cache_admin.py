"""Cache housekeeping: expired entries, entries with missing artifacts, partial writes, orphans."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from isthmus.artifacts.errors import InvalidArtifactRef
from isthmus.artifacts.refs import ArtifactRef
from isthmus.gc import abandoned_parts  # gc's dry run counts partial writes by this rule
from isthmus.run_closing import abort_dead_processes
from isthmus.store import schema as s
from isthmus.store.metadata import MetadataStore

if TYPE_CHECKING:
    from isthmus.artifacts.store import ArtifactStore


def prune(
    meta: MetadataStore,
    artifacts: ArtifactStore,
    *,
    delete_unreferenced: bool = False,
    grace: float = 3600.0,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Clean the cache; objects younger than ``grace`` seconds are never deleted (they may be in flight).
    Step runs left RUNNING by a dead process (its lease expired, or its pid is gone on this host) are
    marked ABORTED and their leases dropped; the local pipeline runs such a process drove are closed
    (:func:`isthmus.run_closing.abort_dead_processes`). Returns how many of each went (``closed_runs``:
    the ids of the runs closed); ``dry_run``: how many would, changing nothing."""
    dead = abort_dead_processes(meta, by="isthmus cache prune", dry_run=dry_run)
    now = time.time()
    expired: set[tuple[str, str]] = set()  # in a dry run: the entries prune_expired would drop
    if dry_run:
        expired = _expired(meta, now)
        expired_count = len(expired)
        tmp = sum(1 for p in abandoned_parts(artifacts, now - grace) if not p.remote)  # what clean_tmp removes
    else:
        expired_count = meta.prune_expired(now)
        tmp = artifacts.clean_tmp(grace)
    report: dict[str, Any] = {
        "aborted": len(dead.aborted),
        "runs_closed": len(dead.closed),
        "closed_runs": [c.run_id for c in dead.closed],
        "expired": expired_count,
        "missing": 0,
        "tmp": tmp,
        "unreferenced": 0,
    }
    gone: list[tuple[str, str]] = []
    for cache_key, step_run_id, outputs in meta.cache_entry_outputs():
        if (cache_key, step_run_id) in expired:
            continue  # dropped as expired first
        try:
            refs = [ArtifactRef.from_dict(v) for v in (outputs if isinstance(outputs, dict) else {}).values()]
        except (InvalidArtifactRef, TypeError, ValueError):
            refs = None  # a malformed recorded ref can never be served: the entry goes
        if refs is None or not all(artifacts.exists(r) for r in refs):
            gone.append((cache_key, step_run_id))
    report["missing"] = len(gone) if dry_run else meta.drop_cache_entries(gone)
    if delete_unreferenced and artifacts.local:
        known = meta.referenced_hashes()
        cutoff = time.time() - grace
        for content_hash, _size in artifacts.iter_objects():
            path = artifacts.path_for(content_hash)
            if content_hash not in known and os.stat(path).st_mtime < cutoff:
                if not dry_run:
                    os.remove(path)
                report["unreferenced"] += 1
    return report


def _expired(meta: MetadataStore, now: float) -> set[tuple[str, str]]:
    """(cache key, step run id) of the entries :meth:`MetadataStore.prune_expired` would drop now."""
    e = s.cache_entries
    query = select(e.c.cache_key, e.c.step_run_id).where(e.c.expires_at.is_not(None), e.c.expires_at <= now)
    with meta.engine.connect() as conn:
        return {(str(key), str(sid)) for key, sid in conn.execute(query)}


def describe(meta: MetadataStore) -> dict[str, Any]:
    entries = meta.list_cache_entries(limit=1_000_000)
    return {"entries": len(entries), "steps": sorted({e["step_name"] for e in entries})}
