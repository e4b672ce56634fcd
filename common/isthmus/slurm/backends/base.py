"""``SlurmClient``: what every Slurm backend offers (submit, status, cancel, logs, job files), and what they
share: waiting for a job, the local-filesystem file methods, and the error hints of Slurm's messages.

A backend subclasses :class:`SlurmClient`, sets ``kind`` (its name in
:data:`isthmus.slurm.backends.BACKENDS`) and ``summary``, and implements the backend interface. All methods
are coroutines (one event loop: the Airflow triggerer, the Flyte connector service); :func:`run_sync` runs
one from synchronous code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from isthmus.slurm.backends import DEFAULT_BACKEND, connect
from isthmus.slurm.errors import SlurmError, SlurmSubmitError, SlurmUnavailable
from isthmus.slurm.spec import JobSpec
from isthmus.slurm.states import UNSATISFIABLE_REASONS, JobStatus

log = logging.getLogger("isthmus.slurm")
T = TypeVar("T")
LOG_TAIL_BYTES = 64 * 1024
# What Slurm (commands, slurmrestd, libslurm) says when the controller cannot be reached.
UNREACHABLE_MESSAGES = (
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "zero bytes were transmitted or received",
    "communication connection failure",
    "unable to establish",
    "slurm_persist_conn_open",
)
# A refused submission's message (lower case) -> the fix.
SUBMIT_HINTS = (
    (
        "invalid partition",
        "check the partition (Resources(partition=...) or the connection's default); 'sinfo -s' lists them",
    ),
    (
        "requested node configuration is not available",
        "no node can satisfy the request; lower cpu/memory/gpu or choose a partition with larger nodes",
    ),
    (
        "partition configuration not available",
        "no node of the partition can satisfy the request; lower cpu/memory/gpu or choose another partition",
    ),
    ("invalid generic resource", "the cluster has no such GRES; check gpu/gpu_type against 'sinfo -o %G'"),
    ("invalid account", "set an account you belong to (Resources(account=...) or the connection's default)"),
    ("invalid qos", "set a QOS your association allows"),
    ("memory specification can not be satisfied", "lower Resources(memory=...)"),
    ("requested time limit is invalid", "lower Resources(time_limit=...) below the partition's MaxTime"),
    ("invalid feature specification", "check the constraint against 'sinfo -o %f'"),
)


@dataclass(frozen=True)
class ConnectionFields:
    """The fields of a connection record (an Airflow ``slurm`` connection): what
    :meth:`SlurmClient.connection_options` builds a backend's options from."""

    host: str = ""
    port: int | None = None
    login: str | None = None
    password: str | None = None
    schema: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def flag(value: Any, default: bool) -> bool:
    """A yes/no setting given as a bool or a string (``"true"``, ``"0"``, ...); empty is ``default``."""
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def submit_hint(message: str) -> str:
    """The fix for a refused submission, from what Slurm said."""
    low = message.lower()
    return next((hint for pattern, hint in SUBMIT_HINTS if pattern in low), "see the message above")


def run_sync(coro: Awaitable[T]) -> T:
    """Run a coroutine of this package from synchronous code (not from inside a running event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    raise RuntimeError("isthmus.slurm: run_sync() called inside an event loop; 'await' the coroutine instead")


class SlurmClient:
    """Base class of the backends. Build one with :func:`isthmus.slurm.backends.connect` (or :meth:`create`)."""

    kind: ClassVar[str] = "?"  # the backend's name in isthmus.slurm.backends.BACKENDS
    summary: ClassVar[str] = ""  # what it is, in a few words (error messages list the backends with it)
    takes_token: ClassVar[bool] = False  # accepts token= (a credential kept out of configs and records)

    @property
    def backend(self) -> str:
        """The backend's name (``kind``)."""
        return self.kind

    # -- backend interface -----------------------------------------------------------------------
    async def submit(self, spec: JobSpec) -> str:
        """Submit ``spec``; returns the job id. Raises :class:`SlurmSubmitError` if refused."""
        raise NotImplementedError

    async def status(self, job_id: str) -> JobStatus | None:
        """The job's state, or None when the cluster no longer (or never) knew it."""
        raise NotImplementedError

    async def cancel(self, job_id: str) -> None:
        """Cancel the job (no error if it already ended)."""
        raise NotImplementedError

    async def find(self, name: str) -> list[JobStatus]:
        """Jobs the controller still knows with this job name, newest first."""
        raise NotImplementedError

    async def read_file(self, path: str, max_bytes: int = LOG_TAIL_BYTES) -> str | None:
        """The last ``max_bytes`` of a file where the jobs run (None if it cannot be read)."""
        raise NotImplementedError

    async def make_dirs(self, path: str) -> None:
        """Create a directory on the cluster's filesystem (job logs go there)."""
        raise NotImplementedError

    async def write_file(self, path: str, text: str, mode: int = 0o600) -> None:
        """Write a file on the cluster's filesystem, readable by the job's user only (by default)."""
        raise NotImplementedError

    async def remove_file(self, path: str) -> None:
        """Remove a file on the cluster's filesystem (no error if it is gone)."""
        raise NotImplementedError

    async def ping(self) -> dict[str, Any]:
        """Check that the controller answers; returns what it said (version, partitions, ...)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections (SSH, HTTP)."""

    def describe(self) -> dict[str, Any]:
        """Backend and location, for logs and lineage (never credentials)."""
        return {"backend": self.kind}

    def serialize(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`create` that rebuild this client (may include a token: keep
        them out of logs; the Airflow trigger rebuilds clients from the connection id instead)."""
        raise NotImplementedError

    @classmethod
    def connection_options(cls, conn: ConnectionFields, where: str) -> dict[str, Any]:
        """Keyword arguments of this backend from a connection's fields; ``where`` names the connection
        in errors (:class:`~isthmus.slurm.errors.SlurmConfigError`)."""
        return {}

    # -- shared ----------------------------------------------------------------------------------
    async def _find_quietly(self, name: str) -> list[JobStatus]:
        """:meth:`find`, or no jobs when the cluster cannot be asked (a lookup on an error path)."""
        try:
            return await self.find(name)
        except SlurmError:
            return []

    async def logs(self, status: JobStatus, max_bytes: int = LOG_TAIL_BYTES) -> dict[str, str]:
        """The tails of the job's stdout and stderr (``{"stdout": ..., "stderr": ...}``; a stream
        that cannot be read is missing; stderr is not repeated when it goes to the stdout file)."""
        out: dict[str, str] = {}
        for stream in ("stdout", "stderr"):
            path = getattr(status, stream)
            if not path or (stream == "stderr" and path == status.stdout):
                continue
            path = path.replace("%j", status.job_id)
            text = await self.read_file(path, max_bytes)
            if text is not None:
                out[stream] = text
        return out

    async def wait(
        self,
        job_id: str,
        *,
        poll_interval: float = 2.0,
        timeout: float | None = None,
        on_change: Callable[[JobStatus], Any] | None = None,
        fallback: Callable[[str], Awaitable[JobStatus | None]] | None = None,
        gone_grace: float = 10.0,
    ) -> JobStatus:
        """Poll until the job is terminal; returns its final status.

        A job the controller no longer knows is resolved by ``fallback`` (e.g. the result manifest),
        after ``gone_grace`` seconds of not seeing it; without a result it ends ``LOST`` — never
        success. A requeued job is followed through PENDING/REQUEUED to its end.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last: str | None = None
        gone_since: float | None = None
        errors = 0
        while True:
            try:
                status = await self.status(job_id)
                errors = 0
            except SlurmUnavailable:
                errors += 1
                if errors >= 5:
                    raise
                log.warning("Slurm job %s: controller unreachable, retrying", job_id, exc_info=True)
                status = None
                await asyncio.sleep(poll_interval)
                continue
            if status is None:
                gone_since = gone_since or time.monotonic()
                found = await fallback(job_id) if fallback else None
                if found is not None:
                    status = found
                elif time.monotonic() - gone_since >= gone_grace:
                    status = JobStatus(
                        job_id=job_id,
                        state="LOST",
                        reason="the controller no longer knows the job and it left no result",
                        source="wait",
                    )
            else:
                gone_since = None
            if status is not None:
                hint = UNSATISFIABLE_REASONS.get(status.reason or "") if status.state == "PENDING" else None
                if hint:
                    await cancel_quietly(self, job_id)
                    raise SlurmSubmitError(
                        f"Slurm job {job_id} can never start ({status.reason}): {hint}; the job was cancelled"
                    )
                if status.state != last:
                    last = status.state
                    log.info("Slurm job %s: %s%s", job_id, status.state, f" ({status.reason})" if status.reason else "")
                    if on_change:
                        on_change(status)
                if status.terminal:
                    return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"Slurm job {job_id} still {last or 'unknown'} after {timeout:.0f}s")
            await asyncio.sleep(poll_interval)

    async def __aenter__(self) -> SlurmClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- construction ----------------------------------------------------------------------------
    @staticmethod
    def create(backend: str = DEFAULT_BACKEND, **options: Any) -> SlurmClient:
        """:func:`isthmus.slurm.backends.connect`: a client of ``backend`` built with ``options``."""
        return connect(backend, **options)


async def cancel_quietly(client: SlurmClient, job_id: str | None) -> None:
    """Cancel a job on a cleanup path; never raises."""
    if not job_id:
        return
    with contextlib.suppress(Exception):
        await client.cancel(job_id)


def write_local_file(path: str, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` created with ``mode`` from the start (never readable by others, not
    even for a moment), replacing any older file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)  # the umask may have taken bits away
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_local_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def read_local_tail(path: str, max_bytes: int = LOG_TAIL_BYTES) -> str | None:
    """The last ``max_bytes`` of a local file (None if it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return fh.read().decode(errors="replace")
    except OSError:
        return None


class LocalFilesMixin:
    """The file methods of a backend whose jobs share this machine's filesystem (job logs and job
    files are read and written here): put it before :class:`SlurmClient` in the bases."""

    async def read_file(self, path: str, max_bytes: int = LOG_TAIL_BYTES) -> str | None:
        return read_local_tail(path, max_bytes)

    async def make_dirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    async def write_file(self, path: str, text: str, mode: int = 0o600) -> None:
        write_local_file(path, text, mode)

    async def remove_file(self, path: str) -> None:
        remove_local_file(path)
