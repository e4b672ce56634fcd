"""The step-run hot path (claim, start, finish), run straight on the driver: SQLite and PostgreSQL.

Recording a step run is a handful of tiny statements in one or two transactions. On SQLite each costs a
few microseconds in the database and about 100 µs in SQLAlchemy's execution machinery (connection
checkout events, execution context, result metadata): the machinery was most of the store's share of a
trivial step. Here the same Core statements are compiled once per store and set of parameter names,
their parameters processed by the column types' own bind and result processors (JSON, datetimes,
booleans: stored exactly as SQLAlchemy stores them, tested on both databases), and executed on the
pooled ``sqlite3`` or psycopg connection in a transaction of its own (``BEGIN IMMEDIATE`` … ``COMMIT`` on
SQLite). On PostgreSQL a transaction can run in psycopg's pipeline mode (``pipelined=True``): BEGIN, its
statements and COMMIT are sent without waiting, and the server is waited for only when a result is read
and once at the end — a cache hit's claim costs two round trips instead of four, a computed step's claim
and finish four instead of eleven (each about 0.15–0.2 ms on a local server). Driver errors are raised as
SQLAlchemy's exception classes, so callers and
:func:`~isthmus.store.engine.retry_locked` see what they always saw; a lost server makes the pool
reconnect, as SQLAlchemy does.

Only statements whose compiled form needs nothing at execution time are accepted: no Python-side
column defaults, no expanding ``IN`` parameters (a statement that needs them raises ``TypeError``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import ClauseElement, Select

T = TypeVar("T")
_Processor = Callable[[Any], Any] | None


class _Compiled:
    """One statement compiled for one dialect and one set of parameter names."""

    __slots__ = ("compiled", "sql", "order", "named", "binds", "columns", "types", "results", "dialect")

    def __init__(self, stmt: ClauseElement, dialect: Any, keys: Sequence[str]) -> None:
        compiled: Any = stmt.compile(dialect=dialect, column_keys=list(keys))
        if compiled.insert_prefetch or compiled.update_prefetch or "POSTCOMPILE" in compiled.string:
            raise TypeError(f"statement needs SQLAlchemy's execution machinery, run it on a Connection: {stmt}")
        if compiled.escaped_bind_names:
            raise TypeError(f"statement has bind names that need escaping: {stmt}")
        self.compiled = compiled
        self.sql: str = compiled.string
        self.named = not dialect.positional  # psycopg: %(name)s; sqlite3: ? in positiontup's order
        self.order: Sequence[str] = compiled.positiontup if not self.named else list(compiled.binds)
        self.binds: dict[str, _Processor] = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect) for name, bind in compiled.binds.items()
        }
        self.dialect = dialect
        self.columns: list[str] = []
        self.types: list[Any] = []
        self.results: list[_Processor] | None = None  # built from the first result's column type codes
        if isinstance(stmt, Select):
            for key, column in stmt.selected_columns.items():
                self.columns.append(key)
                self.types.append(column.type.dialect_impl(dialect))

    def parameters(self, params: Mapping[str, Any] | None) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters, every value through its type's processor as SQLAlchemy does (None too:
        a JSON column stores it as ``'null'``); a value a processor refuses raises StatementError."""
        try:
            values = self.compiled.construct_params(params or {})
            if self.named:
                return {
                    name: value if (proc := self.binds.get(name)) is None else proc(value)
                    for name, value in values.items()
                }
            out = []
            for name in self.order:
                proc = self.binds.get(name)
                out.append(values[name] if proc is None else proc(values[name]))
            return tuple(out)
        except Exception as exc:
            raise StatementError(str(exc), self.sql, None, exc) from exc

    def rows(self, cursor: Any) -> list[tuple[Any, ...]]:
        """The fetched rows, each value through its type's result processor (as SQLAlchemy reads them)."""
        results = self.results
        if results is None:  # a processor may depend on the driver's type code (psycopg's numerics)
            codes = [d[1] for d in cursor.description]
            results = self.results = [
                t.result_processor(self.dialect, c) for t, c in zip(self.types, codes, strict=True)
            ]
        return [tuple(r[i] if p is None else p(r[i]) for i, p in enumerate(results)) for r in cursor.fetchall()]


class DirectResult:
    """What the hot path reads of a statement's result: ``rowcount``, ``first()``, ``all()``, ``mappings()``."""

    def __init__(self, rowcount: int, rows: list[tuple[Any, ...]], columns: list[str]) -> None:
        self._rowcount = rowcount
        self._rows = rows
        self._columns = columns

    @property
    def rowcount(self) -> int:
        return self._rowcount

    def _fetched(self) -> list[tuple[Any, ...]]:
        return self._rows

    def first(self) -> tuple[Any, ...] | None:
        rows = self._fetched()
        return rows[0] if rows else None

    def all(self) -> list[tuple[Any, ...]]:
        return list(self._fetched())

    def mappings(self) -> list[dict[str, Any]]:
        return [dict(zip(self._columns, r, strict=True)) for r in self._fetched()]


class _PipelinedResult(DirectResult):
    """A statement sent in PostgreSQL's pipeline mode: reading its result waits for the server (one round
    trip for everything sent so far); a statement whose result nobody reads costs no round trip of its own."""

    def __init__(self, conn: DirectConnection, cursor: Any, compiled: _Compiled) -> None:
        super().__init__(-1, [], compiled.columns)
        self._conn = conn
        self._cursor: Any = cursor
        self._compiled = compiled

    def _resolve(self) -> None:
        cur = self._cursor
        if cur is None:
            return
        self._cursor = None
        try:
            if cur.pgresult is None:
                self._conn.pipeline.sync()
            self._rowcount = cur.rowcount
            self._rows = self._compiled.rows(cur) if self._compiled.columns else []
        except self._conn.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(self._compiled.sql, exc, self._conn.dialect) from exc
        finally:
            cur.close()

    @property
    def rowcount(self) -> int:
        self._resolve()
        return self._rowcount

    def _fetched(self) -> list[tuple[Any, ...]]:
        self._resolve()
        return self._rows


class CompiledCache:
    """Statements compiled for one engine's dialect, by statement and parameter names. Owned by the store
    that runs them (it holds the statements: an entry's statement, kept with it, keeps its id unique)."""

    def __init__(self, dialect: Any) -> None:
        self.dialect = dialect
        self._entries: dict[tuple[int, tuple[str, ...]], tuple[ClauseElement, _Compiled]] = {}
        self._lock = threading.Lock()

    def get(self, stmt: ClauseElement, keys: Sequence[str]) -> _Compiled:
        key = (id(stmt), tuple(sorted(keys)))
        hit = self._entries.get(key)
        if hit is not None and hit[0] is stmt:
            return hit[1]
        compiled = _Compiled(stmt, self.dialect, key[1])
        with self._lock:
            self._entries[key] = (stmt, compiled)
        return compiled


class DirectConnection:
    """``execute(statement, parameters)`` like a SQLAlchemy Connection, on the driver's connection."""

    def __init__(self, driver: Any, cache: CompiledCache, pipeline: Any = None) -> None:
        self.driver = driver
        self.cache = cache
        self.dialect = cache.dialect
        self.pipeline = pipeline  # psycopg's Pipeline: statements are sent, their results read when asked

    def execute(
        self, stmt: ClauseElement, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None
    ) -> DirectResult:
        many = isinstance(params, Sequence)
        rows: list[Mapping[str, Any]] = list(params) if isinstance(params, Sequence) else [params or {}]
        if not rows:
            return DirectResult(0, [], [])
        compiled = self.cache.get(stmt, list(rows[0]))
        if self.pipeline is not None and not many:
            cur = self.driver.cursor()
            try:
                cur.execute(compiled.sql, compiled.parameters(rows[0]))
            except self.dialect.loaded_dbapi.Error as exc:
                cur.close()
                raise _wrapped(compiled.sql, exc, self.dialect) from exc
            return _PipelinedResult(self, cur, compiled)
        try:
            cur = self.driver.cursor()
            try:
                if many:
                    cur.executemany(compiled.sql, [compiled.parameters(r) for r in rows])
                    return DirectResult(cur.rowcount, [], [])
                cur.execute(compiled.sql, compiled.parameters(rows[0]))
                fetched = compiled.rows(cur) if compiled.columns else []
                return DirectResult(cur.rowcount, fetched, compiled.columns)
            finally:
                cur.close()
        except self.dialect.loaded_dbapi.Error as exc:  # other errors pass through, as SQLAlchemy lets them
            raise _wrapped(compiled.sql, exc, self.dialect) from exc


def _wrapped(sql: str, exc: Exception, dialect: Any) -> Exception:
    """The SQLAlchemy exception (OperationalError, IntegrityError, …) SQLAlchemy would have raised."""
    return DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error, hide_parameters=True, dialect=dialect)


def _pipelined(driver: Any, cache: CompiledCache, fn: Callable[[DirectConnection], T], error: Any) -> T:
    """``fn`` in one transaction in psycopg's pipeline mode: BEGIN, the statements and COMMIT are sent
    without waiting; the server is waited for when a result is read and once at the end, where an error
    of any statement is raised. The connection is in autocommit mode meanwhile (psycopg would otherwise
    wait for its own BEGIN) and out of it again, its transaction ended, before it goes back to the pool
    (:func:`run_direct` discards it if an interrupt cut this clean-up short)."""
    driver.autocommit = True
    try:
        mode = driver.pipeline()
        pipeline = mode.__enter__()
        try:
            driver.execute("BEGIN")
            result = fn(DirectConnection(driver, cache, pipeline))
            driver.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(error):  # errors of what was sent: fn's own exception is the one raised
                mode.__exit__(None, None, None)
            raise
        mode.__exit__(None, None, None)  # the last round trip: COMMIT, or the first statement that failed
        return result
    finally:
        try:
            if not driver.broken and driver.info.transaction_status.name != "IDLE":
                driver.rollback()  # a statement failed, or fn raised: nothing of it stays
        finally:
            if not driver.broken:
                driver.autocommit = False


@functools.cache
def _can_pipeline() -> bool:
    """psycopg's pipeline mode needs libpq 14 or later (the binary wheels ship one; a system libpq may be
    older): without it the statements go one by one."""
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


def _clean(driver: Any) -> bool:
    """A PostgreSQL connection fit for the pool: open, not in autocommit or pipeline mode, no transaction."""
    from psycopg import pq

    return not (
        driver.closed
        or driver.autocommit
        or driver.pgconn.pipeline_status != pq.PipelineStatus.OFF
        or driver.info.transaction_status != pq.TransactionStatus.IDLE
    )


def _what(pipelined: bool) -> str:
    """What a driver error raised outside any one statement belongs to."""
    return "a pipelined transaction (BEGIN, its statements, COMMIT)" if pipelined else "BEGIN/COMMIT"


def run_direct(
    engine: Engine, cache: CompiledCache, fn: Callable[[DirectConnection], T], *, pipelined: bool = False
) -> T:
    """``fn`` in one write transaction on a pooled connection, committed, or rolled back if ``fn`` raises.
    On SQLite it starts with ``BEGIN IMMEDIATE`` (the write lock taken up front, as every isthmus write
    transaction does); on PostgreSQL the driver opens it, and with ``pipelined`` the statements are sent
    together (results read when ``fn`` reads them). A connection that broke, or cannot even roll back, is
    discarded, not returned to the pool."""
    dialect = engine.dialect
    error = dialect.loaded_dbapi.Error
    sqlite = dialect.name == "sqlite"
    pipelined = pipelined and not sqlite and _can_pipeline()
    raw = engine.raw_connection()
    try:
        driver: Any = raw.driver_connection
        try:
            if sqlite:
                driver.execute("BEGIN IMMEDIATE")
                result = fn(DirectConnection(driver, cache))
                driver.execute("COMMIT")
            elif not pipelined:
                result = fn(DirectConnection(driver, cache))
                driver.commit()
            else:
                result = _pipelined(driver, cache, fn, error)
        except BaseException as exc:
            orig: Any = exc.orig if isinstance(exc, DBAPIError) else exc
            if isinstance(orig, error) and dialect.is_disconnect(orig, driver, None):
                # The server went away: as SQLAlchemy does, every pooled connection older than this failure
                # reconnects at its next checkout (a restart broke them all), this one at once.
                invalidate_pool = getattr(engine.pool, "_invalidate", None)
                if invalidate_pool is not None:
                    invalidate_pool(raw, orig)
                else:  # pragma: no cover - a pool without it
                    raw.invalidate(orig)
                if isinstance(exc, DBAPIError):
                    raise
                raise _wrapped(_what(pipelined), orig, dialect) from exc
            if not sqlite and (driver.closed or (pipelined and not _clean(driver))):
                # closed (a cancelled wait can close it) or left half-way by an interrupt: not reused
                raw.invalidate(orig if isinstance(orig, Exception) else None)
                if isinstance(exc, error):
                    raise _wrapped(_what(pipelined), exc, dialect) from exc
                raise
            try:
                if not sqlite:
                    driver.rollback()
                elif driver.in_transaction:  # fn failed, or COMMIT did (busy): nothing of it stays
                    driver.execute("ROLLBACK")
            except error as rollback_exc:
                raw.invalidate(rollback_exc)
                raise _wrapped("ROLLBACK", rollback_exc, dialect) from exc
            if isinstance(exc, error):
                raise _wrapped(_what(pipelined), exc, dialect) from exc
            raise
        return result
    finally:
        raw.close()
