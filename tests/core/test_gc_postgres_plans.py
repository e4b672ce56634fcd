"""gc on PostgreSQL anti-joins its "not needed" sets: no per-row rescan of a set (EXPLAIN of every statement).

A ``NOT IN (subquery)`` whose set PostgreSQL cannot hash within ``work_mem`` runs as a plain subplan
that rescans the whole set for every artifact — quadratic: plain ``gc`` at 100,000 step runs ran past
30 s. Planned with the smallest ``work_mem``, as a store outgrowing it would be, no statement may hold one.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from isthmus.store.metadata import MetadataStore
from tests.helpers import queries_run

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_lineage_gc import fill  # noqa: E402

# a subplan run per row: "NOT (SubPlan 3)", "(SubPlan 2)" — a hashed one ("hashed SubPlan 1") is built once
PER_ROW_SUBPLAN = re.compile(r"(?<!hashed )SubPlan \d+\)")


@pytest.fixture(scope="module")
def pg_filled(pg_server: Any) -> Iterator[MetadataStore]:
    url = pg_server.create_database("gcplans")
    meta = MetadataStore(url)
    fill(meta, 2000)  # 500 runs of 4 steps in 10 pipelines
    with meta.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")
    yield meta
    meta.dispose()
    pg_server.drop_database(url)


def _pg_plans(meta: MetadataStore, fn: Callable[[], Any]) -> list[tuple[str, list[str]]]:
    """Each SELECT ``fn`` ran, with its plan under ``work_mem`` = 64kB (the smallest PostgreSQL allows)."""
    seen = queries_run(meta.engine, fn)
    raw = meta.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SET work_mem = '64kB'")
        plans = []
        for statement, params in seen:
            cursor.execute("EXPLAIN " + statement, params)
            plans.append((statement, [str(row[0]) for row in cursor.fetchall()]))
        return plans
    finally:
        raw.close()


@pytest.mark.parametrize("dry_run", [False, True], ids=["plan", "dry-run"])
@pytest.mark.parametrize("prune_cache", [False, True], ids=["keep-cache", "prune-cache"])
@pytest.mark.parametrize("keep_last", [None, 2, 20], ids=["all-kept", "few-kept", "many-kept"])
def test_gc_statements_anti_join_on_postgres(
    pg_filled: MetadataStore, keep_last: int | None, prune_cache: bool, dry_run: bool
) -> None:
    meta = pg_filled
    when: dict[str, Any] = {
        "now": 10**10,
        "fresh": dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc),
        "prune_cache": prune_cache,
        "keep_last": keep_last,
        "age_cutoff": None,
    }
    plans = _pg_plans(
        meta,
        (lambda: meta.retention_summary(**when, listing=100)) if dry_run else (lambda: meta.retention_plan(**when)),
    )
    for statement, plan in plans:
        per_row = [line for line in plan if PER_ROW_SUBPLAN.search(line)]
        assert not per_row, (statement, "\n".join(plan))
