"""``artifact_versions``: each version (content hash) of an artifact name, with when a step run first and
last produced or reused it under that name (the min and max of those step runs' ``started_at``).

Every writer of output links keeps it in the same transaction: the step-run hot path (a computed step's
finish, a cache hit's claim) merges one row per output link, an ingest of exported records merges the
links of the step runs it created. A merge only ever widens ``[first_at, last_at]``, so writers in any
order agree with the links. ``NAME~N``, ``NAME@latest`` and a name's version list then read the newest
versions from the ``(artifact_name, first_at, content_hash)`` index instead of every link of the name.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import String, and_, bindparam, case, func, select

from isthmus.store import schema as s

_COLUMNS = ["artifact_name", "content_hash", "first_at", "last_at"]


def _insert(dialect: str) -> Any:
    if dialect == "sqlite":  # dialect modules imported here: only the store's own is loaded
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(s.artifact_versions)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(s.artifact_versions)
    raise NotImplementedError(f"artifact versions on {dialect}")  # pragma: no cover - the two backends


def _merged(stmt: Any) -> Any:
    """``stmt`` (an INSERT … SELECT) that widens an existing version's first/last production instead."""
    v, new = s.artifact_versions, stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[v.c.artifact_name, v.c.content_hash],
        set_={
            "first_at": case((new.first_at < v.c.first_at, new.first_at), else_=v.c.first_at),
            "last_at": case((new.last_at > v.c.last_at, new.last_at), else_=v.c.last_at),
        },
    )


def merge_link(dialect: str) -> Any:
    """The statement that merges one output link, executed with ``step_run_id``, ``artifact_name`` and
    ``content_hash`` (many at once): the step run's ``started_at`` becomes the version's first and last
    production, or widens them. Its row must be written already (same transaction)."""
    r = s.step_runs
    produced = select(
        bindparam("artifact_name", type_=String),
        bindparam("content_hash", type_=String),
        r.c.started_at,
        r.c.started_at,
    ).where(r.c.id == bindparam("step_run_id"))  # a WHERE: SQLite parses the ON CONFLICT after it unambiguously
    return _merged(_insert(dialect).from_select(_COLUMNS, produced))


def link_params(links: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parameters of :func:`merge_link` for the output links among ``links`` (rows of
    ``step_run_artifacts``)."""
    return [
        {"step_run_id": x["step_run_id"], "artifact_name": x["artifact_name"], "content_hash": x["content_hash"]}
        for x in links
        if x["role"] == "output"
    ]


def merge_step_runs(dialect: str, step_run_ids: Collection[str] | None = None) -> Any:
    """One set-based statement merging the output links of ``step_run_ids`` (None: every step run, e.g.
    a store whose links were written by hand) into ``artifact_versions``."""
    link, r = s.step_run_artifacts, s.step_runs
    conditions = [link.c.role == "output"]
    if step_run_ids is not None:
        conditions.append(link.c.step_run_id.in_(sorted(step_run_ids)))
    produced = (
        select(link.c.artifact_name, link.c.content_hash, func.min(r.c.started_at), func.max(r.c.started_at))
        .select_from(link.join(r, r.c.id == link.c.step_run_id))
        .where(and_(*conditions))
        .group_by(link.c.artifact_name, link.c.content_hash)
    )
    return _merged(_insert(dialect).from_select(_COLUMNS, produced))
