"""Close isthmus pipeline runs when their DAG runs end — in a helper process, never in the caller.

Airflow calls DAG-run listeners from inside the scheduler loop (and from the api-server when a user
marks a run), while that thread's scoped ORM session holds the ``DagRun``. Looking the isthmus
connection up there goes through Airflow's ``MetastoreBackend``, whose ``@provide_session`` takes
that same thread-local session and *closes* it afterwards: every object the scheduler still works on
is detached, and its next attribute access raises ``DetachedInstanceError`` (the scheduler crashed
at the end of every DAG run). A thread of our own would not share that session, but a thread doing
SQLite or network work while the scheduler forks (LocalExecutor workers, the OpenLineage listener's
process pool) leaves its locks held in the child, which then deadlocks.

So the listener only copies plain values out of the DAG run into a :class:`RunEnd` and writes it as
one JSON line to a helper process (``python -m isthmus_airflow.plugins.run_closer``, started on first
use with fork+exec, restarted if it died). The write never blocks: the pipe is non-blocking and a
full pipe drops the close with a warning. The helper resolves each connection through Airflow's
server-side secrets chain (a configured secrets backend, ``AIRFLOW_CONN_*``, then the metadata DB with
its own session), opens the isthmus store and closes the run, with bounded retries; it exits when
the pipe closes (the parent exited), after finishing what was queued. ``flush()`` waits until the
helper has handled everything written so far (tests, ``dag.test()``, a stopping component, and, for a
bounded time, the exit of the process).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

log = logging.getLogger("isthmus_airflow.run_closer")

ATTEMPTS = 3
BACKOFF_SECONDS = 1.0
FLUSH_SECONDS = 30.0
EXIT_FLUSH_SECONDS = 15.0


# The pipeline run status of an ended DAG run (an isthmus.records.RunStatus; isthmus itself is imported
# only in the helper process, never in the scheduler).
EndStatus = Literal["COMPLETED", "FAILED"]


def _end_status(value: Any) -> EndStatus:
    if value == "COMPLETED":
        return "COMPLETED"
    if value == "FAILED":
        return "FAILED"
    raise ValueError(f"a DAG run end with status {value!r}; expected COMPLETED or FAILED")


@dataclass(frozen=True)
class RunEnd:
    """A DAG run that ended, as plain values (no ORM object leaves the caller)."""

    dag_id: str
    run_id: str
    status: EndStatus
    error: str | None
    conn_ids: tuple[str, ...]  # the isthmus connections the DAG's tasks use

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunEnd:
        return cls(
            dag_id=str(data["dag_id"]),
            run_id=str(data["run_id"]),
            status=_end_status(data["status"]),
            error=None if data.get("error") is None else str(data["error"]),
            conn_ids=tuple(str(c) for c in data["conn_ids"]),
        )


# -- the caller's side: hand the work over, never wait -------------------------------------------
class HelperChannel:
    """The pipe to this process's helper (started lazily)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # held only to start the helper or write a line
        self._answers = threading.Lock()  # one flush at a time reads the helper's answers
        self._proc: subprocess.Popen[bytes] | None = None
        self._env: tuple[tuple[str, str], ...] = ()
        self._flushes = 0

    def _helper(self) -> subprocess.Popen[bytes]:
        env = _settings_env()
        if self._proc is not None and self._proc.poll() is None and env != self._env:
            self._retire()  # the settings changed (tests do that): the old helper drains and exits
        if self._proc is None or self._proc.poll() is not None:
            self._env = env
            self._proc = subprocess.Popen(  # fork+exec: nothing of this process runs in the child
                [sys.executable, "-m", "isthmus_airflow.plugins.run_closer"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
            os.set_blocking(self._proc.stdin.fileno(), False)  # type: ignore[union-attr]
        return self._proc

    def _write(self, message: dict[str, Any]) -> subprocess.Popen[bytes]:
        line = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        for attempt in (1, 2):
            proc = self._helper()
            try:
                os.write(proc.stdin.fileno(), line)  # type: ignore[union-attr]
                return proc
            except BrokenPipeError:  # the helper died: start another once
                if attempt == 2:
                    raise
                self._retire()
        raise AssertionError("unreachable")

    def submit(self, end: RunEnd) -> None:
        with self._lock:
            try:
                self._write({"end": asdict(end)})
            except BlockingIOError:
                log.warning("isthmus: the run-closing helper is behind; %s/%s stays open", end.dag_id, end.run_id)

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait until the helper handled everything written before this call; False on timeout.
        Submissions from other threads go on meanwhile."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                return True
            self._flushes += 1
            token = f"flushed {self._flushes}\n".encode()
            try:
                proc = self._write({"flush": self._flushes})
            except (BlockingIOError, BrokenPipeError):
                return False
        with self._answers:
            deadline = time.monotonic() + timeout
            buffer = b""
            fd = proc.stdout.fileno()  # type: ignore[union-attr]
            while time.monotonic() < deadline:
                try:
                    ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
                    chunk = os.read(fd, 4096) if ready else None
                except (OSError, ValueError):  # retired meanwhile
                    return False
                if chunk is None:
                    break
                if not chunk:  # the helper exited
                    return False
                buffer += chunk
                if token in buffer:
                    return True
            return False

    def _retire(self) -> subprocess.Popen[bytes] | None:
        """Close our ends of the helper's pipes (it finishes what it was given, then exits)."""
        proc, self._proc = self._proc, None
        for stream in (proc.stdin, proc.stdout) if proc is not None else ():
            try:
                stream.close()  # type: ignore[union-attr]
            except Exception:
                pass
        return proc

    def close(self) -> None:
        """Let the helper finish what it was given and exit (without waiting for it)."""
        with self._lock:
            self._retire()

    def forget(self) -> None:
        """In a forked child: drop the parent's pipe (the helper must see EOF when the parent exits)."""
        self._lock = threading.Lock()
        self._answers = threading.Lock()
        proc = self._retire()
        if proc is not None:
            proc.returncode = 0  # not our child: never wait for it


def _settings_env() -> tuple[tuple[str, str], ...]:
    """The settings the helper inherits that say where a store is: ISTHMUS_* and Airflow's."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("ISTHMUS_", "AIRFLOW_", "AIRFLOW__"))))


channel = HelperChannel()
os.register_at_fork(after_in_child=channel.forget)
# A short-lived process (``airflow dags test``) returns once its pipeline runs are closed.
atexit.register(lambda: channel.flush(EXIT_FLUSH_SECONDS))


def submit(end: RunEnd) -> None:
    """Queue the close of a DAG run's pipeline run; returns at once."""
    channel.submit(end)


def flush(timeout: float = FLUSH_SECONDS) -> bool:
    """Wait until the pipeline runs of DAG runs that ended in this process so far are closed."""
    return channel.flush(timeout)


# -- the helper's side ---------------------------------------------------------------------------
def find_connection(conn_id: str) -> Any | None:
    """The Airflow connection ``conn_id`` from the server-side secrets chain (a configured secrets
    backend, ``AIRFLOW_CONN_*`` variables, then the metadata DB), or None."""
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


def close_run(end: RunEnd) -> None:
    """Resolve each connection and set the pipeline run's final status in its store (raises)."""
    # start-up cost: the scheduler and api-server load this plugin; the core loads in the helper process
    from isthmus.context import derived_run_id
    from isthmus.errors import RunNotFound
    from isthmus.records import RunStatus
    from isthmus_airflow.hooks.isthmus import IsthmusHook, connection_locations

    run_id = derived_run_id("airflow", end.dag_id, end.run_id)
    for conn_id in end.conn_ids:
        conn = find_connection(conn_id)
        if conn is None and conn_id != IsthmusHook.default_conn_name:
            raise LookupError(f"isthmus connection {conn_id!r} does not exist")
        meta = IsthmusHook.runner_at(connection_locations(conn), conn_id).metadata
        try:
            record = meta.get_run(run_id)
        except RunNotFound:  # no isthmus task of this DAG run got as far as recording
            continue
        if record.get("status") != end.status:  # a task that failed for good closed it with its error
            meta.finish_pipeline_run(run_id, RunStatus(end.status), error=end.error)


def close_with_retries(end: RunEnd) -> bool:
    """``close_run`` with bounded retries; a warning (never an exception) when it cannot be done."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            close_run(end)
            return True
        except Exception as exc:
            if attempt == ATTEMPTS:
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                log.warning(
                    "isthmus: could not close the pipeline run of %s/%s as %s: %s: %s",
                    end.dag_id,
                    end.run_id,
                    end.status,
                    type(exc).__name__,
                    first_line,
                )
                return False
            time.sleep(BACKOFF_SECONDS * attempt)
    return False


def serve(stdin: Any = None, stdout: Any = None) -> None:
    """The helper's loop: one JSON message per line until the pipe closes."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    for raw in stdin:
        try:
            message = json.loads(raw)
            if "flush" in message:
                stdout.write(f"flushed {int(message['flush'])}\n".encode())
                stdout.flush()
            else:
                close_with_retries(RunEnd.from_json(message["end"]))
        except Exception as exc:  # a bad line must not stop the helper
            log.warning("isthmus: run-closing helper skipped a message: %s: %s", type(exc).__name__, exc)


def main() -> None:
    """Entry point of the helper. Flush answers go to the parent on stdout; everything else printed
    (Airflow's own logging included) goes to the stderr it shares with the parent."""
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # Airflow reconfigures the root logger when it is imported
    serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
