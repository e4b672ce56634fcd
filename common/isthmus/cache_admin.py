"""Cache housekeeping: expired entries, entries with missing artifacts, partial writes, orphans."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from isthmus.artifacts.errors import InvalidArtifactRef
from isthmus.artifacts.refs import ArtifactRef
from isthmus.run_closing import abort_dead_processes
from isthmus.store.metadata import MetadataStore

if TYPE_CHECKING:
    from isthmus.artifacts.store import ArtifactStore


def prune(
    meta: MetadataStore, artifacts: ArtifactStore, *, delete_unreferenced: bool = False, grace: float = 3600.0
) -> dict[str, int]:
    """Clean the cache; objects younger than ``grace`` seconds are never deleted (they may be in flight).
    Step runs left RUNNING by a dead process (its lease expired, or its pid is gone on this host) are
    marked ABORTED and their leases dropped; the local pipeline runs such a process drove are closed
    (:func:`isthmus.run_closing.abort_dead_processes`)."""
    dead = abort_dead_processes(meta, by="isthmus cache prune")
    report = {
        "aborted": len(dead.aborted),
        "runs_closed": len(dead.closed),
        "expired": meta.prune_expired(time.time()),
        "missing": 0,
        "tmp": artifacts.clean_tmp(grace),
        "unreferenced": 0,
    }
    gone: list[tuple[str, str]] = []
    for cache_key, step_run_id, outputs in meta.cache_entry_outputs():
        try:
            refs = [ArtifactRef.from_dict(v) for v in (outputs if isinstance(outputs, dict) else {}).values()]
        except (InvalidArtifactRef, TypeError, ValueError):
            refs = None  # a malformed recorded ref can never be served: the entry goes
        if refs is None or not all(artifacts.exists(r) for r in refs):
            gone.append((cache_key, step_run_id))
    report["missing"] = meta.drop_cache_entries(gone)
    if delete_unreferenced and artifacts.local:
        known = meta.referenced_hashes()
        cutoff = time.time() - grace
        for content_hash, _size in artifacts.iter_objects():
            path = artifacts.path_for(content_hash)
            if content_hash not in known and os.stat(path).st_mtime < cutoff:
                os.remove(path)
                report["unreferenced"] += 1
    return report


def describe(meta: MetadataStore) -> dict[str, Any]:
    entries = meta.list_cache_entries(limit=1_000_000)
    return {"entries": len(entries), "steps": sorted({e["step_name"] for e in entries})}
