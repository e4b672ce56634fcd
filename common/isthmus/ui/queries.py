"""Read queries the web UI needs beyond :class:`isthmus.Client`: one page of the runs list.

The page is found on the ``started_at`` index (keyset pagination: the cursor is the last row's start time
and id, so page 500 costs what page 1 costs), then the step and cache-hit counts are read for that page's
runs only (the ``pipeline_run_id`` index), never aggregated over the whole ``step_runs`` table.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, or_, select

from isthmus.governance.scope import Projects, limited, run_in
from isthmus.store import schema as s
from isthmus.store.metadata import MetadataStore

PAGE_LIMIT = 200


@dataclass(frozen=True)
class RunFilters:
    """What the runs list shows: any of pipeline, orchestrator, status and project (exact matches)."""

    pipeline: str | None = None
    orchestrator: str | None = None
    status: str | None = None
    project: str | None = None

    def to_query(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v}


@dataclass
class RunsPage:
    """Runs newest first, and the cursor of the next page (None on the last page)."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None


def encode_cursor(row: dict[str, Any]) -> str:
    started = row["started_at"]
    return f"{started.isoformat()}|{row['id']}"


def decode_cursor(cursor: str) -> tuple[dt.datetime, str] | None:
    """``(started_at, id)`` of a cursor; None for text that is not one (a hostile query string)."""
    when, sep, run_id = str(cursor).partition("|")
    if not sep or len(run_id) > 36:
        return None
    try:
        return dt.datetime.fromisoformat(when), run_id
    except ValueError:
        return None


def _naive_if_sqlite(metadata: MetadataStore, value: dt.datetime) -> dt.datetime:
    if metadata.dialect == "sqlite" and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def runs_page(
    metadata: MetadataStore,
    filters: RunFilters,
    *,
    limit: int = 50,
    cursor: str | None = None,
    scope: Projects = None,
) -> RunsPage:
    """One page of pipeline runs matching ``filters`` (and in ``scope``: a caller's runs), each with
    ``steps``, ``hits`` and ``failed`` counts."""
    p, r = s.pipeline_runs, s.step_runs
    limit = max(1, min(int(limit), PAGE_LIMIT))
    query = select(p).order_by(p.c.started_at.desc(), p.c.id.desc()).limit(limit + 1)
    for column, value in (
        (p.c.pipeline, filters.pipeline),
        (p.c.orchestrator, filters.orchestrator),
        (p.c.status, filters.status),
    ):
        if value:
            query = query.where(column == value)
    if filters.project and "project" in p.c:
        query = query.where(p.c.project == filters.project)
    if limited(scope):
        query = query.where(run_in(scope))
    position = decode_cursor(cursor) if cursor else None
    if position is not None:
        started, run_id = position
        started = _naive_if_sqlite(metadata, started)
        query = query.where(or_(p.c.started_at < started, and_(p.c.started_at == started, p.c.id < run_id)))
    with metadata.engine.connect() as conn:
        rows = [dict(x) for x in conn.execute(query).mappings()]
        more = len(rows) > limit
        rows = rows[:limit]
        counts: dict[str, tuple[int, int, int]] = {}
        if rows:
            count_query = (
                select(
                    r.c.pipeline_run_id,
                    func.count(),
                    func.sum(func.cast(r.c.cache_hit, s.Integer)),
                    func.sum(func.cast(r.c.status == "FAILED", s.Integer)),
                )
                .where(r.c.pipeline_run_id.in_([x["id"] for x in rows]))
                .group_by(r.c.pipeline_run_id)
            )
            counts = {str(k): (int(n), int(h or 0), int(f or 0)) for k, n, h, f in conn.execute(count_query)}
    for row in rows:
        row["steps"], row["hits"], row["failed"] = counts.get(str(row["id"]), (0, 0, 0))
    return RunsPage(rows, encode_cursor(rows[-1]) if more and rows else None)
