"""A real single-node Slurm cluster for tests: munged, slurmctld, slurmd and slurmrestd from Debian.

``start_cluster()`` returns ``(cluster, None)`` or ``(None, reason)``:

1. the Debian packages (``munge slurmctld slurmd slurm-client slurmrestd slurm-wlm-jwt-plugin``) are
   installed when missing — only as root (``.ci/run`` installs them beforehand);
2. everything lives in a fresh temp directory: a private munge key and socket, ``slurm.conf`` and
   ``gres.conf`` (two fake GPUs), state, spool, logs; free TCP ports; ``SLURM_CONF`` points there, so a
   system Slurm (if any) is never touched;
3. ``munged``, ``slurmctld -i`` and ``slurmd`` run in the foreground as children of this process; the
   node must report ``idle`` to ``sinfo`` within a timeout;
4. ``slurmrestd`` listens on a unix socket (``rest_auth/local``, openapi/v0.0.38, with
   ``SLURMRESTD_SECURITY=disable_user_check`` because tests run as root) and on a loopback TCP port
   with JWT auth (``auth/jwt`` is an alternative auth type of the cluster; tokens from ``scontrol token``).

``cluster.stop()`` (also registered with ``atexit``) cancels the jobs left on this private cluster and
stops only the daemons it started. Run ``python -m tests.slurm.cluster`` for a cluster to play with.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ["munge", "slurmctld", "slurmd", "slurm-client", "slurmrestd", "slurm-wlm-jwt-plugin"]
BINARIES = {
    "munged": "/usr/sbin/munged",
    "slurmctld": "/usr/sbin/slurmctld",
    "slurmd": "/usr/sbin/slurmd",
    "slurmrestd": "/usr/sbin/slurmrestd",
    "sbatch": "/usr/bin/sbatch",
}
JWT_PLUGIN = "/usr/lib/x86_64-linux-gnu/slurm-wlm/auth_jwt.so"
START_TIMEOUT = 60
NODE_CPUS = 8  # more than the machine has (config_overrides): several test jobs run side by side
NODE_MEMORY_MB = 8000
PARTITIONS = ("debug", "gpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing() -> list[str]:
    missing = [name for name, path in BINARIES.items() if not os.path.exists(path)]
    if not os.path.exists(JWT_PLUGIN):
        missing.append("auth_jwt.so")
    return missing


def _install_packages() -> str | None:
    """Install the Debian packages (root only); None when done, else the reason it could not be."""
    if os.geteuid() != 0:
        return f"Slurm is not installed ({', '.join(_missing())} missing) and installing needs root: apt-get install {' '.join(PACKAGES)}"
    if not shutil.which("apt-get"):
        return "Slurm is not installed and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    print(f"tests/slurm: {' '.join(cmd)}", file=sys.stderr)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:  # stale package lists: update once and retry
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, timeout=900)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return f"apt-get install {' '.join(PACKAGES)} failed: {proc.stderr[-2000:]}"
    return None


@dataclass
class SlurmCluster:
    """A running private cluster. ``env`` holds ``SLURM_CONF``; ``rest_socket`` and ``rest_url`` reach
    slurmrestd (unix socket with local auth; loopback HTTP with JWT)."""

    base: Path
    conf: Path
    rest_socket: Path
    rest_url: str
    partitions: tuple[str, ...] = PARTITIONS
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _stopped: bool = False
    _watchdog: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command against this cluster."""
        proc = subprocess.run(
            list(cmd), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def token(self, lifespan: int = 3600) -> str:
        """A JWT for the current user (``scontrol token``)."""
        out = self.run("scontrol", "token", f"lifespan={lifespan}").stdout.strip()
        return out.split("=", 1)[1]

    def jobs(self) -> list[str]:
        """Ids of the jobs this cluster still knows (any state)."""
        out = self.run("squeue", "-h", "-o", "%i", "--states=all", check=False).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def active_jobs(self, wait_for_ending: float = 0.0) -> list[str]:
        """Ids of the jobs still queued or running. A job already ending (state COMPLETING: cancelled or
        exited, its node still cleaning up) counts only if it has not left within ``wait_for_ending``
        seconds."""
        deadline = time.monotonic() + wait_for_ending
        while True:
            out = self.run("squeue", "-h", "-o", "%i %t", check=False).stdout
            states = dict(line.split() for line in out.splitlines() if len(line.split()) == 2)
            ending_only = states and set(states.values()) == {"CG"}
            if not ending_only or time.monotonic() >= deadline:
                return list(states)
            time.sleep(0.2)

    def log(self, daemon: str, tail: int = 40) -> str:
        path = self.base / f"{daemon}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-tail:])

    def stop(self) -> None:
        """Cancel the jobs left on this cluster, then stop the daemons this object started."""
        if self._stopped:
            return
        self._stopped = True
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                self.run("scancel", "--full", "-u", str(os.getuid()), check=False, timeout=10)
        for name in ("slurmrestd-jwt", "slurmrestd", "slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        shutil.rmtree(self.base, ignore_errors=True)
        if self._watchdog is not None:  # nothing left for it to do (a forked child may hold its pipe open)
            self._watchdog.kill()
            self._watchdog.wait(timeout=10)

    def start_watchdog(self) -> None:
        """A helper process that stops this cluster's daemons if the test process dies without
        stopping them (killed by a timeout, SIGKILL): it waits for its stdin pipe to close."""
        pids = [str(p.pid) for p in self.procs.values()]
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.base), *pids],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )


_WATCHDOG = """
import os, shutil, signal, sys, time
sys.stdin.buffer.read()  # returns when the test process is gone (or stop() closed the pipe)
base, pids = sys.argv[1], [int(p) for p in sys.argv[2:]]
def ours(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return base.encode() in fh.read()
    except OSError:
        return False
alive = [p for p in pids if ours(p)]
for p in alive:
    try: os.kill(p, signal.SIGTERM)
    except OSError: pass
deadline = time.monotonic() + 15
while time.monotonic() < deadline and any(ours(p) for p in alive):
    time.sleep(0.2)
for p in alive:
    if ours(p):
        try: os.kill(p, signal.SIGKILL)
        except OSError: pass
if alive:
    shutil.rmtree(base, ignore_errors=True)
"""


def _write_config(base: Path) -> tuple[Path, dict[str, int]]:
    ports = {"ctld": _free_port(), "slurmd": _free_port(), "rest": _free_port()}
    for sub in ("state", "spool", "jobs"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    conf = base / "slurm.conf"
    conf.write_text(
        f"""\
# single-node test cluster written by tests/slurm/cluster.py
ClusterName=isthmus-test
SlurmctldHost=localhost
SlurmctldPort={ports["ctld"]}
SlurmdPort={ports["slurmd"]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={base}/munge.sock
CredType=cred/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key={base}/jwt.key
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={base}/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
KillWait=2
MinJobAge=600
InactiveLimit=0
DefMemPerCPU=100
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
"""
    )
    # Two fake GPUs, one device file per line (a bare Count= does not give devices in 22.05).
    (base / "gres.conf").write_text("AutoDetect=off\nName=gpu File=/dev/null\nName=gpu File=/dev/zero\n")
    (base / "jwt.key").write_bytes(os.urandom(32))
    (base / "jwt.key").chmod(0o600)
    (base / "munge.key").write_bytes(os.urandom(1024))
    (base / "munge.key").chmod(0o600)
    return conf, ports


def _wait(what: str, check, timeout: float, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode} while waiting for {what}:\n{cluster.log(name)}"
                )
        if check():
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise RuntimeError(
        f"timed out after {timeout:.0f}s waiting for {what}\nslurmctld.log:\n{cluster.log('slurmctld')}\n"
        f"slurmd.log:\n{cluster.log('slurmd')}"
    )


def _spawn(cluster: SlurmCluster, name: str, cmd: list[str], env: dict[str, str]) -> None:
    log = open(cluster.base / f"{name}.out", "ab")  # noqa: SIM115 - the daemon owns it
    cluster.procs[name] = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    log.close()


def start_cluster() -> tuple[SlurmCluster | None, str | None]:
    """Start a private single-node cluster: ``(cluster, None)`` or ``(None, reason)``."""
    if sys.platform != "linux":
        return None, "a real Slurm needs Linux"
    if _missing():
        reason = _install_packages()
        if reason:
            return None, reason
        if _missing():
            return None, f"still missing after install: {', '.join(_missing())}"
    if os.geteuid() != 0:
        return None, "the test cluster runs slurmd as root (jobs of any user); run the Slurm tests as root"
    base = Path(tempfile.mkdtemp(prefix="isthmus-slurm-"))
    base.chmod(0o755)  # jobs and slurmd read from here
    conf, ports = _write_config(base)
    cluster = SlurmCluster(
        base=base, conf=conf, rest_socket=base / "rest.sock", rest_url=f"http://127.0.0.1:{ports['rest']}"
    )
    atexit.register(cluster.stop)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        _spawn(
            cluster,
            "munged",
            [
                BINARIES["munged"],
                "--foreground",
                "--force",
                f"--socket={base}/munge.sock",
                f"--key-file={base}/munge.key",
                f"--pid-file={base}/munged.pid",
                f"--log-file={base}/munged.log",
                f"--seed-file={base}/munged.seed",
            ],
            env,
        )
        _wait("munged", lambda: (base / "munge.sock").exists(), 20, cluster)
        _spawn(cluster, "slurmctld", [BINARIES["slurmctld"], "-D", "-i", "-f", str(conf)], env)
        _spawn(cluster, "slurmd", [BINARIES["slurmd"], "-D", "-N", "localhost", "-f", str(conf)], env)

        def idle() -> bool:
            out = cluster.run("sinfo", "-h", "-o", "%T", "-n", "localhost", check=False, timeout=10).stdout
            return out.strip().splitlines()[:1] == ["idle"]

        _wait("the node to be idle in sinfo", idle, START_TIMEOUT, cluster)
        rest_env = {**env, "SLURMRESTD_SECURITY": "disable_user_check"}
        # SLURM_JWT=daemon: slurmrestd authenticates its threads with auth/jwt (else with munge, which
        # rejects every token: "Rejecting thread config token").
        jwt_env = {**rest_env, "SLURM_JWT": "daemon"}
        _spawn(
            cluster,
            "slurmrestd",
            [
                BINARIES["slurmrestd"],
                "-f",
                str(conf),
                "-a",
                "rest_auth/local",
                "-s",
                "openapi/v0.0.38",
                f"unix:{cluster.rest_socket}",
            ],
            rest_env,
        )
        _spawn(
            cluster,
            "slurmrestd-jwt",
            [
                BINARIES["slurmrestd"],
                "-f",
                str(conf),
                "-a",
                "rest_auth/jwt",
                "-s",
                "openapi/v0.0.38",
                f"127.0.0.1:{ports['rest']}",
            ],
            jwt_env,
        )

        def rest_up() -> bool:
            if not cluster.rest_socket.exists():
                return False
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", ports["rest"])) == 0

        _wait("slurmrestd", rest_up, 20, cluster)
        cluster.start_watchdog()
    except Exception as exc:
        logs = "\n".join(
            f"--- {n}.out\n{(base / f'{n}.out').read_text(errors='replace')[-1500:]}" for n in cluster.procs
        )
        cluster.stop()
        return None, f"could not start the test cluster: {exc}\n{logs}"
    return cluster, None


if __name__ == "__main__":  # a cluster to play with: python -m tests.slurm.cluster
    c, why = start_cluster()
    if c is None:
        sys.exit(why)
    print(f"export SLURM_CONF={c.conf}\n# slurmrestd: unix:{c.rest_socket} and {c.rest_url} (JWT)\n# Ctrl-C stops it")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()
