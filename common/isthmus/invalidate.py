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

from sqlalchemy import bindparam, func, select

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
    step_runs: list[AffectedStepRun] = field(default_factory=list)  # by depth, start, id; see step_run_count
    derived_artifacts: list[str] = field(default_factory=list)
    cache_entries: int = 0  # dropped (or, in a dry run, that would be)
    marked: int = 0  # step runs newly marked (0 in a dry run)
    aliases: list[str] = field(default_factory=list)  # name@alias pointing at a derived artifact
    step_run_count: int = 0  # every derived step run; ``step_runs`` holds them all unless a listing cut it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SHOWN = (
    "id",
    "pipeline_run_id",
    "invocation",
    "step_name",
    "orchestrator",
    "cache_hit",
    "invalidated_at",
    "started_at",
)


def invalidate_downstream(
    metadata: MetadataStore,
    artifact: str,
    *,
    dry_run: bool = False,
    reason: str | None = None,
    listing: int | None = None,
) -> Invalidation:
    """Drop the cache entries of every step run derived from ``artifact`` (any artifact id) and mark them.

    ``listing``: read and return only the first ``listing`` derived step runs (by depth, start and id);
    the counts, the entries and the marking still cover every one. A raw dataset's downstream can be the
    whole store: the first 50 of 100,000 are listed in 2.0 s, every one in 3.5 s (in process; on
    PostgreSQL 3.0 and 4.6 s)."""
    bad = resolve_artifact(metadata, artifact, numbered=False)
    link, r, e, al = s.step_run_artifacts, s.step_runs, s.cache_entries, s.artifact_aliases
    depth_of: dict[str, int] = {}  # step run id -> the depth it was first reached at
    seen_hashes = {bad.content_hash}
    frontier = [bad.content_hash]
    depth = 0
    # each list bound whole, one statement per depth (isthmus.store.idlists)
    dialect = metadata.dialect
    consuming = select(link.c.step_run_id).where(one_of(link.c.content_hash, "hashes", dialect), link.c.role == "input")
    producing = select(link.c.content_hash).where(one_of(link.c.step_run_id, "runs", dialect), link.c.role == "output")
    with metadata.engine.connect() as conn:
        while frontier:  # ids only: the columns shown are read below, for the step runs listed
            depth += 1
            # (fetched whole: a row at a time costs twice as much, at 25,000 rows a depth)
            found = set(conn.execute(consuming, {"hashes": bound(frontier, dialect)}).scalars().all())
            new = sorted(found - depth_of.keys())  # by the content-hash index
            depth_of.update((x, depth) for x in new)
            outputs = set(conn.execute(producing, {"runs": bound(new, dialect)}).scalars().all()) if new else set()
            frontier = sorted(outputs - seen_hashes)
            seen_hashes.update(frontier)
        derived = sorted(seen_hashes - {bad.content_hash})
        rows = _listed(conn, depth_of, listing, dialect)
        entries = 0
        if dry_run and depth_of:  # every entry under the cache keys of the derived step runs
            keys = select(r.c.cache_key).where(one_of(r.c.id, "runs", dialect))
            counting = select(func.count()).select_from(e).where(e.c.cache_key.in_(keys))
            entries = int(conn.execute(counting, {"runs": bound(sorted(depth_of), dialect)}).scalar() or 0)
        aliases: list[str] = []
        naming = select(al.c.project, al.c.name, al.c.alias).where(one_of(al.c.content_hash, "hashes", dialect))
        if derived:
            home = alias_project()
            rows_of = conn.execute(naming, {"hashes": bound(derived, dialect)}).all()
            aliases.extend(f"{n}@{a}" + ("" if p == home else f" ({p})") for p, n, a in rows_of)
    why = f"derived from {bad.content_hash}" + (f" ({bad.name})" if bad.name else "")
    cleaned = redact_text(" ".join((reason or "").split()))[:1000]
    why = f"{why}: {cleaned}" if cleaned else why
    affected = [
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
        for row in rows
    ]
    marked = 0
    if not dry_run and depth_of:
        marked, entries = metadata.invalidate_step_runs(sorted(depth_of), why)
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
        step_run_count=len(depth_of),
    )


def _listed(conn: Any, depth_of: dict[str, int], listing: int | None, dialect: str) -> list[Any]:
    """The shown columns of the derived step runs, by depth, start and id: every one, or the first
    ``listing``. Depth by depth, each sorted in the database (one order, whether cut or not)."""
    r = s.step_runs
    ordered = select(*(r.c[name] for name in _SHOWN)).where(one_of(r.c.id, "runs", dialect))
    ordered = ordered.order_by(r.c.started_at, r.c.id)
    first = ordered.limit(bindparam("n"))
    by_depth: dict[int, list[str]] = {}
    for step_run_id, depth in depth_of.items():
        by_depth.setdefault(depth, []).append(step_run_id)
    out: list[Any] = []
    for depth in sorted(by_depth):
        ids = {"runs": bound(sorted(by_depth[depth]), dialect)}
        if listing is None:
            out.extend(conn.execute(ordered, ids).mappings())
        elif len(out) < listing:
            out.extend(conn.execute(first, {**ids, "n": listing - len(out)}).mappings())
    return out
