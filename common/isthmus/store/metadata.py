"""``MetadataStore``: the source of truth for runs, step runs, artifacts, aliases and the cache."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import os
import re
import secrets
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    inspect,
    null,
    or_,
    select,
    text,
    tuple_,
    union,
    union_all,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

from isthmus.artifacts.refs import ArtifactRef
from isthmus.config import check_store_url
from isthmus.errors import ConfigurationError, IsthmusError, RunNotFound, quoted
from isthmus.governance.projects import alias_project, project_for_run
from isthmus.records import PipelineRunRecord, RunStatus, StepRunRecord
from isthmus.redaction import redact_location, redact_text, safe_params, scrub
from isthmus.store import schema as s
from isthmus.store.claims import CacheCandidate, ClaimBusy, ClaimCandidates, ClaimHit, ClaimResult, ClaimStarted
from isthmus.store.direct import CompiledCache, DirectConnection, run_direct
from isthmus.store.engine import WRITE, make_engine, retry_locked
from isthmus.store.holders import LeaseHolder, holder_is_dead
from isthmus.store.idlists import bound, one_of

if TYPE_CHECKING:
    from isthmus.governance.scope import Projects

SCHEMA_HEAD = "0007"
_MIGRATIONS = Path(__file__).with_name("migrations")

# Hot-path statements are built once: constructing SQLAlchemy statements costs more than running them.
_CANDIDATES = (
    select(
        s.step_runs.c.id,
        s.step_runs.c.outputs,
        s.step_runs.c.pipeline_run_id,
        s.step_runs.c.metadata,
        s.cache_entries.c.created_at,
    )
    .select_from(s.cache_entries.join(s.step_runs, s.step_runs.c.id == s.cache_entries.c.step_run_id))
    .where(
        s.cache_entries.c.cache_key == bindparam("key"),
        s.step_runs.c.invalidated_at.is_(None),  # derived from a bad artifact: never reused
        or_(s.cache_entries.c.expires_at.is_(None), s.cache_entries.c.expires_at > bindparam("now")),
    )
    .order_by(s.cache_entries.c.created_at.desc())
    .limit(bindparam("limit"))
)
_UPDATE_STEP_RUN = s.step_runs.update().where(s.step_runs.c.id == bindparam("_id"))
_INSERT_STEP_RUN = s.step_runs.insert()
_INSERT_LINKS = s.step_run_artifacts.insert()
_INSERT_CACHE_ENTRY = s.cache_entries.insert()
_LEASE_OF = select(s.cache_leases.c.holder, s.cache_leases.c.expires_at).where(
    s.cache_leases.c.cache_key == bindparam("_key")
)
_TAKE_LEASE = (
    s.cache_leases.update()
    .where(s.cache_leases.c.cache_key == bindparam("_key"), s.cache_leases.c.holder == bindparam("_was"))
    .values(holder=bindparam("_holder"), acquired_at=bindparam("_now"), expires_at=bindparam("_expires"))
)
_ABORT_RUNNING = (
    s.step_runs.update()
    .where(s.step_runs.c.id == bindparam("_id"), s.step_runs.c.status == RunStatus.RUNNING)
    .values(status=RunStatus.ABORTED, error=bindparam("_error"), ended_at=bindparam("_now"))
)
_DROP_ENTRY = s.cache_entries.delete().where(
    s.cache_entries.c.cache_key == bindparam("_key"), s.cache_entries.c.step_run_id == bindparam("_id")
)
_RELEASE_LEASE = s.cache_leases.delete().where(
    s.cache_leases.c.cache_key == bindparam("_key"), s.cache_leases.c.holder == bindparam("_holder")
)


def link_rows_for(
    step_run_id: str,
    step_name: str,
    outputs: dict[str, ArtifactRef] | None,
    inputs: dict[str, ArtifactRef] | None,
) -> list[dict[str, Any]]:
    """Rows of ``step_run_artifacts`` for a step run's outputs and inputs, each role by name: every writer
    inserts (and so locks the ``artifact_versions`` rows of) a step's outputs in one order."""
    rows = []
    for role, refs in (("output", outputs or {}), ("input", inputs or {})):
        for name, ref in sorted(refs.items()):
            rows.append(
                {
                    "step_run_id": step_run_id,
                    "role": role,
                    "name": name,
                    "content_hash": ref.content_hash,
                    "artifact_name": f"{step_name}.{name}" if role == "output" else name,
                }
            )
    return rows


def unusable_store(url: str, setting: str, exc: BaseException) -> ConfigurationError:
    """The one-line error for a metadata store that cannot be opened: the setting, the URL (password
    hidden), the reason and what to check."""
    parsed = make_url(url)
    secrets = [parsed.password] if parsed.password else []
    orig = getattr(exc, "orig", None) or exc
    reason = " ".join(str(orig).split()) or type(orig).__name__
    if len(reason) > 300:
        reason = reason[:300] + "…"
    reason = scrub(reason, secrets)
    if type(exc).__module__.startswith("alembic"):
        fix = "the database was migrated by another isthmus version; upgrade isthmus, or point it at another database"
    elif parsed.get_backend_name() == "sqlite":
        fix = "make that directory writable, or set ISTHMUS_HOME (or ISTHMUS_STORE_URL) to a writable place"
    else:
        fix = "check that the server is running and reachable from here, and the user, password and database name"
    shown = redact_location(url)
    return ConfigurationError(f"{setting}: cannot open the metadata store {shown!r} ({reason}); {fix}")


def _safe(params: Any) -> dict[str, Any]:
    return safe_params(params) if isinstance(params, dict) else {}


def _with_connect_timeout(url: str, seconds: int = 10) -> str:
    """A PostgreSQL URL that gives up connecting after ``seconds`` (libpq waits for the OS otherwise:
    minutes for an unroutable host) unless the URL sets its own ``connect_timeout``."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or "connect_timeout" in parsed.query:
        return url
    return parsed.update_query_dict({"connect_timeout": str(seconds)}).render_as_string(hide_password=False)


def _step_run(row: Any) -> StepRunRecord:
    """A ``step_runs`` row read from the store, its status as a :class:`RunStatus`."""
    record: StepRunRecord = dict(row)  # type: ignore[assignment]  # the table's columns
    record["status"] = RunStatus(record["status"])
    return record


def _pipeline_run(row: Any) -> PipelineRunRecord:
    """A ``pipeline_runs`` row read from the store, its status as a :class:`RunStatus`."""
    record: PipelineRunRecord = dict(row)  # type: ignore[assignment]  # the table's columns
    record["status"] = RunStatus(record["status"])
    return record


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


class AliasMoved(IsthmusError):
    """An alias changed between reading its history and writing its new target."""


class _ResultCommitted(Exception):
    """A result for the cache key was committed while a claim waited for its lease: roll the claim back."""


@dataclass
class RetentionPlan:
    """What gc decided (:meth:`MetadataStore.retention_plan`): run counts, the candidate artifacts
    (content hash -> recorded size), the cache entries (cache_key, step_run_id) of dropped step runs
    whose outputs are candidates, and whether the store keeps alias history."""

    runs: int
    runs_kept: int
    candidates: dict[str, int]
    droppable: list[tuple[str, str]]
    alias_history: bool


@dataclass(frozen=True)
class RetentionSummary:
    """A dry run of :meth:`MetadataStore.retention_plan`, counted in the database: run counts, how many
    artifacts would go and their recorded size, the first of them by hash, how many cache entries would
    be dropped, and whether the store keeps alias history."""

    runs: int
    runs_kept: int
    candidates: int
    size: int
    listed: list[str]
    droppable: int
    alias_history: bool


@dataclass(frozen=True)
class _RetentionSets:
    unneeded: list[Any]  # conditions on artifacts: not needed by anything
    kept_runs: Any  # ids of kept pipeline runs (None: every run is kept)
    entries: Any  # (cache_key, step_run_id) of live entries to drop with prune_cache (None otherwise)
    entries_where: list[Any]  # the conditions on cache entries of ``entries``
    history: bool
    runs: int  # pipeline runs, and how many of them are kept
    runs_kept: int
    # with few runs kept: the step runs with an output among the candidates (kept ones have none), found
    # without the candidates (see _retention_sets); None: ``entries`` tests each entry's outputs against them
    dropped: Any = None


class MetadataStore:
    """Runs, step runs, artifacts, aliases, code/environment snapshots, cache entries and leases.

    The schema is created or upgraded (alembic) on first use.
    """

    def __init__(self, url: str, *, setting: str = "store URL") -> None:
        """Open (and create or migrate) the store at ``url``. Anything that keeps it from opening — a bad
        URL, a server that does not answer, a directory that cannot be written — raises
        :class:`~isthmus.errors.ConfigurationError` naming ``setting`` (the variable the URL came from)."""
        self.url = check_store_url(url, setting)
        self._known_snapshots: set[str] = set()
        self._ignore_stmts: dict[tuple[str, tuple[str, ...]], Any] = {}
        try:
            self.engine = make_engine(_with_connect_timeout(self.url))
            self.dialect = self.engine.dialect.name
            self._compiled = CompiledCache(self.engine.dialect)
            self._migrate()
        except (DBAPIError, OSError, ImportError) as exc:
            raise unusable_store(self.url, setting, exc) from None
        except Exception as exc:
            if type(exc).__module__.startswith("alembic"):  # e.g. a revision this isthmus does not know
                raise unusable_store(self.url, setting, exc) from None
            raise

    # -- schema ----------------------------------------------------------------------------------
    def _current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            try:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except Exception:
                conn.rollback()
                return None

    def _migrate(self) -> None:
        if self._current_revision() == SCHEMA_HEAD:
            return
        with self._migration_lock():
            if self._current_revision() == SCHEMA_HEAD:
                return
            if self.dialect == "sqlite" and self._empty():
                self._create_schema()
            else:
                upgrade_with_alembic(self.engine)

    def _empty(self) -> bool:
        with self.engine.connect() as conn:
            return not conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' LIMIT 1").first()

    def _create_schema(self) -> None:
        """A new SQLite store (the embedded default, made in every new ``ISTHMUS_HOME``): the tables of
        :mod:`isthmus.store.schema`, its triggers and the alembic revision, in one transaction —
        the schema the migrations build (tested), without loading alembic and running them one by one."""
        with self._write() as conn:
            s.metadata.create_all(conn)
            for statement in (*s.SQLITE_AUDIT_TRIGGERS, s.SQLITE_VERSIONS_TRIGGER):
                conn.exec_driver_sql(statement)
            conn.exec_driver_sql(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
            conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (?)", (SCHEMA_HEAD,))

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.dialect == "sqlite":
            db = make_url(self.url).database
            if not db or db == ":memory:":
                yield
                return
            with open(f"{db}.migrate.lock", "a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        elif self.dialect == "postgresql":
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(72471)"))
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(72471)"))
                    conn.commit()
        else:
            yield

    # -- transactions ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(**{WRITE: True}) as conn, conn.begin():
            yield conn

    def _run_write(self, fn: Any) -> Any:
        def attempt() -> Any:
            with self._write() as conn:
                return fn(conn)

        return retry_locked(attempt)

    def _run_hot(self, fn: Callable[[Any], Any], *, pipelined: bool = False) -> Any:
        """A write on the step-run hot path (claim, start, finish): its statements straight on the driver
        (:mod:`isthmus.store.direct`)."""
        return retry_locked(lambda: run_direct(self.engine, self._compiled, fn, pipelined=pipelined))

    def _read(self) -> Any:
        return self.engine.connect()

    @contextlib.contextmanager
    def _scan(self) -> Iterator[Connection]:
        """A read connection for a query that visits most of the store (gc): on SQLite with a 64 MiB page
        cache for it (the default 2 MiB reads the same pages again from the OS for every set it probes)."""
        with self._read() as conn:
            if self.dialect != "sqlite":
                yield conn
                return
            driver = conn.connection.driver_connection
            driver.execute(f"PRAGMA cache_size={_SCAN_CACHE_KIB}")
            try:
                yield conn
            finally:
                driver.execute("PRAGMA cache_size=-2000")  # SQLite's default, for the pooled connection's next user

    def _insert_ignore(self, table: Any, keys: Sequence[str]) -> Any:
        """An INSERT that skips rows whose key exists; execute it with a list of row dicts."""
        cache_key = (table.name, tuple(keys))
        stmt = self._ignore_stmts.get(cache_key)
        if stmt is None:
            if self.dialect == "sqlite":  # dialect modules imported here: only the store's own is loaded
                from sqlalchemy.dialects.sqlite import insert as sqlite_insert

                stmt = sqlite_insert(table).on_conflict_do_nothing(index_elements=list(keys))
            elif self.dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as postgresql_insert

                stmt = postgresql_insert(table).on_conflict_do_nothing(index_elements=list(keys))
            else:  # pragma: no cover - other backends: plain insert, duplicates raise
                return insert(table)
            self._ignore_stmts[cache_key] = stmt
        return stmt

    # -- snapshots -------------------------------------------------------------------------------
    def save_code_snapshot(self, code_hash: str, components: dict[str, str], sources: dict[str, str]) -> None:
        if code_hash in self._known_snapshots:
            return
        row = {"hash": code_hash, "components": components, "sources": sources, "created_at": utcnow()}
        self._run_write(lambda c: c.execute(self._insert_ignore(s.code_snapshots, ["hash"]), [row]))
        self._known_snapshots.add(code_hash)

    def save_environment(self, env_hash: str, data: dict[str, Any]) -> None:
        if env_hash in self._known_snapshots:
            return
        row = {"hash": env_hash, "data": data, "created_at": utcnow()}
        self._run_write(lambda c: c.execute(self._insert_ignore(s.environments, ["hash"]), [row]))
        self._known_snapshots.add(env_hash)

    def get_code_snapshot(self, code_hash: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(select(s.code_snapshots).where(s.code_snapshots.c.hash == code_hash)).mappings().first()
        return dict(row) if row else None

    def get_environment(self, env_hash: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(select(s.environments.c.data).where(s.environments.c.hash == env_hash)).first()
        return row[0] if row else None

    # -- pipeline runs ---------------------------------------------------------------------------
    def create_pipeline_run(self, row: PipelineRunRecord) -> None:
        """Record a pipeline run. Its ``params`` are stored as :func:`~isthmus.redaction.safe_params`:
        JSON data redacted, other objects as a typed placeholder (never their ``repr()``)."""
        row = {
            "started_at": utcnow(),
            "status": RunStatus.RUNNING,
            "context": {},
            **row,
            "params": _safe(row.get("params")),
        }
        row["project"] = project_for_run(dict(row))
        self._run_write(lambda c: c.execute(insert(s.pipeline_runs).values(**row)))

    def ensure_pipeline_run(self, row: PipelineRunRecord) -> bool:
        """Create the pipeline run ``row["id"]`` unless it exists (tasks of one orchestrator run race to
        do this). Returns True if this call created it. ``params`` are stored as in :meth:`create_pipeline_run`."""
        row = {
            "started_at": utcnow(),
            "status": RunStatus.RUNNING,
            "context": {},
            **row,
            "params": _safe(row.get("params")),
        }
        row["project"] = project_for_run(dict(row))
        stmt = self._insert_ignore(s.pipeline_runs, ["id"]).returning(s.pipeline_runs.c.id)
        return bool(self._run_write(lambda c: c.execute(stmt, row).first() is not None))

    def finish_pipeline_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        outputs: Any = None,
        error: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Set the final status (and outputs, error; ``params`` when the creator did not know them).
        Parameters are stored as in :meth:`create_pipeline_run`; credentials the error shows by their
        form (URL passwords, bearer tokens) are hidden — callers scrub it of the run's known secrets."""
        if error:
            error = redact_text(error)
        values: dict[str, Any] = {"status": status, "outputs": outputs, "error": error, "ended_at": utcnow()}
        if params is not None:
            values["params"] = _safe(params)
        self._run_write(
            lambda c: c.execute(update(s.pipeline_runs).where(s.pipeline_runs.c.id == run_id).values(**values))
        )

    def reopen_pipeline_run(self, run_id: str) -> bool:
        """Set a closed pipeline run RUNNING again (a task of its orchestrator run started after it was
        closed by status derivation, see :mod:`isthmus.run_closing`). True if it was closed."""
        p = s.pipeline_runs
        stmt = (
            update(p)
            .where(p.c.id == run_id, p.c.status != RunStatus.RUNNING)
            .values(status=RunStatus.RUNNING, ended_at=None, error=None)
        )
        return bool(self._run_write(lambda c: c.execute(stmt).rowcount))

    def running_pipeline_runs(self, started_before: dt.datetime, limit: int = 1000) -> list[PipelineRunRecord]:
        """RUNNING pipeline runs started before ``started_before``, oldest first."""
        p = s.pipeline_runs
        query = (
            select(p)
            .where(p.c.status == RunStatus.RUNNING, p.c.started_at < started_before)
            .order_by(p.c.started_at)
            .limit(limit)
        )
        with self._read() as conn:
            return [_pipeline_run(r) for r in conn.execute(query).mappings()]

    def find_pipeline_run(self, orchestrator: str, key: str, value: str) -> PipelineRunRecord | None:
        """The newest pipeline run of ``orchestrator`` whose context has ``key == value``."""
        with self._read() as conn:
            rows = conn.execute(
                select(s.pipeline_runs)
                .where(s.pipeline_runs.c.orchestrator == orchestrator)
                .order_by(s.pipeline_runs.c.started_at.desc())
                .limit(200)
            ).mappings()
            for row in rows:
                if str((row["context"] or {}).get(key)) == str(value):
                    return _pipeline_run(row)
        return None

    # -- step runs -------------------------------------------------------------------------------
    def start_step_run(self, row: StepRunRecord) -> None:
        row = {"started_at": utcnow(), "status": RunStatus.RUNNING, "cache_hit": False, **row}
        self._run_hot(lambda c: c.execute(_INSERT_STEP_RUN, row))

    def claim_step_run(
        self,
        row: StepRunRecord,
        cache_key: str,
        holder: str,
        ttl: float,
        try_hit: Callable[[CacheCandidate], bool | None],
        hit_write: Callable[[CacheCandidate], tuple[StepRunRecord, list[dict[str, Any]]]],
        *,
        recompute: bool = False,
    ) -> ClaimResult:
        """Look up, then hit or claim, in one write transaction.

        - a cached result whose artifacts ``try_hit`` confirms cheaply is recorded as a hit
          (``hit_write`` gives the step run row and artifact links): :class:`ClaimHit`;
        - results that need a slower check (rehashing) are returned: :class:`ClaimCandidates`;
        - otherwise the lease is taken and ``row`` recorded as RUNNING: :class:`ClaimStarted`, with the
          step runs of dead holders this claim marked ABORTED; or another live holder has it:
          :class:`ClaimBusy`.
        Entries whose artifacts ``try_hit`` finds gone are dropped on the way. With ``recompute`` no result
        is looked at: the lease is taken (after a live holder's run ends) and the step computed again.
        """

        def work(conn: Connection | DirectConnection) -> ClaimResult:
            cands: list[CacheCandidate] = (
                []
                if recompute
                else [
                    dict(x)  # type: ignore[misc]  # the columns of _CANDIDATES
                    for x in conn.execute(_CANDIDATES, {"key": cache_key, "now": time.time(), "limit": 5}).mappings()
                ]
            )
            pending: list[CacheCandidate] = []
            for cand in cands:
                verdict = try_hit(cand)
                if verdict is True and not pending:
                    hit_row, links = hit_write(cand)
                    conn.execute(_INSERT_STEP_RUN, hit_row)
                    if links:
                        conn.execute(_INSERT_LINKS, links)
                    return ClaimHit(cand)
                if verdict is False:
                    conn.execute(_DROP_ENTRY, {"_key": cache_key, "_id": cand["id"]})
                else:
                    pending.append(cand)
            if pending:
                return ClaimCandidates(pending)
            aborted: list[str] = []
            # On PostgreSQL the lease insert may have waited for a holder's final transaction (its result
            # and the lease's release, committed together): a statement run after it sees that result,
            # which the candidates query above could not. Then start over, and find it a hit. (The two
            # statements go to the server together: one round trip.)
            inserted = conn.execute(self._lease_insert, self._lease_row(cache_key, holder, ttl))
            again = None if recompute else conn.execute(_CANDIDATES, {"key": cache_key, "now": time.time(), "limit": 1})
            if inserted.rowcount != 1:  # held: by a live holder, or one this claim may take over
                if not self._take_lease(conn, cache_key, holder, ttl, aborted):
                    return ClaimBusy()
                if again is not None:
                    again = conn.execute(_CANDIDATES, {"key": cache_key, "now": time.time(), "limit": 1})
            if again is not None and again.first() is not None:
                raise _ResultCommitted
            start = {"started_at": utcnow(), "status": RunStatus.RUNNING, "cache_hit": False, **row}
            conn.execute(_INSERT_STEP_RUN, start)
            return ClaimStarted(aborted)

        for _ in range(5):
            try:
                result: ClaimResult = self._run_hot(work, pipelined=True)
            except _ResultCommitted:  # rolled back: nothing of this attempt was written
                continue
            return result
        return ClaimBusy()  # results committed under us again and again: the caller waits and tries again

    def finish_step_run(
        self,
        step_run_id: str,
        values: dict[str, Any],
        *,
        outputs: dict[str, ArtifactRef] | None = None,
        inputs: dict[str, ArtifactRef] | None = None,
        step_name: str = "",
        cache_key: str | None = None,
        expires_at: float | None = None,
        insert_row: StepRunRecord | None = None,
        new_artifacts: bool = True,
        release: tuple[str, str] | None = None,
    ) -> None:
        """Complete a step run in one transaction: its row, its artifacts and its cache entry.

        The cache entry is written last, so it never exists without its artifacts and outputs.
        With ``insert_row``, the step run row is inserted (cache hits) instead of updated;
        ``release=(cache_key, holder)`` drops that lease in the same transaction.
        """
        now = utcnow()
        values = {"ended_at": now, **values}
        art_rows: list[dict[str, Any]] = []
        link_rows = link_rows_for(step_run_id, step_name, outputs, inputs)
        if new_artifacts:
            for ref in (outputs or {}).values():
                art_rows.append(
                    {
                        "content_hash": ref.content_hash,
                        "uri": ref.uri,
                        "size": ref.size,
                        "materializer": ref.materializer,
                        "python_type": ref.python_type,
                        "metadata": ref.metadata or None,
                        "producer_step_run_id": step_run_id,
                        "created_at": now,
                    }
                )

        def work(conn: Connection | DirectConnection) -> None:
            if insert_row is not None:
                conn.execute(_INSERT_STEP_RUN, {**insert_row, **values})
            else:
                conn.execute(_UPDATE_STEP_RUN, {"_id": step_run_id, **values})
            if art_rows:
                conn.execute(self._insert_ignore(s.artifacts, ["content_hash"]), art_rows)
            if link_rows:
                conn.execute(_INSERT_LINKS, link_rows)
            if cache_key is not None:
                conn.execute(
                    _INSERT_CACHE_ENTRY,
                    {
                        "cache_key": cache_key,
                        "step_run_id": step_run_id,
                        "step_name": step_name,
                        "created_at": time.time(),
                        "expires_at": expires_at,
                    },
                )
            if release is not None:
                conn.execute(_RELEASE_LEASE, {"_key": release[0], "_holder": release[1]})

        self._run_hot(work, pipelined=True)

    def get_step_run(self, step_run_id: str) -> StepRunRecord:
        """The step run with this id, or the one whose id starts with it (by the primary key)."""
        r = s.step_runs
        with self._read() as conn:
            rows = conn.execute(select(r).where(r.c.id == step_run_id)).mappings().all()
            if not rows and step_run_id:
                query = select(r).where(self._prefix(r.c.id, step_run_id)).order_by(r.c.id).limit(2)
                rows = [x for x in conn.execute(query).mappings().all() if str(x["id"]).startswith(step_run_id)]
        if len(rows) != 1:
            raise RunNotFound(f"no step run with id {step_run_id!r}; list them with 'isthmus runs show RUN'")
        return _step_run(rows[0])

    def step_runs_of(self, pipeline_run_id: str) -> list[StepRunRecord]:
        with self._read() as conn:
            rows = conn.execute(
                select(s.step_runs)
                .where(s.step_runs.c.pipeline_run_id == pipeline_run_id)
                .order_by(s.step_runs.c.started_at, s.step_runs.c.attempt)
            ).mappings()
            return [_step_run(r) for r in rows]

    def previous_step_run(
        self, step_name: str, before: dt.datetime, exclude: str | None = None
    ) -> StepRunRecord | None:
        """The newest finished run of ``step_name`` that started before ``before``."""
        with self._read() as conn:
            row = (
                conn.execute(
                    select(s.step_runs)
                    .where(
                        s.step_runs.c.step_name == step_name,
                        s.step_runs.c.started_at < before,
                        s.step_runs.c.status == RunStatus.COMPLETED,
                        s.step_runs.c.id != (exclude or ""),
                    )
                    .order_by(s.step_runs.c.started_at.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return _step_run(row) if row else None

    def find_step_runs(self, prefix: str, limit: int = 3) -> list[StepRunRecord]:
        """Step runs whose id starts with ``prefix`` (at most ``limit``), by the primary key."""
        r = s.step_runs
        if self.dialect == "sqlite" and prefix:  # a key range: SQLite's LIKE does not use the index
            upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            cond = and_(r.c.id >= prefix, r.c.id < upper)
        else:
            cond = r.c.id.startswith(prefix, autoescape=True)
        with self._read() as conn:
            rows = conn.execute(select(r).where(cond).order_by(r.c.id).limit(limit)).mappings().all()
        return [_step_run(x) for x in rows if str(x["id"]).startswith(prefix)]

    def earlier_step_runs(
        self, step_name: str, before: dt.datetime, exclude: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Finished runs of ``step_name`` that started before ``before``, newest first, each with its
        pipeline run's ``pipeline`` name (by the step-name index)."""
        r, p = s.step_runs, s.pipeline_runs
        query = (
            select(r, p.c.pipeline.label("pipeline"))
            .select_from(r.outerjoin(p, p.c.id == r.c.pipeline_run_id))
            .where(
                r.c.step_name == step_name,
                r.c.started_at < before,
                r.c.status.in_([RunStatus.COMPLETED, RunStatus.FAILED]),
                r.c.id != (exclude or ""),
            )
            .order_by(r.c.started_at.desc())
            .limit(limit)
        )
        with self._read() as conn:
            return [dict(_step_run(row)) for row in conn.execute(query).mappings()]

    def latest_runs_of(self, pipeline: str, status: str | None = None, limit: int = 2) -> list[PipelineRunRecord]:
        """The newest runs of ``pipeline`` (with ``status`` if given), newest first (by the pipeline index)."""
        p = s.pipeline_runs
        query = select(p).where(p.c.pipeline == pipeline).order_by(p.c.started_at.desc()).limit(limit)
        if status is not None:
            query = query.where(p.c.status == status)
        with self._read() as conn:
            return [_pipeline_run(x) for x in conn.execute(query).mappings()]

    def get_pipeline_run(self, run_id: str) -> PipelineRunRecord | None:
        """The pipeline run with exactly this id, or None."""
        with self._read() as conn:
            row = conn.execute(select(s.pipeline_runs).where(s.pipeline_runs.c.id == run_id)).mappings().first()
        return _pipeline_run(row) if row else None

    # -- cache -----------------------------------------------------------------------------------
    def cache_candidates(self, cache_key: str, now: float, limit: int = 5) -> list[CacheCandidate]:
        """Unexpired completed step runs recorded under ``cache_key``, newest first."""
        with self._read() as conn:
            rows = conn.execute(_CANDIDATES, {"key": cache_key, "now": now, "limit": limit}).mappings()
            return [dict(x) for x in rows]  # type: ignore[misc]  # the columns of _CANDIDATES

    def drop_cache_entry(self, cache_key: str, step_run_id: str) -> None:
        self._run_write(
            lambda c: c.execute(
                delete(s.cache_entries).where(
                    s.cache_entries.c.cache_key == cache_key, s.cache_entries.c.step_run_id == step_run_id
                )
            )
        )

    def list_cache_entries(self, step_name: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        e = s.cache_entries
        query = select(e).order_by(e.c.created_at.desc()).limit(limit)
        if step_name:
            query = query.where(e.c.step_name == step_name)
        with self._read() as conn:
            return [dict(x) for x in conn.execute(query).mappings()]

    def cache_entry_outputs(self) -> list[tuple[str, str, Any]]:
        """(cache_key, step_run_id, recorded outputs) of every cache entry whose step run is recorded: one
        pass joined on the primary key (``cache prune`` checks each output is still there)."""
        e, r = s.cache_entries, s.step_runs
        query = select(e.c.cache_key, e.c.step_run_id, r.c.outputs).join(r, r.c.id == e.c.step_run_id)
        with self._read() as conn:
            return [(str(k), str(sid), outputs) for k, sid, outputs in conn.execute(query)]

    def clear_cache(self, step_name: str | None = None) -> int:
        def work(conn: Connection) -> int:
            query = delete(s.cache_entries)
            if step_name:
                query = query.where(s.cache_entries.c.step_name == step_name)
            return conn.execute(query).rowcount or 0

        return int(self._run_write(work))

    def prune_expired(self, now: float) -> int:
        def work(conn: Connection) -> int:
            e = s.cache_entries
            return conn.execute(delete(e).where(and_(e.c.expires_at.is_not(None), e.c.expires_at <= now))).rowcount or 0

        return int(self._run_write(work))

    # -- leases (in-flight deduplication) --------------------------------------------------------
    def acquire_lease(self, cache_key: str, holder: str, ttl: float) -> bool:
        """Take the lease on ``cache_key`` unless a live holder has it. An expired lease, or one whose
        holder is provably dead (:mod:`isthmus.store.holders`), is taken over at once and the holder's
        RUNNING step run marked ABORTED."""
        return bool(self._run_write(lambda conn: self._take_lease(conn, cache_key, holder, ttl)))

    def _take_lease(
        self,
        conn: Connection | DirectConnection,
        cache_key: str,
        holder: str,
        ttl: float,
        aborted: list[str] | None = None,
    ) -> bool:
        now = time.time()
        row = self._lease_row(cache_key, holder, ttl, now)
        insert_lease = self._lease_insert
        for _ in range(3):
            if conn.execute(insert_lease, row).rowcount == 1:  # nobody holds it (the usual case)
                return True
            current = conn.execute(_LEASE_OF, {"_key": cache_key}).first()
            if current is not None:
                break
        else:  # released and taken again, over and over: the caller waits and tries again
            return False
        was, expires_at = current
        if was != holder and expires_at >= now and not holder_is_dead(was):
            return False  # a live holder
        params = {"_key": cache_key, "_was": was, "_holder": holder, "_now": now, "_expires": now + ttl}
        if not conn.execute(_TAKE_LEASE, params).rowcount:  # someone else took it first
            return False
        if was != holder:
            run_id = self._abort_holder_run(conn, was, expired=expires_at < now)
            if run_id and aborted is not None:
                aborted.append(run_id)
        return True

    @staticmethod
    def _lease_row(cache_key: str, holder: str, ttl: float, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        return {"cache_key": cache_key, "holder": holder, "acquired_at": now, "expires_at": now + ttl}

    @functools.cached_property
    def _lease_insert(self) -> Any:
        # preserve_rowcount: SQLAlchemy reports rowcount -1 for an INSERT on psycopg unless asked to keep it.
        return self._insert_ignore(s.cache_leases, ["cache_key"]).execution_options(preserve_rowcount=True)

    def _abort_holder_run(
        self, conn: Connection | DirectConnection, holder: str, *, expired: bool, by: str | None = None
    ) -> str | None:
        """Mark the RUNNING step run of a dead (or silent) lease holder ABORTED; its id, if one was marked.
        ``by``: the command that marks it (None: another run that took the step over)."""
        parsed = LeaseHolder.parse(holder)
        if parsed is None:
            return None
        if expired:
            why = "its lease expired (the process stopped renewing it: killed, frozen or cut off from the store)"
        else:
            why = f"its process (pid {parsed.pid} on {parsed.host}) is gone"
        error = f"aborted: {why}; " + (f"marked by {by}" if by else "another run took the step over")
        done = conn.execute(_ABORT_RUNNING, {"_id": parsed.step_run_id, "_error": error, "_now": utcnow()})
        return parsed.step_run_id if done.rowcount else None

    def abort_dead_holders(self, by: str | None = None) -> list[str]:
        """Drop leases whose holder is dead or expired and mark their RUNNING step runs ABORTED (what
        ``isthmus cache prune`` and ``isthmus gc`` do for runs nobody retried); ``by`` names the command in
        the step run's error. Returns the step run ids marked."""
        lease = s.cache_leases
        with self._read() as conn:
            rows = conn.execute(select(lease.c.cache_key, lease.c.holder, lease.c.expires_at)).all()
        now = time.time()
        marked: list[str] = []
        for key, holder, expires_at in rows:
            dead = holder_is_dead(holder)
            if not dead and expires_at >= now:
                continue
            expired = not dead  # a dead process's lease may also have expired: its death is what happened

            def work(conn: Connection, key: str = key, holder: str = holder, expired: bool = expired) -> None:
                if conn.execute(_RELEASE_LEASE, {"_key": key, "_holder": holder}).rowcount:
                    run_id = self._abort_holder_run(conn, holder, expired=expired, by=by)
                    if run_id:
                        marked.append(run_id)

            self._run_write(work)
        return marked

    def renew_lease(self, cache_key: str, holder: str, ttl: float) -> bool:
        lease = s.cache_leases
        return bool(
            self._run_write(
                lambda c: (
                    c.execute(
                        update(lease)
                        .where(lease.c.cache_key == cache_key, lease.c.holder == holder)
                        .values(expires_at=time.time() + ttl)
                    ).rowcount
                )
            )
        )

    def release_lease(self, cache_key: str, holder: str) -> None:
        self._run_write(lambda c: c.execute(_RELEASE_LEASE, {"_key": cache_key, "_holder": holder}))

    def lease_holder(self, cache_key: str) -> tuple[str, float] | None:
        with self._read() as conn:
            row = conn.execute(
                select(s.cache_leases.c.holder, s.cache_leases.c.expires_at).where(
                    s.cache_leases.c.cache_key == cache_key
                )
            ).first()
        return (row[0], row[1]) if row else None

    # -- queries for the CLI ---------------------------------------------------------------------
    def list_runs(
        self, limit: int = 20, pipeline: str | None = None, orchestrator: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest pipeline runs (by the started_at index), each with how many step runs it has and
        how many were cache hits — counted for that page only, by the pipeline_run_id index."""
        p, r = s.pipeline_runs, s.step_runs
        page = select(p).order_by(p.c.started_at.desc()).limit(limit)
        if pipeline:
            page = page.where(p.c.pipeline == pipeline)
        if orchestrator:
            page = page.where(p.c.orchestrator == orchestrator)
        runs = page.subquery("page")
        of_run = r.c.pipeline_run_id == runs.c.id
        steps = select(func.count()).where(of_run).scalar_subquery()
        hits = select(func.sum(func.cast(r.c.cache_hit, s.Integer))).where(of_run).scalar_subquery()
        query = select(runs, steps.label("steps"), hits.label("hits")).order_by(runs.c.started_at.desc())
        with self._read() as conn:
            return [dict(x) for x in conn.execute(query).mappings()]

    def resolve_run_id(self, ref: str) -> str:
        """A pipeline run id from a full id, a unique prefix, ``latest`` or ``latest~N``."""
        p = s.pipeline_runs
        m = re.fullmatch(r"latest(?:~(\d+))?", ref.strip())
        with self._read() as conn:
            if m:
                offset = int(m.group(1) or 0)
                row = None
                if offset < 2**62:  # beyond any store (and beyond what the database takes as an integer)
                    query = select(p.c.id).order_by(p.c.started_at.desc()).offset(offset).limit(1)
                    row = conn.execute(query).first()
                if not row:
                    raise RunNotFound(f"there is no run {quoted(ref)}: only {self.count_runs()} run(s) recorded")
                return str(row[0])
            rows = []
            for prefix in dict.fromkeys([ref.strip(), ref.strip().lower()]):  # a hex id typed in capitals too
                query = select(p.c.id).where(self._prefix(p.c.id, prefix)).order_by(p.c.id).limit(2)
                rows = [row for row in conn.execute(query).all() if str(row[0]).startswith(prefix)]
                if rows:
                    break
        if not rows:
            raise RunNotFound(f"no pipeline run matches {quoted(ref)}; see 'isthmus runs list' for run ids")
        if len(rows) > 1:
            raise RunNotFound(f"run id prefix {quoted(ref)} is ambiguous; give more characters")
        return str(rows[0][0])

    def count_runs(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(s.pipeline_runs)).scalar() or 0)

    def get_run(self, ref: str) -> PipelineRunRecord:
        run_id = self.resolve_run_id(ref)
        with self._read() as conn:
            row = conn.execute(select(s.pipeline_runs).where(s.pipeline_runs.c.id == run_id)).mappings().first()
        assert row is not None
        return _pipeline_run(row)

    def list_artifacts(
        self, name: str | None = None, limit: int = 50, *, projects: Projects = None
    ) -> list[dict[str, Any]]:
        """One row per step run that produced or reused a version (of ``name``), newest first; ``projects``:
        only step runs of those projects (None: all)."""
        a, link, r = s.artifacts, s.step_run_artifacts, s.step_runs
        query = (
            select(
                link.c.artifact_name,
                a,
                r.c.pipeline_run_id,
                r.c.started_at.label("produced_at"),
                r.c.id.label("step_run_id"),
            )
            .select_from(link.join(a, a.c.content_hash == link.c.content_hash).join(r, r.c.id == link.c.step_run_id))
            .where(link.c.role == "output")
            .order_by(r.c.started_at.desc())
            .limit(limit)
        )
        if name:
            query = query.where(link.c.artifact_name == name)
        if projects is not None:
            from isthmus.governance.scope import step_run_in

            query = query.where(step_run_in(link.c.step_run_id, projects))
        with self._read() as conn:
            return [dict(x) for x in conn.execute(query).mappings()]

    def get_artifact(self, ref: str, *, project: str | None = None) -> dict[str, Any]:
        """An artifact by content hash (or unique prefix, with or without ``blake3:``) or ``name@alias`` (of
        ``project``; None: ``ISTHMUS_PROJECT``, else ``default``)."""
        a, al = s.artifacts, s.artifact_aliases
        if "@" in ref:
            name, alias = ref.rsplit("@", 1)
            owner = alias_project(project)
            with self._read() as conn:
                row = conn.execute(
                    select(al.c.content_hash).where(al.c.project == owner, al.c.name == name, al.c.alias == alias)
                ).first()
            if not row:
                raise RunNotFound(
                    f"no alias {ref!r} in project {owner!r}; set one with 'isthmus artifacts alias {name}@{alias} HASH'"
                )
            ref = row[0]
        needle = ref if ":" in ref else f"blake3:{ref}"
        with self._read() as conn:
            rows = conn.execute(select(a).where(a.c.content_hash.startswith(needle)).limit(2)).mappings().all()
        if len(rows) != 1:
            what = "is ambiguous" if rows else "matches no artifact"
            raise RunNotFound(f"artifact {ref!r} {what}; see 'isthmus artifacts list'")
        return dict(rows[0])

    def set_alias(
        self,
        name: str,
        alias: str,
        content_hash: str,
        step_run_id: str | None = None,
        *,
        change: dict[str, Any] | None = None,
        expect_from: str | None | bool = False,
        project: str | None = None,
    ) -> str | None:
        """Point ``name@alias`` of ``project`` (None: ``ISTHMUS_PROJECT``, else ``default``) at
        ``content_hash`` and append the change to ``artifact_alias_history`` (``change`` gives its action,
        forced, user, host, via and reason; by default a plain ``set`` via ``api``), in one transaction. With
        ``expect_from`` (a hash, or None for "unset") the change is made only if the alias still points
        there, else :class:`AliasMoved` is raised. Returns the old target."""
        al, hist = s.artifact_aliases, s.artifact_alias_history
        owner = alias_project(project)
        this = (al.c.project == owner, al.c.name == name, al.c.alias == alias)

        def work(conn: Connection) -> str | None:
            if self.dialect == "postgresql":  # serialize changes of one alias (SQLite: BEGIN IMMEDIATE does)
                key = f"{owner}/{name}@{alias}"
                conn.execute(text("SELECT pg_advisory_xact_lock(72472, hashtext(:k))"), {"k": key})
            old = conn.execute(select(al.c.content_hash).where(*this)).scalar()
            if expect_from is not False and old != expect_from:
                raise AliasMoved(f"{name}@{alias} was changed by someone else meanwhile (now {old}); try again")
            conn.execute(delete(al).where(*this))
            now = utcnow()
            conn.execute(
                insert(al).values(
                    project=owner,
                    name=name,
                    alias=alias,
                    content_hash=content_hash,
                    step_run_id=step_run_id,
                    updated_at=now,
                )
            )
            entry = {"action": "set", "forced": False, "user": None, "host": None, "via": "api", "reason": None}
            entry.update(change or {})
            conn.execute(
                insert(hist).values(
                    project=owner,
                    name=name,
                    alias=alias,
                    from_hash=old,
                    to_hash=content_hash,
                    changed_at=now,
                    **entry,
                )
            )
            return str(old) if old is not None else None

        result: str | None = self._run_write(work)
        return result

    def list_aliases(self, projects: Projects = None, name: str | None = None) -> list[dict[str, Any]]:
        """Aliases (of ``projects``, None: every project; of artifact ``name``), by project, name, alias.
        A scope limited to some DAGs (:class:`~isthmus.governance.scope.RunScope`) also leaves out the
        aliases pointing at versions its runs did not produce or consume."""
        from isthmus.governance.scope import hash_in, parts

        al = s.artifact_aliases
        query = select(al).order_by(al.c.project, al.c.name, al.c.alias)
        owners, dags = parts(projects)
        if owners is not None:
            query = query.where(al.c.project.in_(sorted(owners)))
        if dags is not None:
            query = query.where(hash_in(al.c.content_hash, projects))
        if name is not None:
            query = query.where(al.c.name == name)
        with self._read() as conn:
            return [dict(x) for x in conn.execute(query).mappings()]

    def artifact_producer(self, content_hash: str) -> StepRunRecord | None:
        """The first step run that produced ``content_hash`` (not a cache hit)."""
        link, r = s.step_run_artifacts, s.step_runs
        with self._read() as conn:
            row = (
                conn.execute(
                    select(r)
                    .select_from(link.join(r, r.c.id == link.c.step_run_id))
                    .where(link.c.content_hash == content_hash, link.c.role == "output")
                    .order_by(r.c.cache_hit, r.c.started_at)
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return _step_run(row) if row else None

    def referenced_hashes(self) -> set[str]:
        with self._read() as conn:
            return {row[0] for row in conn.execute(select(s.artifacts.c.content_hash))}

    def forget_artifact(self, content_hash: str) -> None:
        self._run_write(lambda c: c.execute(delete(s.artifacts).where(s.artifacts.c.content_hash == content_hash)))

    def dispose(self) -> None:
        self.engine.dispose()

    def invalidate_step_runs(self, step_run_ids: Sequence[str], reason: str) -> tuple[int, int]:
        """Mark ``step_run_ids`` invalidated (those not marked yet; the records stay) and drop every cache
        entry under their cache keys, in one transaction: two statements, each taking the list whole
        (:mod:`isthmus.store.idlists`). Returns (step runs marked, entries dropped)."""
        r, e = s.step_runs, s.cache_entries
        dialect = self.dialect
        ids = {"runs": bound(list(step_run_ids), dialect)}
        keys = select(r.c.cache_key).where(one_of(r.c.id, "runs", dialect))
        dropping = delete(e).where(e.c.cache_key.in_(keys))
        marking = (
            update(r)
            .where(one_of(r.c.id, "runs", dialect), r.c.invalidated_at.is_(None))
            .values(invalidated_at=bindparam("now"), invalidated_reason=bindparam("reason"))
        )

        def work(conn: Connection) -> tuple[int, int]:
            dropped = conn.execute(dropping, ids).rowcount or 0
            marked = conn.execute(marking, {**ids, "now": utcnow(), "reason": reason}).rowcount or 0
            return marked, dropped

        if not step_run_ids:
            return 0, 0
        result: tuple[int, int] = self._run_write(work)
        return result

    # -- the store's secret salt -----------------------------------------------------------------
    # One random 32-byte key per store (table ``store_settings``, revision 0002), created by the first
    # process that asks. Secret parts of cache keys (credential-named parameters, CachePolicy(env=...),
    # constants holding a credential) are hashed with it in BLAKE3's keyed mode, so a cache key seen
    # outside the store (lineage facets, manifests, logs) reveals nothing about a low-entropy secret,
    # while every process sharing the store computes the same keys. Never exported in a manifest.
    def secret_salt(self) -> bytes:
        """This store's secret salt (created on first use; cached per process)."""
        salt: bytes | None = getattr(self, "_secret_salt", None)
        if salt is None:
            salt = self._load_secret_salt()
            self._secret_salt = salt
        return salt

    def _load_secret_salt(self) -> bytes:
        select_salt = text("SELECT value FROM store_settings WHERE name = 'secret_salt'")
        with self._read() as conn:
            value = conn.execute(select_salt).scalar()
        if value is None:
            insert_salt = text(
                "INSERT INTO store_settings (name, value) VALUES ('secret_salt', :v) ON CONFLICT (name) DO NOTHING"
            )

            def work(conn: Connection) -> Any:
                conn.execute(insert_salt, {"v": secrets.token_hex(32)})
                return conn.execute(select_salt).scalar()

            value = self._run_write(work)
        if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
            raise IsthmusError(
                "the metadata store's secret salt (table store_settings, name 'secret_salt') is not 64 hex "
                "characters; delete that row and isthmus creates a new one (cache entries of steps with "
                "secret parameters are then recomputed once)"
            )
        return bytes.fromhex(value)

    # -- lineage and retention reads (each by an index; the full listings are for gc) --------------
    def _prefix(self, column: Any, prefix: str) -> Any:
        """``column`` starts with ``prefix``, as a key range on SQLite (its LIKE does not use the index)."""
        if self.dialect == "sqlite" and prefix:
            return and_(column >= prefix, column < prefix[:-1] + chr(ord(prefix[-1]) + 1))
        return column.startswith(prefix, autoescape=True)

    def find_pipeline_runs(self, prefix: str, limit: int = 2) -> list[str]:
        """Ids of pipeline runs whose id starts with ``prefix`` (at most ``limit``), by the primary key."""
        p = s.pipeline_runs
        with self._read() as conn:
            rows = conn.execute(select(p.c.id).where(self._prefix(p.c.id, prefix)).order_by(p.c.id).limit(limit))
            return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]

    def find_artifacts(self, prefix: str, limit: int = 2) -> list[dict[str, Any]]:
        """Artifacts whose content hash starts with ``prefix`` (``blake3:…``), by the primary key."""
        a = s.artifacts
        with self._read() as conn:
            rows = conn.execute(
                select(a).where(self._prefix(a.c.content_hash, prefix)).order_by(a.c.content_hash).limit(limit)
            )
            return [dict(r) for r in rows.mappings() if str(r["content_hash"]).startswith(prefix)]

    def artifacts_by_hash(
        self, hashes: Sequence[str], columns: Sequence[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """The ``artifacts`` rows of ``hashes`` (those recorded), by content hash; only ``columns`` (and the
        hash) when given."""
        a, out = s.artifacts, {}
        query = select(a) if columns is None else select(a.c.content_hash, *(a.c[c] for c in columns))
        with self._read() as conn:
            for chunk in _chunks(hashes):
                for row in conn.execute(query.where(a.c.content_hash.in_(chunk))).mappings():
                    out[str(row["content_hash"])] = dict(row)
        return out

    def unrecorded_hashes(self, hashes: Collection[str]) -> list[str]:
        """Those of ``hashes`` that no ``artifacts`` row and no step run link names (sorted). From
        :data:`_HASH_SCAN_FROM` hashes on, the recorded ones are read in one pass along the artifacts'
        primary-key index rather than looked up 500 at a time; links are looked up only for the rest."""
        a, link = s.artifacts, s.step_run_artifacts
        left = set(hashes)
        with self._read() as conn:
            if len(left) >= _HASH_SCAN_FROM:
                left.difference_update(conn.execute(select(a.c.content_hash)).scalars())
            else:
                for chunk in _chunks(sorted(left)):
                    left.difference_update(
                        conn.execute(select(a.c.content_hash).where(a.c.content_hash.in_(chunk))).scalars()
                    )
            for chunk in _chunks(sorted(left)):
                query = select(link.c.content_hash).where(link.c.content_hash.in_(chunk)).distinct()
                left.difference_update(conn.execute(query).scalars())
        return sorted(left)

    def links_of_step_runs(self, step_run_ids: Sequence[str]) -> list[dict[str, Any]]:
        """``step_run_artifacts`` rows (inputs and outputs) of these step runs, by the primary key."""
        link = s.step_run_artifacts
        with self._read() as conn:
            return [
                dict(row)
                for chunk in _chunks(step_run_ids)
                for row in conn.execute(select(link).where(link.c.step_run_id.in_(chunk))).mappings()
            ]

    def links_of_hashes(self, hashes: Sequence[str], role: str, limit: int) -> list[dict[str, Any]]:
        """``step_run_artifacts`` rows with ``role`` for these content hashes (at most ``limit``), by the
        content-hash index."""
        link = s.step_run_artifacts
        out: list[dict[str, Any]] = []
        with self._read() as conn:
            for chunk in _chunks(hashes):
                query = select(link).where(link.c.content_hash.in_(chunk), link.c.role == role).limit(limit - len(out))
                out += [dict(row) for row in conn.execute(query).mappings()]
                if len(out) >= limit:
                    break
        return out

    def step_runs_by_id(
        self, step_run_ids: Sequence[str], columns: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """These step runs, each with its pipeline run's ``pipeline`` name and ``project``, by the primary keys;
        only ``columns`` (and ``id``, ``status``) when given: a wide answer parses fewer JSON values."""
        r, p = s.step_runs, s.pipeline_runs
        picked = (
            [r] if columns is None else [r.c.id, r.c.status, *(r.c[c] for c in columns if c not in ("id", "status"))]
        )
        query = select(*picked, p.c.pipeline.label("pipeline"), p.c.project.label("project")).select_from(
            r.outerjoin(p, p.c.id == r.c.pipeline_run_id)
        )
        with self._read() as conn:
            return [
                dict(_step_run(row))
                for chunk in _chunks(step_run_ids)
                for row in conn.execute(query.where(r.c.id.in_(chunk))).mappings()
            ]

    def drop_cache_entries(self, entries: Sequence[tuple[str, str]]) -> int:
        """Delete these (cache_key, step_run_id) entries. On PostgreSQL the table is locked first, so a
        cache hit that read one of them has committed (and is visible) before they go."""

        e = s.cache_entries

        def work(conn: Connection) -> int:
            if self.dialect == "postgresql":
                conn.execute(text("LOCK TABLE cache_entries IN ACCESS EXCLUSIVE MODE"))
            if self.dialect == "sqlite":  # one DELETE by primary key per entry, run by the driver's executemany
                return int(conn.execute(_DROP_ENTRY, [{"_key": k, "_id": i} for k, i in entries]).rowcount or 0)
            done = 0  # (a row-value IN list: SQLite would scan the table for each list; PostgreSQL uses the key)
            for i in range(0, len(entries), 500):
                pairs = [tuple(pair) for pair in entries[i : i + 500]]
                done += conn.execute(delete(e).where(tuple_(e.c.cache_key, e.c.step_run_id).in_(pairs))).rowcount or 0
            return done

        return int(self._run_write(work)) if entries else 0

    def abort_step_runs(self, leases: dict[str, list[tuple[str, str]]], ids: Sequence[str], error: str) -> list[str]:
        """Mark the step runs ``ids`` ABORTED with ``error`` where they are still RUNNING, and release the
        leases (``leases``: step run id -> [(cache key, holder)]) of those marked, in one transaction
        (retried while SQLite is locked). Returns the ids marked."""

        def work(conn: Connection) -> list[str]:
            marked: list[str] = []
            for step_run_id in ids:
                if conn.execute(_ABORT_RUNNING, {"_id": step_run_id, "_error": error, "_now": utcnow()}).rowcount:
                    marked.append(step_run_id)
                    for key, holder in leases.get(step_run_id, []):
                        conn.execute(_RELEASE_LEASE, {"_key": key, "_holder": holder})
            return marked

        return self._run_write(work) if ids else []

    def forget_artifacts(self, hashes: Sequence[str]) -> None:
        """Delete the ``artifacts`` rows of these content hashes (their objects are gone)."""
        a = s.artifacts

        def work(conn: Connection) -> None:
            for chunk in _chunks(hashes):
                conn.execute(delete(a).where(a.c.content_hash.in_(chunk)))

        if hashes:
            self._run_write(work)

    def _retention_sets(
        self,
        conn: Any,
        *,
        now: float,
        keep_last: int | None,
        age_cutoff: dt.datetime | None,
        fresh: dt.datetime,
        prune_cache: bool,
    ) -> _RetentionSets:
        """The conditions gc decides by (see :meth:`retention_plan`), as SQL expressions."""
        p, r, link, e, al, a = (
            s.pipeline_runs,
            s.step_runs,
            s.step_run_artifacts,
            s.cache_entries,
            s.artifact_aliases,
            s.artifacts,
        )
        running = str(RunStatus.RUNNING)
        kept_runs = None
        if keep_last is not None or age_cutoff is not None:
            keeps = [p.c.status == running]
            if keep_last is not None:
                keeps.append(self._newest_runs(conn, keep_last))
            if age_cutoff is not None:
                keeps.append(p.c.started_at >= age_cutoff)
            kept_runs = select(p.c.id).where(or_(*keeps))
        live = or_(e.c.expires_at.is_(None), e.c.expires_at > now)
        unneeded: list[Any] = []
        if not prune_cache and kept_runs is not None:  # (every run kept: its outputs are linked, so needed)
            # A live entry keeps its step run's outputs. First its producer (the step run that recorded the
            # artifact row, in the transaction that recorded its output link — no link is ever deleted
            # alone): one probe of the entries' index per artifact, and in most stores it keeps most of
            # them. Written as "among the artifacts whose producer has no live entry", so that SQLite starts
            # from those few (it would test a correlated condition last, after probing every other set for
            # every artifact). Then, for those, every step run that output the same hash.
            produced = a.alias("produced")
            producer_live = select(e.c.step_run_id).where(e.c.step_run_id == produced.c.producer_step_run_id, live)
            unneeded.append(a.c.content_hash.in_(select(produced.c.content_hash).where(~producer_live.exists())))
            unneeded.append(
                ~select(link.c.step_run_id)
                .join(e, e.c.step_run_id == link.c.step_run_id)
                .where(link.c.content_hash == a.c.content_hash, link.c.role == "output", live)
                .exists()
            )
        unneeded += [a.c.created_at < fresh, _absent_from(conn, a.c.content_hash, select(al.c.content_hash))]
        kept_steps = None
        if kept_runs is not None:
            # the step runs of kept runs (few, by the pipeline_run_id index), with no run, RUNNING or new
            kept_steps = union(
                select(r.c.id).where(r.c.pipeline_run_id.in_(kept_runs)),
                select(r.c.id).where(r.c.pipeline_run_id.is_(None)),
                select(r.c.id).where(or_(r.c.status == running, r.c.started_at >= fresh)),
            )
            unneeded.append(
                _absent_from(
                    conn, a.c.content_hash, select(link.c.content_hash).where(link.c.step_run_id.in_(kept_steps))
                )
            )
        else:  # every step run is kept: whatever is linked is needed (links cascade with their step run)
            unneeded.append(_absent_from(conn, a.c.content_hash, select(link.c.content_hash)))
        history = inspect(conn).has_table("artifact_alias_history")
        named: list[Any] = [select(al.c.content_hash)]  # hashes aliases name now or (kept) named before
        if history:
            h = s.artifact_alias_history
            # (no NULL from_hash: NOT IN and NOT EXISTS would differ on it, see _absent_from)
            named += [select(h.c.to_hash), select(h.c.from_hash).where(h.c.from_hash.is_not(None))]
            unneeded += [_absent_from(conn, a.c.content_hash, x) for x in named[1:]]
        # RUNNING step runs: their recorded inputs are needed (their links come when they finish); few rows
        in_use: set[str] = set()
        for (inputs,) in conn.execute(select(r.c.inputs).where(r.c.status == running)):
            for ref in inputs.values() if isinstance(inputs, dict) else ():
                if isinstance(ref, dict) and isinstance(ref.get("content_hash"), str):
                    in_use.add(ref["content_hash"])
        for chunk in _chunks(sorted(in_use)):
            unneeded.append(a.c.content_hash.not_in(chunk))
        runs = int(conn.execute(select(func.count()).select_from(p)).scalar_one())
        kept = (
            runs
            if kept_runs is None
            else int(conn.execute(select(func.count()).select_from(kept_runs.subquery())).scalar_one())
        )
        entries = entries_where = dropped = None
        if prune_cache and kept_steps is not None:  # live entries of step runs not kept
            if kept * _FEW_KEPT <= runs:
                # ... with an output among the candidates. Testing each entry's outputs against the
                # candidates builds the candidate set first (nearly every artifact, when few runs are
                # kept). Instead each output is tested against what is needed (few hashes then): the
                # conditions of ``unneeded`` as one set — the names' hashes, what kept step runs link, and
                # "created before fresh" read as "not among the few created since" (the created_at index,
                # not an artifact row per output) — the outputs read from the links' covering index, their
                # artifacts from the primary key's. 0.87 -> 0.65 s at 100,000 step runs with 0.2 % kept.
                # The candidates are the artifacts not in that set either: one probe per artifact, not one
                # per condition. A kept step run links only needed hashes, so none of its entries is among
                # ``dropped``: the entries are not tested against the kept step runs again.
                # (a CTE: a statement that tests against it in several places builds it once; the hashes
                # RUNNING step runs take as inputs are in it too, their parameters bound once)
                needed = select(
                    union_all(
                        *named,
                        select(link.c.content_hash).where(link.c.step_run_id.in_(kept_steps)),
                        select(a.c.content_hash).where(a.c.created_at >= fresh),
                        *(select(a.c.content_hash).where(a.c.content_hash.in_(c)) for c in _chunks(sorted(in_use))),
                    )
                    .cte("gc_needed")
                    .c.content_hash
                )
                # (with "created before fresh" again: the created_at index, not a scan of every artifact)
                unneeded = [a.c.created_at < fresh, _absent_from(conn, a.c.content_hash, needed)]
                dropped = (
                    select(link.c.step_run_id)
                    .join(a, a.c.content_hash == link.c.content_hash)
                    .where(link.c.role == "output", _absent_from(conn, link.c.content_hash, needed))
                )
                entries_where = [live]
                entries = select(e.c.cache_key, e.c.step_run_id).where(live, e.c.step_run_id.in_(dropped))
            else:  # each entry's outputs tested against the candidates
                entries_where = [live, _absent_from(conn, e.c.step_run_id, kept_steps)]
                entries = (
                    select(e.c.cache_key, e.c.step_run_id)
                    .join(link, and_(link.c.step_run_id == e.c.step_run_id, link.c.role == "output"))
                    .where(*entries_where)
                    .where(link.c.content_hash.in_(select(a.c.content_hash).where(*unneeded)))
                    .distinct()
                )
        return _RetentionSets(unneeded, kept_runs, entries, entries_where or [], history, runs, kept, dropped)

    def _newest_runs(self, conn: Any, keep_last: int) -> Any:
        """A condition on pipeline runs: among the ``keep_last`` newest of their pipeline. With few
        pipelines and a small ``keep_last``, their ids, found per pipeline on the (pipeline, started_at)
        index; otherwise ranked by a window function (one sort of every run), so that the statement never
        carries more than :data:`_LISTED_RUNS` ids (drivers cap bound parameters: 65,535 in psycopg)."""
        p = s.pipeline_runs
        newest = (p.c.started_at.desc(), p.c.id.desc())
        names = [row[0] for row in conn.execute(select(p.c.pipeline).distinct().limit(_PER_PIPELINE_LOOKUPS + 1))]
        if len(names) > _PER_PIPELINE_LOOKUPS or len(names) * keep_last > _LISTED_RUNS:
            rank = func.row_number().over(partition_by=p.c.pipeline, order_by=newest).label("rank")
            ranked = select(p.c.id, rank).subquery("ranked")
            return p.c.id.in_(select(ranked.c.id).where(ranked.c.rank <= keep_last))
        ids: list[str] = []
        for name in names:
            ids.extend(
                str(i)
                for i in conn.execute(
                    select(p.c.id).where(p.c.pipeline == name).order_by(*newest).limit(keep_last)
                ).scalars()
            )
        return p.c.id.in_(ids) if ids else false()

    def retention_plan(
        self,
        *,
        now: float,
        keep_last: int | None,
        age_cutoff: dt.datetime | None,
        fresh: dt.datetime,
        prune_cache: bool,
    ) -> RetentionPlan:
        """What gc may delete, decided in the database in one transaction (see :mod:`isthmus.gc` for the
        rules): artifacts created before ``fresh`` whose hash no kept step run links, no live cache entry
        keeps (unless ``prune_cache``), no current alias and no alias history names, and no RUNNING step
        run records as an input. A pipeline run is dropped when it is not RUNNING, not among the
        ``keep_last`` newest of its pipeline (if given) and started before ``age_cutoff`` (if given); with
        neither, every run is kept. A step run is kept unless its run is dropped, it is not RUNNING and it
        started before ``fresh``. Set-based: each "needed" set is computed once and the artifacts are
        anti-joined against it on indexed columns (SQLite: ``NOT IN``, materialized once; PostgreSQL:
        ``NOT EXISTS``, an anti join — see :func:`_absent_from`)."""
        a = s.artifacts
        with self._scan() as conn, conn.begin():
            sets = self._retention_sets(
                conn, now=now, keep_last=keep_last, age_cutoff=age_cutoff, fresh=fresh, prune_cache=prune_cache
            )
            candidates = {
                str(row[0]): int(row[1] or 0)
                for row in conn.execute(select(a.c.content_hash, a.c.size).where(*sets.unneeded))
            }
            runs, kept = sets.runs, sets.runs_kept
            droppable = (
                sorted((str(key), str(sid)) for key, sid in conn.execute(sets.entries))
                if sets.entries is not None and candidates
                else []
            )
        return RetentionPlan(runs, kept, candidates, droppable, sets.history)

    def retention_summary(
        self,
        *,
        now: float,
        keep_last: int | None,
        age_cutoff: dt.datetime | None,
        fresh: dt.datetime,
        prune_cache: bool,
        listing: int,
    ) -> RetentionSummary:
        """What :meth:`retention_plan` would decide, counted in the database (a dry run): the number and
        total size of the candidates, the first ``listing`` of them by hash, and the number of cache
        entries that would be dropped — no row per candidate leaves the database."""
        a, e, link = s.artifacts, s.cache_entries, s.step_run_artifacts
        with self._scan() as conn, conn.begin():
            sets = self._retention_sets(
                conn, now=now, keep_last=keep_last, age_cutoff=age_cutoff, fresh=fresh, prune_cache=prune_cache
            )
            if sets.dropped is not None:
                count, size, entries, listed = _summary_of_few_kept(conn, sets, listing)
                return RetentionSummary(sets.runs, sets.runs_kept, count, size, listed, entries, sets.history)
            # one evaluation of the candidate set: counted, summed and listed (window aggregates) in one query
            cand = select(a.c.content_hash, a.c.size).where(*sets.unneeded).cte("gc_candidates")
            columns = [
                cand.c.content_hash,
                func.count().over().label("n"),
                func.coalesce(func.sum(cand.c.size).over(), 0).label("size"),
            ]
            if sets.entries is not None:
                # entries (unique rows) of dropped step runs with an output among the candidates: no DISTINCT
                has_candidate = (
                    select(link.c.step_run_id)
                    .where(
                        link.c.step_run_id == e.c.step_run_id,
                        link.c.role == "output",
                        link.c.content_hash.in_(select(cand.c.content_hash)),
                    )
                    .exists()
                )
                droppable = select(func.count()).select_from(e).where(*sets.entries_where, has_candidate)
                columns.append(droppable.scalar_subquery().label("entries"))
            rows = conn.execute(select(*columns).order_by(cand.c.content_hash).limit(max(listing, 1))).all()
            count, size = (int(rows[0].n), int(rows[0].size)) if rows else (0, 0)
            entries = int(rows[0].entries) if rows and sets.entries is not None else 0
            listed = [str(row.content_hash) for row in rows][: max(listing, 0)]
        return RetentionSummary(sets.runs, sets.runs_kept, count, size, listed, entries, sets.history)


def _summary_of_few_kept(conn: Any, sets: _RetentionSets, listing: int) -> tuple[int, int, int, list[str]]:
    """:meth:`MetadataStore.retention_summary` when few runs are kept (``sets.dropped`` is given): how
    many candidates, their size, how many entries would be dropped and the first ``listing`` candidates by
    hash, in one statement (one snapshot) — a row of totals (with no hash), then the listing, which stops
    early (each candidate is one probe of what is needed: testing the conditions twice costs less than a
    window over every candidate). 0.68 -> 0.48 s at 100,000 step runs with 0.2 % kept."""
    a, e = s.artifacts, s.cache_entries
    droppable = select(func.count()).select_from(e).where(*sets.entries_where, e.c.step_run_id.in_(sets.dropped))
    totals = select(
        null().label("content_hash"),
        func.count().label("n"),
        func.coalesce(func.sum(a.c.size), 0).label("size"),
        droppable.scalar_subquery().label("entries"),
    ).where(*sets.unneeded)
    first = select(a.c.content_hash).where(*sets.unneeded).order_by(a.c.content_hash).limit(max(listing, 0))
    rows = conn.execute(union_all(totals, select(first.subquery(), null(), null(), null()))).all()
    total = next(row for row in rows if row[0] is None)
    listed = sorted(str(row[0]) for row in rows if row[0] is not None)
    return int(total.n), int(total.size or 0), int(total.entries or 0), listed


def _absent_from(conn: Any, column: Any, rows: Any) -> Any:
    """``column NOT IN (rows)``, on PostgreSQL as ``NOT EXISTS``: its planner makes that an anti join
    (hashed, spilled to disk when large), while a NOT IN whose set outgrows ``work_mem`` is a plain subplan
    that rescans the whole set for every row — plain gc at 100,000 step runs went past 30 s. SQLite builds
    the set of a NOT IN once (an ephemeral index), so there it stays. The two differ only on NULLs, and
    none of the columns compared here holds one."""
    if conn.dialect.name != "postgresql":
        return column.not_in(rows)
    among = rows.subquery()
    return ~select(among.c[0]).where(among.c[0] == column).exists()


def upgrade_with_alembic(engine: Any) -> None:
    """Create or upgrade the schema of the store at ``engine`` by running the migrations (alembic)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.connect().execution_options(**{WRITE: True}) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()


_SCAN_CACHE_KIB = -65536  # PRAGMA cache_size: negative is KiB
_PER_PIPELINE_LOOKUPS = 200  # gc --keep-last: up to this many pipelines, their newest runs are looked up one by one
_HASH_SCAN_FROM = 5000  # unrecorded_hashes: from this many hashes on, one pass over the artifacts' hashes
_LISTED_RUNS = 2000  # gc --keep-last: at most this many run ids are listed in a statement (else a window ranks them)
# gc --prune-cache: with at most 1/_FEW_KEPT of the runs kept, the entries to drop are found from what is
# needed (a smaller set than the candidates then), not from the candidates
_FEW_KEPT = 4


def _chunks(items: Sequence[str], size: int = 500) -> Iterator[list[str]]:
    """``items`` in lists of at most ``size`` (SQLite limits bound parameters)."""
    items = list(items)
    for i in range(0, len(items), size):
        yield items[i : i + size]


def default_store_path() -> str:
    return os.path.expanduser("~/.isthmus/isthmus.db")
