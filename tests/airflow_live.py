"""A real Airflow 3 deployment for tests: api-server, scheduler, dag-processor and triggerer.

``live_airflow`` (session scope, one per test session however many test packages use it; import
``live_airflow_fixture`` into a conftest or test module to use it) starts,
on 127.0.0.1 in a fresh temp directory:

- ``airflow db migrate`` on a SQLite metadata DB, then the four components as separate process
  groups with LocalExecutor, their own ``AIRFLOW_HOME``, dags folder and ``ISTHMUS_HOME``, the
  api-server on a free port (REST API v2 open to everyone: simple auth manager, all admins);
- a watchdog process that kills those process groups if the test process dies without stopping them.

It waits until ``/api/v2/monitor/health`` reports every component healthy. Tests put DAG files into
the dags folder, trigger runs through the REST API or the ``airflow`` CLI like a user, and wait for
them. ``stop()`` (fixture teardown, also ``atexit``) stops every process group it started.
Outside CI a missing piece skips with the reason printed (``tests.conftest.skip_or_fail``).

Run ``python -m tests.airflow_live`` for a deployment to play with (Ctrl-C stops it).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
START_TIMEOUT = 180.0  # four Airflow processes importing on two shared cores
TERMINAL_STATES = {"success", "failed"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_environ() -> dict[str, str]:
    """This process's environment without Airflow or isthmus settings (the test process sets its own)."""
    drop = ("AIRFLOW_", "AIRFLOW__", "ISTHMUS_", "OPENLINEAGE", "_AIRFLOW")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


class LiveAirflow:
    """One Airflow deployment in ``base``; see the module docstring."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = base or Path(tempfile.mkdtemp(prefix="isthmus-live-airflow-"))
        self.home = self.base / "airflow"
        self.dags = self.base / "dags"
        self.isthmus_home = self.base / "isthmus"
        self.logs = self.base / "component-logs"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.extra_env: dict[str, dict[str, str]] = {}  # component -> variables added at its start
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._stopped = False
        for path in (self.home, self.dags, self.isthmus_home, self.logs):
            path.mkdir(parents=True, exist_ok=True)
        self.env = {
            **_clean_environ(),
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__DAG_DISCOVERY_SAFE_MODE": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            # new DAG files are found within seconds; files already parsed are not re-parsed all the time
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__TRIGGERER__CAPACITY": "50",
            "AIRFLOW__OPENLINEAGE__DISABLED": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # the scheduler's and triggerer's log servers (8793/8794 by default) on free ports
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
            "ISTHMUS_HOME": str(self.isthmus_home),
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        }
        self.airflow_bin = str(Path(sys.executable).with_name("airflow"))

    # -- life cycle ------------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Migrate the DB, start the four components, and wait until the health endpoint says healthy."""
        proc = self.cli("db", "migrate", timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        atexit.register(self.stop)
        for name in COMPONENTS:
            self.start_component(name)
        self._start_watchdog()
        self.wait_healthy(timeout)

    def start_component(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        """Start one component in its own process group, its output appended to ``logs/<name>.log``."""
        args = ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        cmd = [self.airflow_bin, *(args if name == "api-server" else [name])]
        self.extra_env[name] = dict(extra_env or {})
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.procs[name] = subprocess.Popen(
                cmd,
                env={**self.env, **self.extra_env[name]},
                cwd=self.base,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        if self._watchdog is not None:
            self._watch(self.procs[name].pid)

    def stop_component(self, name: str, timeout: float = 30.0) -> int | None:
        """SIGTERM the component's process group, SIGKILL it after ``timeout``; its exit code."""
        proc = self.procs.get(name)
        if proc is None:
            return None
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        _kill_group(proc.pid, signal.SIGKILL)  # workers and task processes left in the group
        return proc.returncode

    def restart_component(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        """Stop a component and start it again with ``extra_env`` added to its environment."""
        self.stop_component(name)
        self.start_component(name, extra_env)
        self.wait_healthy()

    def stop(self) -> None:
        """Stop every process group this object started (idempotent) and remove its directory."""
        if self._stopped:
            return
        self._stopped = True
        for name in COMPONENTS:  # all at once: each takes seconds to shut down
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                _kill_group(proc.pid, signal.SIGTERM)
        for name in reversed(COMPONENTS):
            with contextlib.suppress(Exception):
                self.stop_component(name)
        if self._watchdog is not None:
            with contextlib.suppress(Exception):
                self._watchdog.stdin.close()  # type: ignore[union-attr]
                self._watchdog.wait(timeout=30)
        if os.environ.get("ISTHMUS_KEEP_LIVE_AIRFLOW"):
            print(f"live Airflow kept in {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    def _start_watchdog(self) -> None:
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, *(str(p.pid) for p in self.procs.values())],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )

    def _watch(self, pid: int) -> None:
        """Tell the watchdog about a process group started after it (a restarted component)."""
        with contextlib.suppress(Exception):
            self._watchdog.stdin.write(f"{pid}\n".encode())  # type: ignore[union-attr]
            self._watchdog.stdin.flush()  # type: ignore[union-attr]

    # -- health ----------------------------------------------------------------------------------
    def alive(self) -> dict[str, bool]:
        """Which component processes are still running."""
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    def health(self) -> dict[str, Any]:
        return self.api("GET", "/api/v2/monitor/health")

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            dead = [name for name, ok in self.alive().items() if not ok]
            if dead:
                raise RuntimeError(f"Airflow {dead} exited while starting:\n{self.log_tails(dead)}")
            try:
                last = self.health()
                if all(
                    last.get(c, {}).get("status") == "healthy"
                    for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                ):
                    return
            except Exception as exc:  # not listening yet
                last = exc
            time.sleep(1)
        raise RuntimeError(f"Airflow not healthy after {timeout:.0f} s (last: {last}):\n{self.log_tails(COMPONENTS)}")

    def problems(self, name: str = "scheduler") -> list[str]:
        """Lines of a component's log that tell of an exception in the component itself (tracebacks,
        errors, listener failures); the task logs that the LocalExecutor's workers echo there (a
        failing task's ``[error] Task failed``) are not the component's own."""
        marks = ("Traceback", "DetachedInstanceError", "Error while calling listener", "[error", "[critical")
        lines = self.component_log(name).splitlines()
        return [line for line in lines if any(m in line for m in marks) and " ti_id=" not in line]

    def assert_healthy(self) -> None:
        """Every component still runs, and the scheduler logged no exception."""
        dead = [name for name, ok in self.alive().items() if not ok]
        assert not dead, f"Airflow {dead} died:\n{self.log_tails(dead, 80)}"
        problems = self.problems("scheduler")
        assert not problems, "the scheduler logged exceptions:\n" + "\n".join(problems[:20])

    def component_log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tails(self, names: Any, lines: int = 40) -> str:
        return "\n".join(f"--- {n} ---\n" + "\n".join(self.component_log(n).splitlines()[-lines:]) for n in names)

    # -- the user's surfaces ---------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, *, expect: tuple[int, ...] = (200, 201, 204)) -> Any:
        """One REST call; the parsed JSON answer (raises with the answer on an unexpected status)."""
        import httpx

        response = httpx.request(method, f"{self.url}{path}", json=body, timeout=30)
        if response.status_code not in expect:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def cli(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run ``airflow <args>`` against this deployment (as a user would in a shell)."""
        return subprocess.run(
            [self.airflow_bin, *args],
            env={**self.env, **(env or {})},
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def put_dag(self, name: str, source: str) -> Path:
        """Write a DAG file into the dags folder (the dag-processor finds it within seconds)."""
        path = self.dags / f"{name}.py"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(source)
        tmp.replace(path)
        return path

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Until the DAG is parsed and serialized; fails fast with the file's import error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.api("GET", f"/api/v2/dags/{dag_id}")
                return
            except RuntimeError:
                pass
            errors = self.api("GET", "/api/v2/importErrors")["import_errors"]
            if errors:
                raise AssertionError(f"DAG files failed to import: {json.dumps(errors, indent=1)[:4000]}")
            time.sleep(1)
        raise TimeoutError(f"DAG {dag_id!r} not parsed after {timeout:.0f} s:\n{self.log_tails(['dag-processor'])}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Trigger a DAG run through the REST API; its run id."""
        self.wait_for_dag(dag_id)
        body = {"logical_date": None, "conf": conf or {}}
        return self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Wait until the DAG run ends; its final state. Fails early when the scheduler died."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.dag_run(dag_id, run_id)["state"]
            if state in TERMINAL_STATES:
                return state
            if not self.alive().get("scheduler", False):
                raise AssertionError(
                    f"the scheduler died during {dag_id}/{run_id}:\n{self.log_tails(['scheduler'], 80)}"
                )
            time.sleep(1)
        raise TimeoutError(
            f"{dag_id}/{run_id} still {state} after {timeout:.0f} s:\n{self.log_tails(['scheduler'], 80)}"
        )

    def run_dag(self, dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 300) -> tuple[str, str]:
        """Trigger and wait: (run id, final state)."""
        run_id = self.trigger(dag_id, conf)
        return run_id, self.wait_run(dag_id, run_id, timeout)

    def task_instances(self, dag_id: str, run_id: str) -> dict[tuple[str, int], dict[str, Any]]:
        """The run's task instances by (task_id, map_index)."""
        answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        return {(ti["task_id"], ti["map_index"]): ti for ti in answer["task_instances"]}

    def task_log_files(self, dag_id: str, run_id: str | None = None) -> list[Path]:
        """The task log files Airflow wrote for a DAG (one run, or all)."""
        root = self.home / "logs" / f"dag_id={dag_id}"
        files = [p for p in root.rglob("*.log")] if root.exists() else []
        return sorted(p for p in files if run_id is None or f"run_id={run_id}" in str(p))

    # -- the isthmus side ------------------------------------------------------------------------
    @property
    def store_url(self) -> str:
        """The isthmus metadata store the deployment uses without an isthmus connection."""
        return f"sqlite:///{self.isthmus_home / 'isthmus.db'}"

    def metadata(self, url: str | None = None) -> Any:
        """A MetadataStore on the deployment's isthmus store (or on ``url``)."""
        from isthmus.store import MetadataStore

        return MetadataStore(url or self.store_url)

    def wait_pipeline_status(
        self, run_id: str, statuses: tuple[str, ...], url: str | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        """Wait until the isthmus pipeline run is in one of ``statuses`` (the listener closes it
        shortly after the DAG run ends); the record."""
        store = self.metadata(url)
        try:
            deadline = time.monotonic() + timeout
            record: dict[str, Any] | None = None
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    record = store.get_run(run_id)
                if record and record["status"] in statuses:
                    return record
                time.sleep(0.5)
            raise AssertionError(f"pipeline run {run_id} not {statuses} after {timeout:.0f} s: {record}")
        finally:
            store.dispose()


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


_WATCHDOG = """
import os, select, signal, sys, time
groups = {int(p) for p in sys.argv[1:]}
buf = b""
while True:  # more groups arrive one per line; EOF when the test process is gone or stop() ran
    chunk = os.read(0, 4096)
    if not chunk:
        break
    buf += chunk
    *lines, buf = buf.split(b"\\n")
    groups.update(int(x) for x in lines if x.strip())
def alive(g):
    try:
        os.killpg(g, 0)
        return True
    except OSError:
        return False
for sig in (signal.SIGTERM, signal.SIGKILL):
    for g in groups:
        try: os.killpg(g, sig)
        except OSError: pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(g) for g in groups):
        time.sleep(0.2)
"""

_LIVE: LiveAirflow | None = None


def live() -> LiveAirflow:
    """The session's deployment, started on first use (skips, or fails in CI, when it cannot start)."""
    global _LIVE
    from tests.conftest import skip_or_fail

    if _LIVE is None:
        try:
            import airflow  # noqa: F401
        except ImportError as exc:
            skip_or_fail(f"apache-airflow is not installed ({exc}); install the 'airflow' extra")
        deployment = LiveAirflow()
        try:
            deployment.start()
        except Exception as exc:
            tails = deployment.log_tails(COMPONENTS)
            deployment.stop()
            skip_or_fail(f"live Airflow did not start: {exc}\n{tails}")
        _LIVE = deployment
    return _LIVE


@pytest.fixture(scope="session", name="live_airflow")
def live_airflow_fixture() -> LiveAirflow:
    """A real Airflow 3 deployment shared by the whole test session (see the module docstring)."""
    yield live()
    if _LIVE is not None:
        _LIVE.stop()


def uses_live_airflow(item: pytest.Item) -> bool:
    return "live_airflow" in getattr(item, "fixturenames", ())


if __name__ == "__main__":
    deployment = LiveAirflow()
    deployment.start()
    print(f"Airflow at {deployment.url} (AIRFLOW_HOME={deployment.home}, dags in {deployment.dags}); Ctrl-C stops it")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    finally:
        deployment.stop()
