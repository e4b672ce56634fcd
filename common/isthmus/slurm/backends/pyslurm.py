"""The optional ``pyslurm`` backend: libslurm in this process, through pyslurm's object API.

pyslurm is a Cython binding compiled against one Slurm major release: pyslurm ``X.Y.*`` works with
Slurm ``X.Y`` only (its version is ``SLURM_MAJOR.PYSLURM_PATCH``, e.g. ``24.5.1`` for Slurm 24.05), so
it is never required. This backend is used only when pyslurm imports and its Slurm release matches the
controller's; on first use (``ping()``, or before the first submit/status/find/cancel) the two are
compared and a mismatch is an error that names both versions.

Targets the object API of pyslurm 23.2 to 25.11 (PySlurm/pyslurm on GitHub):

- ``pyslurm.JobSubmitDescription(**fields).submit()`` -> job id (``pyslurm/core/job/submission.pxd``
  for the field names, ``submission.pyx`` for ``submit``); a refusal raises ``pyslurm.RPCError``,
  pyslurm's own checks ``ValueError``;
- ``pyslurm.Job.load(job_id)`` (``RPCError`` with ``errno`` ``ESLURM_INVALID_JOB_ID`` for an unknown
  job), ``pyslurm.Job(job_id).cancel()`` (ignores an ended job), ``pyslurm.Jobs.load()`` (all jobs) —
  ``pyslurm/core/job/job.pyx``;
- ``pyslurm.RPCError(errno, msg)`` — ``pyslurm/core/error.pyx``;
- pyslurm's Slurm release: ``pyslurm.slurm_api_version()`` (the ``SLURM_VERSION_NUMBER`` it was
  compiled with; old API kept in ``pyslurm/deprecated.pyx``), else ``pyslurm.__version__``;
- the controller's: ``pyslurm.slurmctld.Config.load().version`` (25.x,
  ``pyslurm/core/slurmctld/config.pyx``), else the old API's ``pyslurm.config().get()["version"]``;
  partitions from ``pyslurm.Partitions.load()`` (``pyslurm/core/partition.pyx``).

libslurm calls block: each runs in a worker thread (``asyncio.to_thread``). Job logs and job files are
read and written on this machine, so the jobs need a filesystem shared with it (as with ``rest``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

from isthmus.redaction import is_secret_env
from isthmus.slurm.backends.base import (
    UNREACHABLE_MESSAGES,
    ConnectionFields,
    LocalFilesMixin,
    SlurmClient,
    submit_hint,
)
from isthmus.slurm.errors import SlurmConfigError, SlurmError, SlurmSubmitError, SlurmUnavailable
from isthmus.slurm.spec import JobSpec, format_time_limit, split_option
from isthmus.slurm.states import JobStatus, normalize_state

log = logging.getLogger("isthmus.slurm.pyslurm")
T = TypeVar("T")

# slurm_errno.h
ESLURM_INVALID_JOB_ID = 2017
ESLURM_ALREADY_DONE = 2021
SLURM_PROTOCOL_VERSION_ERROR = 1005
_UNREACHABLE_ERRNOS = frozenset({1001, 1002, 1003, 1004, 1013, 1800, 1801, 1802, 1803, *range(5000, 5006)})

_FIX = (
    "pyslurm builds only against its own Slurm major release: install the one of this cluster "
    "(pip install 'pyslurm==<major>.<minor>.*' — e.g. 24.5.* for Slurm 24.05, see 'sinfo --version' — "
    "with the Slurm headers and libslurm of that release, e.g. libslurm-dev), or use backend='cli' "
    "(sbatch/squeue/scontrol, locally or over SSH) or backend='rest' (slurmrestd)"
)

# sbatch options with a JobSubmitDescription attribute (submission.pxd): option -> (attribute, value),
# where the value is a constant (a flag) or the type its argument is converted to.
PYSLURM_OPTIONS: dict[str, tuple[str, Any]] = {
    "--exclusive": ("resource_sharing", "exclusive"),
    "--requeue": ("is_requeueable", True),
    "--no-requeue": ("is_requeueable", False),
    "--hold": ("priority", 0),  # pyslurm: priority 0 is sbatch's --hold
    "-H": ("priority", 0),
    "--nice": ("nice", int),
    "--reservation": ("reservations", str),
    "--comment": ("comment", str),
    "--nodelist": ("required_nodes", str),
    "--exclude": ("excluded_nodes", str),
    "--nodes": ("nodes", str),
    "--ntasks": ("ntasks", int),
    "--ntasks-per-node": ("ntasks_per_node", int),
    "--licenses": ("licenses", str),
    "--wckey": ("wckey", str),
    "--dependency": ("dependencies", str),
    "--begin": ("begin_time", str),
    "--time-min": ("time_limit_min", str),
    "--tmp": ("temporary_disk_per_node", str),
    "--open-mode": ("log_files_open_mode", str),
    "--mail-user": ("mail_user", str),
}

# JobSpec attribute -> JobSubmitDescription attribute, where the value carries over as it is.
_SPEC_FIELDS = (
    ("partition", "partitions"),
    ("account", "account"),
    ("qos", "qos"),
    ("cpus_per_task", "cpus_per_task"),
    ("mem_mb", "memory_per_node"),  # MiB, like --mem=<n>M
    ("constraint", "constraints"),
    ("work_dir", "working_directory"),
    ("stdout", "standard_output"),
    ("stderr", "standard_error"),
)


def description_fields(spec: JobSpec, base_env: Mapping[str, str]) -> dict[str, Any]:
    """``JobSubmitDescription`` keyword arguments for ``spec`` (all but ``script``), the same request
    as :meth:`JobSpec.sbatch_args`; ``environment`` is ``base_env`` plus the spec's env."""
    fields: dict[str, Any] = {"name": spec.name}
    for attr, field in _SPEC_FIELDS:
        value = getattr(spec, attr)
        if value:
            fields[field] = value
    if spec.gres:
        name, count = spec.gres.rsplit(":", 1)  # --gres=gpu[:type]:N
        fields["gres_per_node"] = {name: int(count)}
    if spec.time_limit:
        fields["time_limit"] = format_time_limit(spec.time_limit)
    fields["is_requeueable"] = spec.requeue
    fields["environment"] = {**base_env, **spec.env}
    for opt in spec.extra_options:
        name, value = split_option(opt)
        if name not in PYSLURM_OPTIONS:
            known = ", ".join(sorted(PYSLURM_OPTIONS))
            raise SlurmSubmitError(
                f"Slurm job {spec.name!r}: sbatch option {opt!r} has no pyslurm equivalent; use the 'cli' backend "
                f"for it, or one of: {known} (nothing was submitted)"
            )
        attr, kind = PYSLURM_OPTIONS[name]
        if kind in (int, str):
            if value is None:
                raise SlurmSubmitError(f"Slurm job {spec.name!r}: option {name} needs a value, e.g. {name}=VALUE")
            try:
                fields[attr] = kind(value)
            except ValueError:
                raise SlurmSubmitError(f"Slurm job {spec.name!r}: option {opt!r} needs a whole number") from None
        elif value is not None:
            raise SlurmSubmitError(f"Slurm job {spec.name!r}: option {name} takes no value (got {opt!r})")
        else:
            fields[attr] = kind
    return fields


def _major_minor(value: Any) -> tuple[int, int] | None:
    """(major, minor) of ``"24.05.3"``, ``"24.5.1"`` (pyslurm's own scheme) or ``(24, 5, 3)``."""
    if isinstance(value, (tuple, list)) and len(value) >= 2:
        try:
            return int(value[0]), int(value[1])
        except (TypeError, ValueError):
            return None
    m = re.match(r"\s*(\d+)\.(\d+)", str(value or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def _release(mm: tuple[int, int]) -> str:
    return f"{mm[0]}.{mm[1]:02d}"


def _opt(value: Any) -> str | None:
    return None if value in (None, "", "None", "(null)") else str(value)


def _gres(name: str, value: Any) -> str:
    """``gpu:a100:2`` from an entry of pyslurm's ``gres_per_node`` (``{"gpu:a100": 2}``, or
    ``{"count": 2, "indexes": ...}`` values; the name may keep Slurm's ``gres/`` prefix)."""
    count = value.get("count") if isinstance(value, dict) else value
    return f"{name.removeprefix('gres/')}:{count}"


def status_from_job(job: Any) -> JobStatus:
    """A :class:`JobStatus` from a ``pyslurm.Job``."""
    raw = job.state
    code, signal = job.exit_code, job.exit_code_signal
    limit = job.time_limit  # minutes
    gres = job.gres_per_node or {}
    return JobStatus(
        job_id=str(job.id),
        state=normalize_state(raw),
        raw_state=raw,
        name=_opt(job.name),
        reason=_opt(job.state_reason),
        exit_code=None if code is None else f"{code}:{signal or 0}",
        partition=_opt(job.partition),
        nodes=_opt(job.allocated_nodes),
        stdout=_opt(job.standard_output),
        stderr=_opt(job.standard_error),
        restarts=int(job.requeue_count or 0),
        time_limit=format_time_limit(limit * 60) if isinstance(limit, int) and limit > 0 else _opt(limit),
        tres=",".join(f"gres/{_gres(k, v)}" for k, v in gres.items()) or None,  # like TresPerNode
        source="pyslurm",
        extra={"batch_host": _opt(job.batch_host), "num_cpus": job.cpus},
    )


class PySlurmClient(LocalFilesMixin, SlurmClient):
    """libslurm through pyslurm, in this process (pyslurm must be built for the cluster's Slurm).

    ``job_env`` is the environment jobs start from (default: this process's, as ``sbatch`` exports
    it, minus variables holding credentials — slurmctld keeps a job's environment with the job; the
    executor hands credentials to jobs in a 0600 file instead); a job spec's ``env`` is added to it. libslurm finds the controller as Slurm's commands do
    (``SLURM_CONF`` when pyslurm is imported, else the default ``slurm.conf``).
    """

    kind = "pyslurm"
    summary = "libslurm where this process runs"

    def __init__(self, *, job_env: Mapping[str, str] | None = None) -> None:
        self.job_env = dict(job_env) if job_env is not None else None
        self._pyslurm = _import_pyslurm()
        self._lock = threading.Lock()
        self._checked = False
        self._slurm_version: str | None = None  # the controller's, once read

    # -- versions --------------------------------------------------------------------------------
    def library_version(self) -> tuple[int, int] | None:
        """The Slurm release pyslurm was built for."""
        api = getattr(self._pyslurm, "slurm_api_version", None)
        if callable(api):
            try:
                found = _major_minor(api())
            except Exception:  # an old API that fails: pyslurm's own version tells the same
                found = None
            if found:
                return found
        return _major_minor(getattr(self._pyslurm, "__version__", None))

    def _controller_version(self) -> str | None:
        """The controller's Slurm version (None when pyslurm offers no way to read it)."""
        ps = self._pyslurm
        config = getattr(getattr(ps, "slurmctld", None), "Config", None)
        old = getattr(ps, "config", None)
        try:
            if config is not None and hasattr(config, "load"):
                version = getattr(config.load(), "version", None)  # 23.x/24.x: Config has no version
                if version:
                    return str(version)
            if callable(old):  # the old API raises ValueError((message, errno))
                return _opt((old().get() or {}).get("version"))
        except (ps.RPCError, ValueError) as exc:
            error = self._error("reading the controller's configuration", exc)
            if isinstance(error, SlurmUnavailable) or getattr(exc, "errno", None) == SLURM_PROTOCOL_VERSION_ERROR:
                raise error from None
            log.debug("pyslurm could not read the controller's configuration: %s", error)
        return None

    def _ready(self) -> None:
        """Check once that pyslurm's Slurm release is the controller's (in a worker thread)."""
        with self._lock:
            if self._checked:
                return
            lib = self.library_version()
            if lib is None:
                raise SlurmError(
                    f"cannot tell which Slurm release pyslurm {getattr(self._pyslurm, '__version__', '?')} was "
                    f"built for (no slurm_api_version(), no X.Y version); {_FIX}"
                )
            text = self._controller_version()
            ctl = _major_minor(text)
            if ctl is None:
                log.debug(
                    "pyslurm cannot read the Slurm controller's version (got %r); using pyslurm's own Slurm %s "
                    "without comparing it",
                    text,
                    _release(lib),
                )
            elif ctl != lib:
                raise SlurmError(
                    f"pyslurm {getattr(self._pyslurm, '__version__', '?')} is built for Slurm {_release(lib)} but "
                    f"the controller runs Slurm {text}: this cluster needs pyslurm=={ctl[0]}.{ctl[1]}.*; {_FIX}"
                )
            else:
                self._slurm_version = text
            self._checked = True

    # -- calling libslurm ------------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            self._ready()
            return fn(*args)

        return await asyncio.to_thread(run)

    def _error(self, what: str, exc: BaseException) -> SlurmError:
        errno = getattr(exc, "errno", None)
        msg = str(getattr(exc, "msg", None) or exc)
        if errno in _UNREACHABLE_ERRNOS or any(s in msg.lower() for s in UNREACHABLE_MESSAGES):
            return SlurmUnavailable(
                f"{what}: the Slurm controller is unreachable through pyslurm ({msg}); check that slurmctld "
                "runs and that SLURM_CONF (when pyslurm was imported) points at it"
            )
        if errno == SLURM_PROTOCOL_VERSION_ERROR:
            lib = self.library_version()
            return SlurmError(
                f"{what}: the controller refused pyslurm's protocol ({msg}): pyslurm "
                f"{getattr(self._pyslurm, '__version__', '?')} is built for Slurm {_release(lib) if lib else '?'}, "
                f"not the controller's release; {_FIX}"
            )
        return SlurmError(f"{what} failed: {msg}{f' (Slurm error {errno})' if errno else ''}")

    # -- interface -------------------------------------------------------------------------------
    async def submit(self, spec: JobSpec) -> str:
        base = self.job_env
        if base is None:  # this process's environment, as sbatch exports it, without its credentials
            base = {k: v for k, v in os.environ.items() if not is_secret_env(k, v)}
        fields = description_fields(spec, base)
        return str(await self._call(self._submit, spec, fields))  # submit() returns the job id, or raises

    def _submit(self, spec: JobSpec, fields: dict[str, Any]) -> Any:
        ps = self._pyslurm
        # The script goes in a file: pyslurm's Path(script).is_file() raises "File name too long"
        # for a script body longer than PATH_MAX (Python < 3.14); pyslurm reads the file and
        # submits its text, so the file is needed only here.
        fd, path = tempfile.mkstemp(prefix="isthmus-", suffix=".sbatch")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(spec.full_script())
            try:
                return ps.JobSubmitDescription(script=path, **fields).submit()
            except ps.RPCError as exc:
                error = self._error(f"submitting job {spec.name!r}", exc)
                if isinstance(error, SlurmUnavailable) or getattr(exc, "errno", None) == SLURM_PROTOCOL_VERSION_ERROR:
                    raise error from None
                self._refuse(spec, str(getattr(exc, "msg", None) or exc))
            except (ValueError, TypeError) as exc:  # pyslurm's own checks, before anything is sent
                self._refuse(spec, f"pyslurm: {exc}")
        finally:
            os.unlink(path)

    @staticmethod
    def _refuse(spec: JobSpec, msg: str) -> NoReturn:
        hint = submit_hint(msg)
        raise SlurmSubmitError(f"Slurm refused job {spec.name!r} ({spec.to_dict()}): {msg}; {hint}")

    async def status(self, job_id: str) -> JobStatus | None:
        return await self._call(self._status, str(job_id))

    def _status(self, job_id: str) -> JobStatus | None:
        ps = self._pyslurm
        try:
            job = ps.Job.load(int(job_id))
        except ps.RPCError as exc:
            if getattr(exc, "errno", None) == ESLURM_INVALID_JOB_ID or "invalid job id" in str(exc).lower():
                return None
            raise self._error(f"loading job {job_id}", exc) from None
        return status_from_job(job)

    async def cancel(self, job_id: str) -> None:
        await self._call(self._cancel, str(job_id))

    def _cancel(self, job_id: str) -> None:
        ps = self._pyslurm
        try:
            ps.Job(int(job_id)).cancel()
        except ps.RPCError as exc:
            low = str(exc).lower()
            if getattr(exc, "errno", None) in (ESLURM_INVALID_JOB_ID, ESLURM_ALREADY_DONE) or (
                "invalid job id" in low or "already completing or completed" in low
            ):
                return
            raise self._error(f"cancelling job {job_id}", exc) from None

    async def find(self, name: str) -> list[JobStatus]:
        return await self._call(self._find, name)

    def _find(self, name: str) -> list[JobStatus]:
        ps = self._pyslurm
        try:
            jobs = ps.Jobs.load()
        except ps.RPCError as exc:
            raise self._error("listing jobs", exc) from None
        found = [status_from_job(job) for job in jobs.values() if job.name == name]
        return sorted(found, key=lambda s: int(s.job_id), reverse=True)

    async def ping(self) -> dict[str, Any]:
        return await self._call(self._ping)

    def _ping(self) -> dict[str, Any]:
        ps = self._pyslurm
        lib = self.library_version()
        partitions: list[str] = []
        loader = getattr(ps, "Partitions", None)
        try:
            if loader is not None:
                partitions = sorted(str(p.name) for p in loader.load().values())
            else:
                ps.Jobs.load()  # any RPC tells whether the controller answers
        except ps.RPCError as exc:
            error = self._error("pinging the Slurm controller", exc)
            raise (error if isinstance(error, SlurmUnavailable) else SlurmUnavailable(str(error))) from None
        return {
            "ping": "UP",
            "partitions": partitions,
            "slurm": self._slurm_version,
            "pyslurm": getattr(ps, "__version__", None),
            "library_slurm": _release(lib) if lib else None,
        }

    @classmethod
    def connection_options(cls, conn: ConnectionFields, where: str) -> dict[str, Any]:
        """None: libslurm in this process finds the controller through SLURM_CONF."""
        if conn.extra.get("slurm_conf"):
            raise SlurmConfigError(
                f"{where}: extra.slurm_conf does not apply to the pyslurm backend "
                "(libslurm reads SLURM_CONF when pyslurm is imported); set SLURM_CONF for the worker instead"
            )
        return {}

    def describe(self) -> dict[str, Any]:
        lib = self.library_version()
        return {
            "backend": self.kind,
            "slurm_version": self._slurm_version or (_release(lib) if lib else None),
            "pyslurm": getattr(self._pyslurm, "__version__", None),
        }

    def serialize(self) -> dict[str, Any]:
        return {} if self.job_env is None else {"job_env": self.job_env}


def _import_pyslurm() -> Any:
    try:
        import pyslurm
    except ImportError as exc:  # not installed, or its libslurm.so is not this machine's
        raise SlurmError(f"backend 'pyslurm': importing pyslurm failed ({type(exc).__name__}: {exc}); {_FIX}") from None
    missing = [n for n in ("JobSubmitDescription", "Job", "Jobs", "RPCError") if not hasattr(pyslurm, n)]
    if missing:
        raise SlurmError(
            f"backend 'pyslurm': pyslurm {getattr(pyslurm, '__version__', '?')} lacks {', '.join(missing)} (the "
            f"object API of pyslurm 23.2 and later); {_FIX}"
        )
    return pyslurm
