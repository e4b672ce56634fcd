"""Close isthmus pipeline runs when their DAG runs end — on a thread of our own, never the caller's.

Airflow calls DAG-run listeners from inside the scheduler loop (and from the api-server when a user
marks a run), while that thread's scoped ORM session holds the ``DagRun``. Looking the isthmus
connection up there goes through Airflow's ``MetastoreBackend``, whose ``@provide_session`` takes
that same thread-local session and *closes* it afterwards: every object the scheduler still works
on is detached, and its next attribute access raises ``DetachedInstanceError`` (the scheduler
crashed at the end of every DAG run). So the listener only copies plain values out of the DAG run
into a :class:`RunEnd` and queues it; one daemon thread resolves the connection through Airflow's
server-side secrets chain (environment variables first, then the metadata DB through the thread's
*own* session), opens the isthmus store and closes the run, with bounded retries. Nothing here raises
into the caller or waits on I/O in its thread. ``flush()`` waits for queued closes (tests,
``dag.test()``); the process drains the queue at exit and before an Airflow component stops.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("isthmus_airflow.run_closer")

ATTEMPTS = 3
BACKOFF_SECONDS = 1.0
DRAIN_SECONDS = 15.0
MAX_QUEUED = 10_000


@dataclass(frozen=True)
class RunEnd:
    """A DAG run that ended, as plain values (no ORM object crosses to the closing thread)."""

    dag_id: str
    run_id: str
    status: str  # the isthmus pipeline run status: COMPLETED or FAILED
    error: str | None
    conn_ids: tuple[str, ...]  # the isthmus connections the DAG's tasks use


def find_connection(conn_id: str) -> Any | None:
    """The Airflow connection ``conn_id`` from the server-side secrets chain (a configured secrets
    backend, ``AIRFLOW_CONN_*`` variables, then the metadata DB), or None. Called on the closing
    thread only: the DB lookup opens and closes that thread's own session."""
    from airflow.configuration import ensure_secrets_loaded

    for backend in ensure_secrets_loaded():
        try:
            conn = backend.get_connection(conn_id=conn_id)
        except Exception as exc:  # try the next backend, as Airflow does
            log.debug("isthmus: %s could not look up %r: %s", type(backend).__name__, conn_id, exc)
            continue
        if conn is not None:
            return conn
    return None


def _release_thread_session() -> None:
    """Drop this thread's Airflow session (the lookup closed it; this forgets it)."""
    try:
        from airflow import settings

        if settings.Session is not None:
            settings.Session.remove()
    except Exception:  # nothing to release
        pass


def close_run(end: RunEnd) -> None:
    """Resolve each connection and set the pipeline run's final status in its store (raises)."""
    from isthmus.context import derived_run_id
    from isthmus.errors import RunNotFound
    from isthmus_airflow.hooks.isthmus import IsthmusHook, connection_locations

    run_id = derived_run_id("airflow", end.dag_id, end.run_id)
    for conn_id in end.conn_ids:
        try:
            conn = find_connection(conn_id)
        finally:
            _release_thread_session()
        if conn is None and conn_id != IsthmusHook.default_conn_name:
            raise LookupError(f"isthmus connection {conn_id!r} does not exist")
        meta = IsthmusHook.runner_at(connection_locations(conn), conn_id).metadata
        try:
            record = meta.get_run(run_id)
        except RunNotFound:  # no isthmus task of this DAG run got as far as recording
            continue
        if record.get("status") != end.status:  # a task that failed for good closed it with its error
            meta.finish_pipeline_run(run_id, end.status, error=end.error)


class PipelineRunCloser:
    """One daemon thread working through a queue of :class:`RunEnd`."""

    def __init__(self) -> None:
        self._queue: queue.Queue[RunEnd] = queue.Queue(maxsize=MAX_QUEUED)
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, end: RunEnd) -> None:
        """Queue ``end``; returns at once (drops it with a warning if the queue is full)."""
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(end)
        except queue.Full:
            self._done()
            log.warning(
                "isthmus: too many pipeline runs waiting to be closed; %s/%s stays open", end.dag_id, end.run_id
            )
            return
        self._ensure_thread()

    def flush(self, timeout: float = DRAIN_SECONDS) -> bool:
        """Wait until every queued run is closed (or given up); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="isthmus-run-closer", daemon=True)
                self._thread.start()

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            if not self._pending:
                self._idle.notify_all()

    def _work(self) -> None:
        while True:
            end = self._queue.get()
            try:
                self._close_with_retries(end)
            finally:
                self._done()

    @staticmethod
    def _close_with_retries(end: RunEnd) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                close_run(end)
                return
            except Exception as exc:
                if attempt == ATTEMPTS:
                    log.warning(
                        "isthmus: could not close the pipeline run of %s/%s as %s: %s: %s",
                        end.dag_id,
                        end.run_id,
                        end.status,
                        type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "",
                    )
                    return
                time.sleep(BACKOFF_SECONDS * attempt)


closer = PipelineRunCloser()


def _reset_in_child() -> None:  # a forked child (an executor's worker) has no closing thread
    global closer
    closer = PipelineRunCloser()


os.register_at_fork(after_in_child=_reset_in_child)
atexit.register(lambda: closer.flush(DRAIN_SECONDS))


def submit(end: RunEnd) -> None:
    closer.submit(end)


def flush(timeout: float = DRAIN_SECONDS) -> bool:
    """Wait until the pipeline runs of DAG runs that ended in this process are closed."""
    return closer.flush(timeout)
