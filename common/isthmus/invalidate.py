"""Invalidate what was derived from a bad artifact.

Starting from an artifact, every step run that took it as an input is affected, then every step run that
took one of *their* outputs, and so on (``step_run_artifacts``: inputs → outputs). Their cache entries are
dropped — every entry under their cache keys — so the next runs compute them again; their records stay,
marked ``invalidated_at`` with the reason, and a marked step run is never a cache hit again. The step run
that produced the artifact itself is not touched: it is the data that is bad, not its producer's key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select

from isthmus.artifact_ids import resolve_artifact
from isthmus.governance.projects import alias_project
from isthmus.redaction import redact_text
from isthmus.store import schema as s
from isthmus.store.idlists import bound, one_of
from isthmus.store.metadata import MetadataStore


@dataclass(frozen=True)
class AffectedStepRun:
    """A step run derived from the bad artifact."""

    id: str
    pipeline_run_id: str | None
    invocation: str
    step_name: str
    orchestrator: str
    cache_hit: bool
    depth: int  # 1: took the artifact itself; 2: took an output of a depth-1 step run …
    already_invalidated: bool
    started_at: dt.datetime


@dataclass(frozen=True)
class Invalidation:
    """What ``isthmus invalidate`` did (or, with ``dry_run``, would do)."""

    artifact: str
    name: str | None
    reason: str
    dry_run: bool
    step_runs: list[AffectedStepRun] = field(default_factory=list)
    derived_artifacts: list[str] = field(default_factory=list)
    cache_entries: int = 0  # dropped (or, in a dry run, that would be)
    marked: int = 0  # step runs newly marked (0 in a dry run)
    aliases: list[str] = field(default_factory=list)  # name@alias pointing at a derived artifact

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def invalidate_downstream(
    metadata: MetadataStore, artifact: str, *, dry_run: bool = False, reason: str | None = None
) -> Invalidation:
    """Drop the cache entries of every step run derived from ``artifact`` (any artifact id) and mark them."""
    bad = resolve_artifact(metadata, artifact, numbered=False)
    link, r, e, al = s.step_run_artifacts, s.step_runs, s.cache_entries, s.artifact_aliases
    rows: dict[str, dict[str, Any]] = {}
    depth_of: dict[str, int] = {}
    seen_hashes = {bad.content_hash}
    frontier = [bad.content_hash]
    depth = 0
    columns = [
        r.c[name]
        for name in (
            "id",
            "pipeline_run_id",
            "invocation",
            "step_name",
            "orchestrator",
            "cache_hit",
            "cache_key",
            "invalidated_at",
            "started_at",
        )
    ]
    # each list bound whole, one statement per depth (isthmus.store.idlists)
    dialect = metadata.dialect
    consuming = select(link.c.step_run_id).where(one_of(link.c.content_hash, "hashes", dialect), link.c.role == "input")
    shown = select(*columns).where(one_of(r.c.id, "runs", dialect))
    producing = select(link.c.content_hash).where(one_of(link.c.step_run_id, "runs", dialect), link.c.role == "output")
    with metadata.engine.connect() as conn:
        while frontier:
            depth += 1
            found = conn.execute(consuming, {"hashes": bound(frontier, dialect)}).all()
            new = sorted({str(x) for (x,) in found} - rows.keys())  # by the content-hash index
            outputs: set[str] = set()
            if new:  # by the primary keys (the columns shown, not the snapshots)
                for row in conn.execute(shown, {"runs": bound(new, dialect)}).mappings().all():
                    rows[row["id"]] = dict(row)
                    depth_of[row["id"]] = depth
                outputs.update(str(x) for (x,) in conn.execute(producing, {"runs": bound(new, dialect)}).all())
            frontier = sorted(outputs - seen_hashes)
            seen_hashes.update(frontier)
        derived = sorted(seen_hashes - {bad.content_hash})
        keys = sorted({str(row["cache_key"]) for row in rows.values() if row["cache_key"]})
        counting = select(func.count()).where(one_of(e.c.cache_key, "keys", dialect))
        entries = int(conn.execute(counting, {"keys": bound(keys, dialect)}).scalar() or 0) if keys else 0
        aliases: list[str] = []
        naming = select(al.c.project, al.c.name, al.c.alias).where(one_of(al.c.content_hash, "hashes", dialect))
        if derived:
            home = alias_project()
            rows_of = conn.execute(naming, {"hashes": bound(derived, dialect)}).all()
            aliases.extend(f"{n}@{a}" + ("" if p == home else f" ({p})") for p, n, a in rows_of)
    why = f"derived from {bad.content_hash}" + (f" ({bad.name})" if bad.name else "")
    cleaned = redact_text(" ".join((reason or "").split()))[:1000]
    why = f"{why}: {cleaned}" if cleaned else why
    affected = sorted(
        (
            AffectedStepRun(
                id=row["id"],
                pipeline_run_id=row["pipeline_run_id"],
                invocation=row["invocation"],
                step_name=row["step_name"],
                orchestrator=row["orchestrator"],
                cache_hit=bool(row["cache_hit"]),
                depth=depth_of[row["id"]],
                already_invalidated=row["invalidated_at"] is not None,
                started_at=row["started_at"],
            )
            for row in rows.values()
        ),
        key=lambda x: (x.depth, x.started_at, x.id),
    )
    marked = 0
    if not dry_run and (affected or keys):
        marked, entries = metadata.invalidate_step_runs([x.id for x in affected], keys, why)
    return Invalidation(
        artifact=bad.content_hash,
        name=bad.name,
        reason=why,
        dry_run=dry_run,
        step_runs=affected,
        derived_artifacts=derived,
        cache_entries=entries,
        marked=marked,
        aliases=sorted(aliases),
    )
