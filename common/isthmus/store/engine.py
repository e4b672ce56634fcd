"""Engine set-up: SQLite in WAL mode with write transactions that take the lock up front; server databases
with a pool that pings a connection only after it sat idle."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.pool import NullPool

T = TypeVar("T")
WRITE = "isthmus_write"


# A pooled server connection is pinged before use only when it sat idle this long: a connection used
# moments ago is alive (a ``SELECT 1`` per transaction would add a round trip to every step record).
IDLE_PING_SECONDS = 10.0
# Server connections are replaced after this long, whatever their use (idle timeouts of proxies, failovers).
POOL_RECYCLE_SECONDS = 1800
_USED = "isthmus_used"
WAL_AUTOCHECKPOINT_PAGES = 4000  # SQLite's default is 1000 pages (4 MB at the default 4 KiB page size)


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_size=2, max_overflow=4, pool_recycle=POOL_RECYCLE_SECONDS)
        _ping_after_idle(engine)
        return engine
    if parsed.database and parsed.database != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": 60, "check_same_thread": False},
        poolclass=NullPool if parsed.database in (None, "", ":memory:") else None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=60000")
        _enable_wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
        # A step run rewrites the same few index pages in every transaction: a longer WAL between
        # checkpoints (16 MB instead of 4 MB) copies each of them to the database once instead of four
        # times, and syncs a quarter as often. (The last connection to close checkpoints what is left.)
        cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA temp_store=MEMORY")  # the sets a query builds (NOT IN, DISTINCT) stay off the disk
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock at BEGIN: a deferred transaction that upgrades later can fail
        # with "database is locked" without waiting for the busy timeout.
        # Straight to the driver: this runs for every transaction, and SQLAlchemy's execution
        # machinery costs more than the statement.
        conn.connection.driver_connection.execute(
            "BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN"
        )

    return engine


def _ping_after_idle(engine: Engine) -> None:
    """Ping a pooled connection at checkout only when it was idle for ``IDLE_PING_SECONDS``; a dead one is
    replaced (the pool retries with a new connection). A connection that fails in use is invalidated by
    SQLAlchemy, and with it every pooled connection older than the failure, so the next checkout of any
    of them reconnects instead of failing again."""

    @event.listens_for(engine, "connect")
    def _on_connect(_dbapi_conn: Any, record: Any) -> None:
        record.info[_USED] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info[_USED] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        used = record.info.get(_USED)
        if used is not None and time.monotonic() - used < IDLE_PING_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError(f"pooled connection idle since {used}: {exc}") from exc
        if alive is False:
            raise DisconnectionError("pooled connection failed its ping")
        record.info[_USED] = time.monotonic()


def _enable_wal(cur: Any) -> None:
    """Switch the database to WAL once (the mode is stored in the file). Several processes opening a new
    database at once race for this; switching can report "locked" without waiting, so retry."""
    import sqlite3

    delay = 0.01
    for attempt in range(200):
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() and "busy" not in str(exc).lower() or attempt == 199:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


_DEADLOCK = "40P01"  # PostgreSQL's deadlock_detected: the server rolled back one of the transactions


def retry_locked(fn: Callable[[], T], *, attempts: int = 20) -> T:
    """Run ``fn`` again when SQLite still reports the database locked (after its busy timeout), or when
    PostgreSQL chose its transaction to break a deadlock."""
    delay = 0.05
    for i in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            text = str(exc).lower()
            again = "locked" in text or "busy" in text or getattr(exc.orig, "sqlstate", None) == _DEADLOCK
            if not again or i == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")
