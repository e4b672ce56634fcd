"""Test helpers: write throwaway modules and run Python in a subprocess against a shared isthmus home."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def write_module(directory: Path, name: str, source: str) -> Path:
    """Write ``name.py``; an edit is what the next process runs: its old ``.pyc`` is removed (Python
    would load it for an edit within the same second at the same size, as ``x * 2`` -> ``x * 3``; isthmus
    then keys that process's run as unique to it, a miss, which is not the edit a test means)."""
    path = directory / f"{name}.py"
    for stale in (directory / "__pycache__").glob(f"{name}.*.pyc"):
        stale.unlink(missing_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def import_fresh(directory: Path, name: str) -> Any:
    """Import (or re-import) module ``name`` from ``directory``."""
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def run_python(code: str, *, env: dict[str, str], cwd: Path, timeout: float = 120) -> Any:
    """Run ``code`` in a fresh interpreter; the last stdout line must be JSON, which is returned."""
    full_env = {**os.environ, **env}
    full_env["PYTHONPATH"] = os.pathsep.join([str(cwd), str(REPO), full_env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def kill_when_marked(directory: Path, name: str, source: str, home: Path) -> None:
    """Run module ``name`` (``source``, written to ``directory``) as a fresh process with ``ISTHMUS_HOME``
    ``home`` and kill -9 it once it creates the file ``$MARKER`` (the moment a test wants it dead)."""
    import signal
    import time

    write_module(directory, name, source)
    marker = directory / f"{name}.marker"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    env.update(ISTHMUS_HOME=str(home), MARKER=str(marker))
    env["PYTHONPATH"] = os.pathsep.join([str(directory), str(REPO)])
    proc = subprocess.Popen([sys.executable, str(directory / f"{name}.py")], env=env, cwd=directory)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, f"{name} ended before it marked the moment"
        assert time.monotonic() < deadline, f"{name} never marked the moment"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def invoke(*args: str) -> tuple[int, str]:
    """``isthmus ARGS`` through click's test runner: (exit code, output). A command may end in an error
    line and exit code, or raise an IsthmusError (the entry point prints it as one line); any other
    exception it lets out (a traceback for the user) fails the test."""
    from click.testing import CliRunner

    from isthmus.cli import app
    from isthmus.errors import IsthmusError

    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, (SystemExit, IsthmusError)), result.exception
    return result.exit_code, result.output


def queries_run(engine: Any, fn: Any) -> list[tuple[str, Any]]:
    """The queries (SELECT / WITH statements, with their parameters) ``fn`` ran on ``engine``, in order,
    leaving out the catalog lookups of schema inspection; fails when it ran none."""
    from sqlalchemy import event

    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")) and "pg_catalog" not in statement:
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        fn()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert seen, "it ran no query"
    return seen


def versions_from_links(store: Any) -> dict[tuple[str, str], tuple[Any, Any]]:
    """Each (artifact name, hash) version of ``store`` (a MetadataStore) with its first and last
    production (UTC), from the output links and their step runs themselves."""
    from sqlalchemy import func, select

    from isthmus.store import schema as s

    link, r = s.step_run_artifacts, s.step_runs
    query = (
        select(link.c.artifact_name, link.c.content_hash, func.min(r.c.started_at), func.max(r.c.started_at))
        .select_from(link.join(r, r.c.id == link.c.step_run_id))
        .where(link.c.role == "output")
        .group_by(link.c.artifact_name, link.c.content_hash)
    )
    with store.engine.connect() as conn:
        return {(n, h): (as_utc(f), as_utc(last)) for n, h, f, last in conn.execute(query)}


def versions_kept(store: Any) -> dict[tuple[str, str], tuple[Any, Any]]:
    """``artifact_versions`` of ``store`` in the form of :func:`versions_from_links`."""
    from sqlalchemy import select

    from isthmus.store import schema as s

    v = s.artifact_versions
    with store.engine.connect() as conn:
        rows = conn.execute(select(v.c.artifact_name, v.c.content_hash, v.c.first_at, v.c.last_at))
        return {(n, h): (as_utc(f), as_utc(last)) for n, h, f, last in rows}


def as_utc(when: Any) -> Any:
    """``when`` as an aware UTC datetime (SQLite returns naive ones)."""
    import datetime as dt

    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def start_train_run(store: Any, *, pipeline_run_id: str | None = None, started_at: Any = None) -> str:
    """Start a step run of a step ``train`` in ``store`` (a MetadataStore), left RUNNING; its id."""
    import uuid

    sid = str(uuid.uuid4())
    row: dict[str, Any] = {
        "id": sid,
        "pipeline_run_id": pipeline_run_id,
        "invocation": "train",
        "step_name": "train",
        "step_path": "m:train",
        "orchestrator": "local",
        "attempt": 1,
        "params": {},
        "inputs": {},
        "context": {},
    }
    store.start_step_run(row if started_at is None else {**row, "started_at": started_at})
    return sid


def finish_train_run(store: Any, sid: str, content_hash: str) -> None:
    """Complete the step run ``sid`` of :func:`start_train_run` with one output, ``train.output``."""
    from isthmus.artifacts.refs import ArtifactRef

    ref = ArtifactRef(
        uri=f"file:///x/{content_hash[7:]}",
        content_hash=content_hash,
        size=1,
        materializer="json",
        python_type="builtins:int",
    )
    store.finish_step_run(sid, {"status": "COMPLETED"}, outputs={"output": ref}, step_name="train")
