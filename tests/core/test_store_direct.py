"""The hot path that runs claim/start/finish straight on the driver (SQLite and PostgreSQL) stores exactly
what SQLAlchemy stores, reads back what SQLAlchemy reads, raises SQLAlchemy's exceptions and leaves nothing
of a failed transaction."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError

from isthmus.store import metadata as m
from isthmus.store import schema as s
from isthmus.store.direct import DirectConnection, run_direct
from isthmus.store.metadata import MetadataStore


@pytest.fixture
def store(metadata_store: MetadataStore) -> MetadataStore:
    """A store on SQLite and on PostgreSQL, with one pipeline run."""
    metadata_store.create_pipeline_run({"id": "p1", "pipeline": "demo", "orchestrator": "local"})  # type: ignore[typeddict-item]
    return metadata_store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> MetadataStore:
    st = MetadataStore(f"sqlite:///{tmp_path / 'isthmus.db'}")
    st.create_pipeline_run({"id": "p1", "pipeline": "demo", "orchestrator": "local"})  # type: ignore[typeddict-item]
    return st


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelined"])
def pipelined(request: pytest.FixtureRequest) -> bool:
    """PostgreSQL's hot path sends a transaction's statements together (psycopg's pipeline mode) and
    reads a result when asked; SQLite runs each at once either way."""
    return bool(request.param)


def _direct(pipelined: bool, store: MetadataStore, fn: Any) -> Any:
    return run_direct(store.engine, store._compiled, fn, pipelined=pipelined)


def _stored(store: MetadataStore, sql: str) -> dict[str, tuple[object, ...]]:
    """Rows as the driver returns them, by their first column."""
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(sql)
        rows = {str(r[0]): tuple(r[1:]) for r in cur.fetchall()}
        raw.rollback()
        return rows
    finally:
        raw.close()


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


def test_a_row_written_on_the_driver_is_stored_as_sqlalchemy_stores_it(store: MetadataStore, pipelined: bool) -> None:
    with store._write() as conn:
        conn.execute(m._INSERT_STEP_RUN, _row("by-sqlalchemy"))
    _direct(pipelined, store, lambda c: c.execute(m._INSERT_STEP_RUN, _row("direct")))
    columns = ", ".join(c.name for c in s.step_runs.c if c.name != "id")
    stored = _stored(store, f"SELECT id, {columns} FROM step_runs")
    assert stored["direct"] == stored["by-sqlalchemy"]
    assert store.get_step_run("direct")["params"] == _row("x")["params"]  # read back through SQLAlchemy


def test_none_in_json_columns_is_stored_as_sqlalchemy_stores_it(store: MetadataStore, pipelined: bool) -> None:
    """SQLAlchemy's JSON type stores None as JSON ``null`` (not SQL NULL), also in NOT NULL columns."""
    nones = {"metadata": None, "outputs": None, "deps": None, "resources": None, "params": None}
    with store._write() as conn:
        conn.execute(m._INSERT_STEP_RUN, {**_row("by-sqlalchemy"), **nones})
    _direct(pipelined, store, lambda c: c.execute(m._INSERT_STEP_RUN, {**_row("direct"), **nones}))
    columns = ", ".join(f"{name} IS NULL" for name in nones)
    rows = _stored(store, f"SELECT id, {columns} FROM step_runs")
    assert rows["direct"] == rows["by-sqlalchemy"] == (False,) * len(nones)
    assert store.get_step_run("direct")["metadata"] is None


def test_a_value_a_type_cannot_store_raises_what_sqlalchemy_raises(store: MetadataStore, pipelined: bool) -> None:
    """SQLite: SQLAlchemy's StatementError (its JSON processor fails); PostgreSQL: the driver's TypeError."""
    bad = {**_row("bad"), "params": {"x": object()}}
    with pytest.raises(Exception, match="not JSON serializable") as by_sqlalchemy, store._write() as conn:
        conn.execute(m._INSERT_STEP_RUN, bad)
    with pytest.raises(Exception, match="not JSON serializable") as direct:
        _direct(pipelined, store, lambda c: c.execute(m._INSERT_STEP_RUN, bad))
    assert type(direct.value) is type(by_sqlalchemy.value)
    assert isinstance(direct.value, StatementError if store.dialect == "sqlite" else TypeError)


def test_each_store_keeps_its_own_compiled_statements(tmp_path: Path) -> None:
    stores = [MetadataStore(f"sqlite:///{tmp_path / f'{i}.db'}") for i in range(3)]
    for st in stores:
        run_direct(st.engine, st._compiled, lambda c: c.execute(m._RELEASE_LEASE, {"_key": "k", "_holder": "h"}))
    assert len({id(st._compiled) for st in stores}) == 3
    assert all(st._compiled._entries for st in stores)


def test_an_update_and_a_select_on_the_driver_read_as_sqlalchemy_reads(store: MetadataStore, pipelined: bool) -> None:
    with store._write() as conn:
        for step_run_id in ("r1", "r2"):
            conn.execute(m._INSERT_STEP_RUN, _row(step_run_id))
        conn.execute(
            m._INSERT_CACHE_ENTRY,
            {"cache_key": "k" * 64, "step_run_id": "r1", "step_name": "train", "created_at": 1.0, "expires_at": None},
        )
    values = {"ended_at": dt.datetime(2026, 12, 1, 7, 0, tzinfo=dt.timezone.utc), "cache_hit": False}
    done = _direct(pipelined, store, lambda c: c.execute(m._UPDATE_STEP_RUN, {"_id": "r1", **values}))
    assert done.rowcount == 1
    with store._write() as conn:
        conn.execute(m._UPDATE_STEP_RUN, {"_id": "r2", **values})
    direct, by_sqlalchemy = store.get_step_run("r1"), store.get_step_run("r2")
    assert (direct["ended_at"], direct["cache_hit"]) == (by_sqlalchemy["ended_at"], by_sqlalchemy["cache_hit"])
    assert direct["cache_hit"] is False
    assert direct["ended_at"].replace(tzinfo=None) == values["ended_at"].replace(tzinfo=None)  # type: ignore[attr-defined]
    args = {"key": "k" * 64, "now": 2.0, "limit": 5}
    read = _direct(pipelined, store, lambda c: c.execute(m._CANDIDATES, args).mappings())
    with store._read() as conn:
        expected = [dict(r) for r in conn.execute(m._CANDIDATES, args).mappings()]
    assert read == expected and read[0]["outputs"] == _row("x")["outputs"]
    assert read[0]["created_at"] == 1.0


def test_a_failed_statement_raises_sqlalchemys_error_and_nothing_of_the_transaction_stays(
    store: MetadataStore, pipelined: bool
) -> None:
    def work(c: DirectConnection) -> None:
        c.execute(m._INSERT_STEP_RUN, _row("first"))
        c.execute(m._INSERT_STEP_RUN, _row("first"))  # the same primary key
        c.execute(m._INSERT_STEP_RUN, _row("second"))

    with pytest.raises(IntegrityError):
        _direct(pipelined, store, work)
    with store._read() as conn:
        assert conn.execute(select(s.step_runs.c.id)).all() == []
    _direct(pipelined, store, lambda c: c.execute(m._INSERT_STEP_RUN, _row("after")))  # usable
    assert store.get_step_run("after")["id"] == "after"


def test_a_held_write_lock_surfaces_as_sqlalchemys_operational_error(
    sqlite_store: MetadataStore, tmp_path: Path
) -> None:
    store = sqlite_store
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


@pytest.mark.postgres
def test_after_the_server_drops_every_connection_only_the_next_record_fails(pg_server: Any) -> None:
    """As through SQLAlchemy: the failure that shows the server went away makes every pooled connection
    reconnect, so one step record fails (nothing retries a lost connection), not one per pooled one."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = pg_server.create_database()
    store = MetadataStore(url)
    try:
        store.create_pipeline_run({"id": "p1", "pipeline": "demo", "orchestrator": "local"})  # type: ignore[typeddict-item]
        held = [store.engine.raw_connection() for _ in range(2)]  # two connections in the pool
        for raw in held:
            raw.close()
        plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(plain, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        outcomes = []
        for i in range(3):
            try:
                store.start_step_run(_row(f"after-{i}"))  # type: ignore[arg-type]
                outcomes.append("ok")
            except OperationalError:
                outcomes.append("failed")
        assert outcomes == ["failed", "ok", "ok"]
    finally:
        store.dispose()
        pg_server.drop_database(url)


@pytest.mark.postgres
def test_a_pipelined_transaction_on_a_dropped_connection_fails_once_and_the_next_reconnects(
    pg_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The claim and finish transactions send their statements together: a server that went away fails
    one of them with SQLAlchemy's OperationalError (no psycopg warning on the way) and the next one runs
    on a new connection."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = pg_server.create_database()
    store = MetadataStore(url)
    try:
        store.create_pipeline_run({"id": "p1", "pipeline": "demo", "orchestrator": "local"})  # type: ignore[typeddict-item]
        plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(plain, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )

        def work(c: DirectConnection) -> int:
            c.execute(m._INSERT_STEP_RUN, _row("r1"))
            return c.execute(m._UPDATE_STEP_RUN, {"_id": "r1", "cache_hit": False}).rowcount

        with pytest.raises(OperationalError):
            _direct(True, store, work)
        assert _direct(True, store, work) == 1
        assert store.get_step_run("r1")["cache_hit"] is False
        assert not [r for r in caplog.records if r.name.startswith("psycopg")]
    finally:
        store.dispose()
        pg_server.drop_database(url)


def test_an_interrupted_transaction_leaves_nothing_and_its_connection_fit_for_the_next(
    store: MetadataStore, pipelined: bool
) -> None:
    def interrupted(c: DirectConnection) -> None:
        c.execute(m._INSERT_STEP_RUN, _row("half"))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _direct(pipelined, store, interrupted)
    raw = store.engine.raw_connection()
    try:
        driver: Any = raw.driver_connection
        if store.dialect != "sqlite":
            from psycopg import pq

            assert not driver.autocommit and driver.pgconn.pipeline_status == pq.PipelineStatus.OFF
            assert driver.info.transaction_status == pq.TransactionStatus.IDLE
        else:
            assert not driver.in_transaction
    finally:
        raw.close()
    with store._write() as conn:  # a SQLAlchemy transaction on the pooled connection: atomic as ever
        conn.execute(m._INSERT_STEP_RUN, _row("later"))
    assert [r["id"] for r in store.step_runs_of("p1")] == ["later"]
