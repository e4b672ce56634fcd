"""The SQLite hot path that runs claim/start/finish straight on the driver stores exactly what SQLAlchemy
stores, reads back what SQLAlchemy reads, raises SQLAlchemy's exceptions and leaves nothing of a failed
transaction."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError

from isthmus.store import metadata as m
from isthmus.store import schema as s
from isthmus.store.direct import DirectConnection, run_direct
from isthmus.store.metadata import MetadataStore


@pytest.fixture
def store(tmp_path: Path) -> MetadataStore:
    st = MetadataStore(f"sqlite:///{tmp_path / 'isthmus.db'}")
    st.create_pipeline_run({"id": "p1", "pipeline": "demo", "orchestrator": "local"})  # type: ignore[typeddict-item]
    return st


def _row(step_run_id: str) -> dict[str, object]:
    return {
        "id": step_run_id,
        "pipeline_run_id": "p1",
        "invocation": "train",
        "step_name": "train",
        "step_path": "pkg.mod:train",
        "orchestrator": "local",
        "attempt": 1,
        "status": "COMPLETED",
        "cache_hit": True,
        "cache_key": "k" * 64,
        "params": {"lr": 0.1, "tags": ["a", "é"], "nested": {"none": None}},
        "inputs": {},
        "outputs": {"out": {"content_hash": "blake3:" + "0" * 64}},
        "context": {},
        "metadata": {"accuracy": 0.899},
        "started_at": dt.datetime(2026, 12, 1, 6, 30, 1, 123456, tzinfo=dt.timezone.utc),
        "duration_ms": 1.5,
    }


def test_a_row_written_on_the_driver_is_stored_as_sqlalchemy_stores_it(store: MetadataStore, tmp_path: Path) -> None:
    with store._write() as conn:
        conn.execute(m._INSERT_STEP_RUN, _row("by-sqlalchemy"))
    run_direct(store.engine, store._compiled, lambda c: c.execute(m._INSERT_STEP_RUN, _row("direct")))
    raw = sqlite3.connect(tmp_path / "isthmus.db")
    raw.row_factory = sqlite3.Row
    stored = {r["id"]: dict(r) for r in raw.execute("SELECT * FROM step_runs")}
    a, b = stored.pop("by-sqlalchemy"), stored.pop("direct")
    assert {k: v for k, v in a.items() if k != "id"} == {k: v for k, v in b.items() if k != "id"}
    assert store.get_step_run("direct")["params"] == _row("x")["params"]  # read back through SQLAlchemy


def test_none_in_json_columns_is_stored_as_sqlalchemy_stores_it(store: MetadataStore, tmp_path: Path) -> None:
    """SQLAlchemy's JSON type stores None as JSON ``'null'``, also in NOT NULL columns."""
    nones = {"metadata": None, "outputs": None, "deps": None, "resources": None, "params": None}
    with store._write() as conn:
        conn.execute(m._INSERT_STEP_RUN, {**_row("by-sqlalchemy"), **nones})
    run_direct(store.engine, store._compiled, lambda c: c.execute(m._INSERT_STEP_RUN, {**_row("direct"), **nones}))
    raw = sqlite3.connect(tmp_path / "isthmus.db")
    columns = ", ".join(f"{name}, typeof({name})" for name in nones)
    rows = {r[0]: r[1:] for r in raw.execute(f"SELECT id, {columns} FROM step_runs")}
    assert rows["direct"] == rows["by-sqlalchemy"]
    assert rows["direct"][:2] == ("null", "text")
    assert store.get_step_run("direct")["metadata"] is None


def test_a_value_a_type_cannot_store_raises_sqlalchemys_statement_error(store: MetadataStore) -> None:
    bad = {**_row("bad"), "params": {"x": object()}}
    with pytest.raises(StatementError, match="not JSON serializable"):
        run_direct(store.engine, store._compiled, lambda c: c.execute(m._INSERT_STEP_RUN, bad))
    with pytest.raises(StatementError, match="not JSON serializable"), store._write() as conn:
        conn.execute(m._INSERT_STEP_RUN, bad)


def test_each_store_keeps_its_own_compiled_statements(tmp_path: Path) -> None:
    stores = [MetadataStore(f"sqlite:///{tmp_path / f'{i}.db'}") for i in range(3)]
    for st in stores:
        run_direct(st.engine, st._compiled, lambda c: c.execute(m._RELEASE_LEASE, {"_key": "k", "_holder": "h"}))
    assert len({id(st._compiled) for st in stores}) == 3
    assert all(st._compiled._entries for st in stores)


def test_an_update_and_a_select_on_the_driver_read_as_sqlalchemy_reads(store: MetadataStore) -> None:
    with store._write() as conn:
        conn.execute(m._INSERT_STEP_RUN, _row("r1"))
        conn.execute(
            m._INSERT_CACHE_ENTRY,
            {"cache_key": "k" * 64, "step_run_id": "r1", "step_name": "train", "created_at": 1.0, "expires_at": None},
        )
    ended = dt.datetime(2026, 12, 1, 7, 0, tzinfo=dt.timezone.utc)
    done = run_direct(
        store.engine,
        store._compiled,
        lambda c: c.execute(m._UPDATE_STEP_RUN, {"_id": "r1", "ended_at": ended, "cache_hit": False}),
    )
    assert done.rowcount == 1
    args = {"key": "k" * 64, "now": 2.0, "limit": 5}
    direct = run_direct(store.engine, store._compiled, lambda c: c.execute(m._CANDIDATES, args).mappings())
    with store._read() as conn:
        expected = [dict(r) for r in conn.execute(m._CANDIDATES, args).mappings()]
    assert direct == expected and direct[0]["outputs"] == _row("x")["outputs"]
    row = store.get_step_run("r1")
    assert row["ended_at"] == ended.replace(tzinfo=None)  # SQLite keeps UTC without the offset, as always
    assert row["cache_hit"] is False


def test_a_failed_statement_raises_sqlalchemys_error_and_nothing_of_the_transaction_stays(
    store: MetadataStore,
) -> None:
    def work(c: DirectConnection) -> None:
        c.execute(m._INSERT_STEP_RUN, _row("first"))
        c.execute(m._INSERT_STEP_RUN, _row("first"))  # the same primary key

    with pytest.raises(IntegrityError):
        run_direct(store.engine, store._compiled, work)
    with store._read() as conn:
        assert conn.execute(select(s.step_runs.c.id)).all() == []
    run_direct(
        store.engine, store._compiled, lambda c: c.execute(m._INSERT_STEP_RUN, _row("after"))
    )  # the connection is usable
    assert store.get_step_run("after")["id"] == "after"


def test_a_held_write_lock_surfaces_as_sqlalchemys_operational_error(store: MetadataStore, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "isthmus.db", isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    raw = store.engine.raw_connection()
    raw.driver_connection.execute("PRAGMA busy_timeout=50")  # type: ignore[union-attr]
    raw.close()
    try:
        with pytest.raises(OperationalError, match="locked"):
            run_direct(
                store.engine, store._compiled, lambda c: c.execute(m._RELEASE_LEASE, {"_key": "k", "_holder": "h"})
            )
    finally:
        other.execute("ROLLBACK")
        other.close()
        raw = store.engine.raw_connection()
        raw.driver_connection.execute("PRAGMA busy_timeout=60000")  # type: ignore[union-attr]
        raw.close()
    run_direct(store.engine, store._compiled, lambda c: c.execute(m._RELEASE_LEASE, {"_key": "k", "_holder": "h"}))


def test_a_statement_that_needs_sqlalchemys_machinery_is_refused(store: MetadataStore) -> None:
    expanding = select(s.step_runs.c.id).where(s.step_runs.c.id.in_(["a", "b"]))
    with pytest.raises(TypeError, match="machinery"):
        run_direct(store.engine, store._compiled, lambda c: c.execute(expanding, {}))
