"""The ``cli`` backend: Slurm's commands, run locally or on a login node over SSH (asyncssh)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
from typing import Any

from isthmus.slurm.backends.base import (
    LOG_TAIL_BYTES,
    UNREACHABLE_MESSAGES,
    ConnectionFields,
    SlurmClient,
    flag,
    log,
    read_local_tail,
    remove_local_file,
    submit_hint,
    write_local_file,
)
from isthmus.slurm.errors import SlurmError, SlurmParseError, SlurmSubmitError, SlurmUnavailable
from isthmus.slurm.spec import JobSpec
from isthmus.slurm.states import JobStatus, normalize_state

_UNKNOWN_JOB = ("invalid job id", "not found", "job has been purged")
_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")
_SQUEUE_FMT = "%i|%j|%T|%r|%P|%N"


def parse_scontrol(line: str) -> dict[str, str]:
    """``Key=Value`` pairs of one ``scontrol show job -o`` line (values may contain spaces)."""
    out: dict[str, str] = {}
    matches = list(_KEY.finditer(line))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        out[m.group(1)] = line[m.end() : end].strip()
    return out


def _status_from_scontrol(fields: dict[str, str], job_id: str) -> JobStatus:
    def opt(key: str) -> str | None:
        value = fields.get(key)
        return None if value in (None, "", "(null)", "None") else value

    try:
        restarts = int(fields.get("Restarts", "0") or 0)
    except ValueError:
        restarts = 0
    return JobStatus(
        job_id=fields.get("JobId", job_id),
        state=normalize_state(fields["JobState"]),
        raw_state=fields["JobState"],
        name=opt("JobName"),
        reason=opt("Reason"),
        exit_code=opt("ExitCode"),
        partition=opt("Partition"),
        nodes=opt("NodeList"),
        stdout=opt("StdOut"),
        stderr=opt("StdErr"),
        restarts=restarts,
        time_limit=opt("TimeLimit"),
        tres=opt("TRES") or opt("TresPerNode"),
        source="scontrol",
        extra={"tres_per_node": opt("TresPerNode"), "num_cpus": opt("NumCPUs"), "batch_host": opt("BatchHost")},
    )


class CliSlurmClient(SlurmClient):
    """Slurm commands run here (``host=None``) or on ``host`` over SSH.

    SSH: ``user``, ``port``, ``key_file`` (else the agent / default keys), ``known_hosts`` (a path;
    default ``~/.ssh/known_hosts``); ``verify_host_key=False`` turns host key checking off (say so
    only for throwaway test hosts). ``env`` is added to the environment of local commands (e.g.
    ``SLURM_CONF``); ``bin_dir`` is where the Slurm commands live if not on PATH.
    """

    kind = "cli"
    summary = "sbatch/squeue over a shell"

    def __init__(
        self,
        host: str | None = None,
        *,
        user: str | None = None,
        port: int = 22,
        key_file: str | None = None,
        known_hosts: str | None = None,
        verify_host_key: bool = True,
        env: dict[str, str] | None = None,
        bin_dir: str | None = None,
        timeout: float = 60.0,
        accounting: bool | None = None,
    ) -> None:
        self.host = host or None
        self.user = user
        self.port = int(port or 22)
        self.key_file = key_file
        self.known_hosts = known_hosts
        self.verify_host_key = verify_host_key
        self.env = dict(env or {})
        self.bin_dir = bin_dir
        self.timeout = timeout
        self._accounting = accounting  # None: find out on first need
        self._ssh: dict[int, Any] = {}  # one SSH connection per event loop

    @classmethod
    def connection_options(cls, conn: ConnectionFields, where: str) -> dict[str, Any]:
        """``host`` empty runs the Slurm commands here; otherwise over SSH as ``login`` with
        ``extra.key_file`` (or the agent), ``port``, ``extra.known_hosts`` (``extra.verify_host_key: false``
        only for throwaway hosts); ``extra.slurm_conf`` sets SLURM_CONF for local commands;
        ``extra.timeout`` (seconds, default 60)."""
        extra = conn.extra
        return {
            "host": conn.host or None,
            "user": conn.login or None,
            "port": int(conn.port or 22),
            "key_file": extra.get("key_file"),
            "known_hosts": extra.get("known_hosts"),
            "verify_host_key": flag(extra.get("verify_host_key"), True),
            "env": {"SLURM_CONF": extra["slurm_conf"]} if extra.get("slurm_conf") else {},
            "timeout": float(extra.get("timeout") or 60),
        }

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "host": self.host or "local", "user": self.user}

    def serialize(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "user": self.user,
            "port": self.port,
            "key_file": self.key_file,
            "known_hosts": self.known_hosts,
            "verify_host_key": self.verify_host_key,
            "env": self.env,
            "bin_dir": self.bin_dir,
            "timeout": self.timeout,
            "accounting": self._accounting,
        }

    # -- running commands ------------------------------------------------------------------------
    def _cmd(self, args: list[str]) -> list[str]:
        if self.bin_dir:
            return [os.path.join(self.bin_dir, args[0]), *args[1:]]
        return args

    async def _connection(self) -> Any:
        loop_id = id(asyncio.get_running_loop())
        conn = self._ssh.get(loop_id)
        if conn is not None:
            return conn
        try:
            import asyncssh
        except ImportError as exc:  # pragma: no cover - the slurm extra installs it
            raise SlurmError("SSH needs asyncssh: pip install 'isthmus[slurm]'") from exc
        options: dict[str, Any] = {"port": self.port}
        if self.user:
            options["username"] = self.user
        if self.key_file:
            options["client_keys"] = [os.path.expanduser(self.key_file)]
        if not self.verify_host_key:
            options["known_hosts"] = None
        elif self.known_hosts:
            options["known_hosts"] = os.path.expanduser(self.known_hosts)
        try:
            conn = await asyncio.wait_for(asyncssh.connect(self.host, **options), timeout=self.timeout)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise SlurmUnavailable(
                f"SSH host key of {self.host} is not trusted ({exc}); add it to known_hosts "
                "(ssh-keyscan) or point known_hosts= at a file that has it"
            ) from None
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
            raise SlurmUnavailable(
                f"cannot reach Slurm login node {self.user + '@' if self.user else ''}{self.host}:{self.port} over SSH: "
                f"{type(exc).__name__}: {exc}; check host, user and key"
            ) from None
        self._ssh[loop_id] = conn
        return conn

    async def _run(self, args: list[str], *, stdin: str | None = None) -> tuple[int, str, str]:
        cmd = self._cmd(args)
        if self.host:
            conn = await self._connection()
            try:
                result = await conn.run(shlex.join(cmd), input=stdin, check=False, timeout=self.timeout)
            except Exception as exc:
                self._ssh.pop(id(asyncio.get_running_loop()), None)
                raise SlurmUnavailable(
                    f"'{cmd[0]}' over SSH on {self.host} failed: {type(exc).__name__}: {exc}"
                ) from None
            rc = result.exit_status if result.exit_status is not None else 255
            return rc, str(result.stdout or ""), str(result.stderr or "")
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **self.env},
            )
        except FileNotFoundError:
            raise SlurmUnavailable(
                f"'{cmd[0]}' not found; install the Slurm client commands (Debian: slurm-client) or set bin_dir"
            ) from None
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), timeout=self.timeout
            )
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise SlurmUnavailable(f"'{shlex.join(cmd)}' did not answer within {self.timeout:.0f}s") from None
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    @staticmethod
    def _unreachable(text: str) -> bool:
        low = text.lower()
        return any(s in low for s in UNREACHABLE_MESSAGES)

    def _fail(self, what: str, rc: int, err: str) -> SlurmError:
        msg = err.strip() or f"exit code {rc}"
        if self._unreachable(msg):
            return SlurmUnavailable(
                f"{what}: the Slurm controller is unreachable ({msg}); check that slurmctld runs and "
                f"SLURM_CONF{' on ' + self.host if self.host else ''} points at it"
            )
        return SlurmError(f"{what} failed: {msg}")

    # -- interface -------------------------------------------------------------------------------
    async def submit(self, spec: JobSpec) -> str:
        args = ["sbatch", "--parsable", *spec.sbatch_args()]
        rc, out, err = await self._run(args, stdin=spec.full_script())
        if rc != 0:
            msg = err.strip() or out.strip() or f"exit code {rc}"
            if self._unreachable(msg):
                raise self._fail(f"sbatch for job {spec.name!r}", rc, msg)
            hint = submit_hint(msg)
            raise SlurmSubmitError(f"Slurm refused job {spec.name!r} ({spec.to_dict()}): {msg}; {hint}")
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        m = re.fullmatch(r"(\d+)(?:;\S+)?", lines[-1]) if lines else None
        if not m:
            # It may have been submitted all the same: leave nothing behind.
            for job in await self._find_quietly(spec.name):
                await self.cancel(job.job_id)
            raise SlurmParseError(
                f"sbatch --parsable printed {out.strip()[:200]!r} for job {spec.name!r}, not a job id; "
                "any job it made was cancelled. Check that 'sbatch' is Slurm's and prints nothing else "
                "(e.g. no output from shell start-up files on the login node)"
            )
        return m.group(1)

    async def status(self, job_id: str) -> JobStatus | None:
        job_id = str(job_id)
        rc, out, err = await self._run(["scontrol", "show", "job", "-o", job_id])
        if rc == 0:
            line = next((ln for ln in out.splitlines() if ln.startswith("JobId=")), "")
            fields = parse_scontrol(line)
            if "JobState" in fields:
                return _status_from_scontrol(fields, job_id)
            log.warning("scontrol show job %s printed %r; trying squeue", job_id, out[:200])
            return await self._squeue_status(job_id, scontrol_output=out)
        low = (err or out).lower()
        if self._unreachable(low):
            raise self._fail(f"scontrol show job {job_id}", rc, err)
        if any(s in low for s in _UNKNOWN_JOB):
            return await self._sacct_status(job_id)
        raise self._fail(f"scontrol show job {job_id}", rc, err)

    async def _squeue_status(self, job_id: str, scontrol_output: str = "") -> JobStatus | None:
        rc, out, err = await self._run(["squeue", "-h", "-j", job_id, "--states=all", "-o", _SQUEUE_FMT])
        if rc != 0:
            if any(s in (err or "").lower() for s in _UNKNOWN_JOB):
                return None
            raise self._fail(f"squeue -j {job_id}", rc, err)
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 6 and parts[0] == job_id:
                return JobStatus(
                    job_id=job_id,
                    state=normalize_state(parts[2]),
                    raw_state=parts[2],
                    name=parts[1] or None,
                    reason=None if parts[3] in ("None", "") else parts[3],
                    partition=parts[4] or None,
                    nodes=parts[5] or None,
                    source="squeue",
                )
        if out.strip():
            raise SlurmParseError(
                f"could not read the state of job {job_id}: scontrol printed {scontrol_output.strip()[:200]!r} "
                f"and squeue printed {out.strip()[:200]!r}"
            )
        return None

    async def accounting(self) -> bool:
        """Whether ``sacct`` works on this cluster (it fails without slurmdbd)."""
        if self._accounting is None:
            rc, out, err = await self._run(["sacct", "-n", "-X", "-j", "1", "-o", "JobID"])
            self._accounting = rc == 0
            if rc != 0:
                log.info(
                    "Slurm accounting unavailable (%s); job states come from scontrol/squeue and the manifest",
                    err.strip(),
                )
        return self._accounting

    async def _sacct_status(self, job_id: str) -> JobStatus | None:
        if not await self.accounting():
            return None
        rc, out, err = await self._run(
            [
                "sacct",
                "-n",
                "-X",
                "-P",
                "-j",
                job_id,
                "-o",
                "JobID,JobName,State,ExitCode,Partition,NodeList,Timelimit,AllocTRES",
            ]
        )
        if rc != 0:
            if self._unreachable(err):
                raise self._fail(f"sacct -j {job_id}", rc, err)
            return None
        rows = [ln.split("|") for ln in out.splitlines() if ln.strip()]
        rows = [r for r in rows if r and r[0] == job_id]
        if not rows:
            return None
        r = rows[-1]
        if len(r) < 8:
            raise SlurmParseError(f"sacct -j {job_id} printed {out.strip()[:200]!r}, not 8 '|'-separated fields")
        return JobStatus(
            job_id=job_id,
            state=normalize_state(r[2]),
            raw_state=r[2],
            name=r[1] or None,
            exit_code=r[3] or None,
            partition=r[4] or None,
            nodes=r[5] or None,
            time_limit=r[6] or None,
            tres=r[7] or None,
            source="sacct",
        )

    async def cancel(self, job_id: str) -> None:
        rc, out, err = await self._run(["scancel", str(job_id)])
        if rc != 0:
            low = err.lower()
            if any(s in low for s in _UNKNOWN_JOB) or "already completing or completed" in low:
                return
            raise self._fail(f"scancel {job_id}", rc, err)

    async def find(self, name: str) -> list[JobStatus]:
        rc, out, err = await self._run(["squeue", "-h", f"--name={name}", "--states=all", "-o", _SQUEUE_FMT])
        if rc != 0:
            raise self._fail(f"squeue --name={name}", rc, err)
        found = []
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 6 or not parts[0].isdigit():
                if line.strip():
                    raise SlurmParseError(f"squeue printed {line.strip()[:200]!r}, not '{_SQUEUE_FMT}'")
                continue
            if parts[1] != name:
                continue
            found.append(
                JobStatus(
                    job_id=parts[0],
                    state=normalize_state(parts[2]),
                    raw_state=parts[2],
                    name=parts[1],
                    reason=None if parts[3] in ("None", "") else parts[3],
                    partition=parts[4] or None,
                    nodes=parts[5] or None,
                    source="squeue",
                )
            )
        return sorted(found, key=lambda s: int(s.job_id), reverse=True)

    async def read_file(self, path: str, max_bytes: int = LOG_TAIL_BYTES) -> str | None:
        if self.host:
            rc, out, _ = await self._run(["tail", "-c", str(max_bytes), path])
            return out if rc == 0 else None
        return read_local_tail(path, max_bytes)

    async def make_dirs(self, path: str) -> None:
        if self.host:
            rc, _, err = await self._run(["mkdir", "-p", path])
            if rc != 0:
                raise SlurmError(f"mkdir -p {path} on {self.host} failed: {err.strip()}")
            return
        os.makedirs(path, exist_ok=True)

    async def write_file(self, path: str, text: str, mode: int = 0o600) -> None:
        if not self.host:
            write_local_file(path, text, mode)
            return
        # umask first, so the file is never readable by others on the login node.
        script = f'umask 077 && cat > "$1.tmp" && chmod {mode:o} "$1.tmp" && mv -f "$1.tmp" "$1"'
        rc, _, err = await self._run(["sh", "-c", script, "sh", path], stdin=text)
        if rc != 0:
            raise SlurmError(f"writing {path} on {self.host} failed: {err.strip() or rc}")

    async def remove_file(self, path: str) -> None:
        if not self.host:
            remove_local_file(path)
            return
        rc, _, err = await self._run(["rm", "-f", path])
        if rc != 0:
            raise SlurmError(f"rm -f {path} on {self.host} failed: {err.strip() or rc}")

    async def ping(self) -> dict[str, Any]:
        rc, out, err = await self._run(["scontrol", "ping"])
        if rc != 0 or "UP" not in out:
            raise SlurmUnavailable(
                f"the Slurm controller is not answering ('scontrol ping': {(out + err).strip() or rc}); "
                f"check slurmctld and SLURM_CONF{' on ' + self.host if self.host else ''}"
            )
        rc, parts, err = await self._run(["sinfo", "-h", "-o", "%R"])
        return {"ping": out.strip(), "partitions": sorted(set(parts.split())) if rc == 0 else []}

    async def close(self) -> None:
        conns, self._ssh = self._ssh, {}
        for conn in conns.values():
            with contextlib.suppress(Exception):
                conn.close()
