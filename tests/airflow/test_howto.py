"""The README's "Run the example DAGs" commands, run as written in a fresh copy of the repository.

The commands are read from the README (so the two cannot drift apart) and run with bash in a copy of
the repository's files (tracked and untracked, not ignored) that shares this checkout's ``.venv`` —
the state after the README's two set-up commands — with ``HOME`` in a temp directory, so
``$HOME/isthmus-airflow`` and ``~/.isthmus`` are fresh. ``airflow standalone`` runs in the background
on free ports (the README's ``AIRFLOW__API__PORT``/``AIRFLOW__API__BASE_URL``) and is stopped at the end.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.airflow_live import _clean_environ, _kill_group
from tests.conftest import skip_or_fail
from tests.helpers import REPO

SECTION = "### Run the example DAGs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_blocks() -> list[list[str]]:
    """The bash blocks of the how-to section: their command lines (comments kept, blank lines dropped)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.find("\n## ", 1)] if "\n## " in section[1:] else section
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [[line for line in block.splitlines() if line.strip()] for block in blocks]


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """The repository's files in a fresh directory, sharing this checkout's .venv."""
    if not (REPO / ".venv" / "bin" / "airflow").exists():
        skip_or_fail("no .venv/bin/airflow: run bash scripts/test.sh once to build the environment")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    root = tmp_path / "isthmus"
    for name in filter(None, listed.split("\0")):
        src = REPO / name
        if src.is_file():
            dst = root / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def _bash(lines: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(lines)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{lines} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("localhost", port), timeout=1):
        return True
    return False


def test_the_readme_commands_run_the_example_dags(clone: Path, tmp_path: Path) -> None:
    setup, standalone, second_shell = readme_blocks()
    exports = [line for line in setup if line.startswith(("source ", "export "))]  # the second shell's too
    assert len(exports) == 4 and standalone == ["airflow standalone"]
    home = tmp_path / "home"
    home.mkdir()
    port = _free_port()
    env = {
        **_clean_environ(),
        "HOME": str(home),
        # the README's answer to a taken port 8080; the log servers' ports are this test's own business
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
    }

    # 1. migrate, one DAG run with `airflow dags test`, and what isthmus recorded
    out = _bash(setup, env, clone, timeout=600)
    listing = out[out.rfind("isthmus_ml_taskflow") - 2000 :]
    assert "isthmus_ml_taskflow" in out and "COMPLETED" in listing, out[-3000:]
    assert (home / "isthmus-airflow" / "airflow.db").exists() and (home / ".isthmus" / "isthmus.db").exists()

    # 2. the deployment, in the background
    log = open(tmp_path / "standalone.log", "wb")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen(
        ["bash", "-c", "\n".join([*exports, *standalone])],
        env=env,
        cwd=clone,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # 3. the second shell: unpause once the DAG is parsed, trigger, and watch the run
        unpause, trigger, list_runs = second_shell
        deadline = time.monotonic() + 240
        while True:
            done = subprocess.run(
                ["bash", "-c", "\n".join([*exports, unpause])], env=env, cwd=clone, capture_output=True
            )
            # a task started before the api-server listens fails at once (its supervisor reports there)
            if done.returncode == 0 and _listening(port):
                break
            assert proc.poll() is None, (tmp_path / "standalone.log").read_text()[-4000:]
            assert time.monotonic() < deadline, done.stderr.decode()[-3000:]
            time.sleep(3)
        _bash([*exports, trigger], env, clone)
        deadline = time.monotonic() + 300
        while True:
            runs = _bash([*exports, list_runs], env, clone)
            if "queued" not in runs and "running" not in runs and "success" in runs:
                break
            assert "failed" not in runs, runs + (tmp_path / "standalone.log").read_text()[-4000:]
            assert time.monotonic() < deadline, runs
            time.sleep(3)
    finally:
        _kill_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        _kill_group(proc.pid, signal.SIGKILL)
        log.close()

    # the triggered run: a pipeline run of its own, every step a cache hit on the `dags test` run
    from isthmus.store import MetadataStore

    store = MetadataStore(f"sqlite:///{home / '.isthmus' / 'isthmus.db'}")
    try:
        runs = store.list_runs(orchestrator="airflow")
        assert len(runs) == 2, (
            f"isthmus runs: {runs}\nAirflow runs:\n{_bash([*exports, list_runs], env, clone)}\n"
            + (tmp_path / "standalone.log").read_text()[-6000:]
        )
        newest = runs[0]
        steps = store.step_runs_of(newest["id"])
        assert len(steps) == 4 and all(s["cache_hit"] for s in steps)
    finally:
        store.dispose()


def test_the_examples_folder_holds_only_what_airflow_can_import() -> None:
    """Pointed at dags_examples/ itself, Airflow parses only dags_examples/airflow/ (.airflowignore)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags_examples"))
    assert not bag.import_errors, bag.import_errors
    assert sorted(Path(f).relative_to(REPO).as_posix() for f in bag.file_last_changed) == [
        "dags_examples/airflow/isthmus_fanout_dag.py",
        "dags_examples/airflow/isthmus_ml_dags.py",
    ]
    assert set(bag.dag_ids) == {"isthmus_ml_taskflow", "isthmus_ml_pipeline", "isthmus_fanout_pipeline"}
