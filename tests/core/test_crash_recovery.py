"""A step killed with ``kill -9`` leaves no claim behind: the next run takes over at once, and the dead
run's row is marked ABORTED (by the taker, and by ``isthmus cache prune``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from isthmus.store.holders import LeaseHolder, current_holder, holder_is_dead
from tests.helpers import REPO, write_module

SLOW_STEP = """
import json, os, sys, time
from isthmus import step
from isthmus.runner import run_step

@step
def crunch(x: int) -> int:
    if os.environ.get("HANG"):
        open(os.environ["MARKER"], "w").close()
        time.sleep(600)  # killed here
    return x * 3

if __name__ == "__main__":
    r = run_step(crunch, {"x": 14})
    print(json.dumps({"value": r.value, "hit": r.cache_hit, "id": r.step_run_id}))
"""


def _env(home: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    env.update(ISTHMUS_HOME=str(home), ISTHMUS_LEASE_TTL="60", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    return env


def _start_and_kill(tmp_path: Path, home: Path) -> None:
    marker = tmp_path / "computing"
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "slow_step.py")],
        env=_env(home, tmp_path, HANG="1", MARKER=str(marker)),
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, "the step process ended before computing"
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _runs(home: Path) -> list[dict]:
    from sqlalchemy import select

    from isthmus.store import MetadataStore
    from isthmus.store import schema as s

    store = MetadataStore(f"sqlite:///{home / 'isthmus.db'}")
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(select(s.step_runs).order_by(s.step_runs.c.started_at)).mappings()
            return [dict(r) for r in rows]
    finally:
        store.dispose()


def test_a_killed_holder_is_taken_over_at_once_and_its_row_aborted(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "slow_step", SLOW_STEP)
    _start_and_kill(tmp_path, isthmus_home)
    (dead,) = _runs(isthmus_home)
    assert dead["status"] == "RUNNING"  # what kill -9 leaves

    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "slow_step.py")],
        env=_env(isthmus_home, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["value"] == 42 and result["hit"] is False
    # a correctness bound, not a benchmark: waiting for the 60 s lease TTL would take longer
    assert took < 20, f"the second run waited {took:.1f} s: it did not take the dead holder's lease over"
    rows = {r["id"]: r for r in _runs(isthmus_home)}
    assert rows[dead["id"]]["status"] == "ABORTED" and "is gone" in rows[dead["id"]]["error"]
    assert rows[dead["id"]]["ended_at"] is not None
    assert rows[result["id"]]["status"] == "COMPLETED"
    assert "abandoned by a dead process" in proc.stderr
    events = [json.loads(line) for line in (isthmus_home / "lineage" / "events.jsonl").read_text().splitlines()]
    assert [e["eventType"] for e in events if e["job"]["name"] == "crunch"].count("ABORT") == 1


WRITING_STEP = """
import json, os, time
from isthmus import Materializer, register_materializer, step
from isthmus.runner import run_step

class Blob:
    def __init__(self, data):
        self.data = data

@register_materializer(types=(Blob,))
class SlowBlob(Materializer):
    name, version = "slow-blob", "1"

    def save(self, obj, path):
        with open(path, "wb") as fh:
            fh.write(obj.data[:4])
            fh.flush()
            if os.environ.get("HANG"):
                open(os.environ["MARKER"], "w").close()
                time.sleep(600)  # killed while the partial write is on disk
            fh.write(obj.data[4:])

    def load(self, path, python_type):
        with open(path, "rb") as fh:
            return Blob(fh.read())

@step
def blob(n: int) -> Blob:
    return Blob(b"x" * n)

if __name__ == "__main__":
    r = run_step(blob, {"n": 64})
    print(json.dumps({"size": len(r.value.data), "hit": r.cache_hit}))
"""


def test_a_killed_writers_partial_file_goes_when_its_step_is_taken_over(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "slow_step", WRITING_STEP)
    _start_and_kill(tmp_path, isthmus_home)
    tmp_dir = isthmus_home / "artifacts" / ".tmp"
    parts = [p.name for p in tmp_dir.iterdir()]
    assert len(parts) == 1 and parts[0].endswith(".part"), parts  # what kill -9 leaves mid-write

    proc = subprocess.run(
        [sys.executable, str(tmp_path / "slow_step.py")],
        env=_env(isthmus_home, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"size": 64, "hit": False}
    assert parts[0] not in {p.name for p in tmp_dir.iterdir()}  # removed at once, not after the age limit


def test_cache_prune_marks_a_dead_holders_row_aborted(tmp_path: Path, isthmus_home: Path) -> None:
    from click.testing import CliRunner

    from isthmus.cli import app

    write_module(tmp_path, "slow_step", SLOW_STEP)
    _start_and_kill(tmp_path, isthmus_home)
    (dead,) = _runs(isthmus_home)
    assert dead["status"] == "RUNNING"
    result = CliRunner().invoke(app, ["cache", "prune"])
    assert result.exit_code == 0, result.output
    assert "abandoned step runs marked ABORTED: 1" in result.output
    (row,) = _runs(isthmus_home)
    assert row["status"] == "ABORTED"
    from isthmus import defaults

    assert defaults.metadata_store().lease_holder(row["cache_key"]) is None
    assert "abandoned step runs marked ABORTED: 0" in CliRunner().invoke(app, ["cache", "prune"]).output


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_holder_strings_and_the_liveness_rule() -> None:
    mine = current_holder("run-1")
    parsed = LeaseHolder.parse(mine)
    assert parsed is not None and parsed.pid == os.getpid() and parsed.step_run_id == "run-1"
    assert parsed.host == socket.gethostname() and parsed.format() == mine
    assert not holder_is_dead(mine)  # this process is alive

    dead = LeaseHolder(parsed.host, _dead_pid(), "run-2", parsed.boot, parsed.pidns, parsed.start)
    assert holder_is_dead(dead.format())
    # the pid now belongs to a process started at another time: the pid was reused
    reused = LeaseHolder(parsed.host, os.getpid(), "run-3", parsed.boot, parsed.pidns, "1")
    assert holder_is_dead(reused.format())
    # never judged from here: another host, another container (pid namespace), another boot, old formats
    for other in (
        LeaseHolder("another-host", dead.pid, "r", parsed.boot, parsed.pidns, parsed.start),
        LeaseHolder(parsed.host, dead.pid, "r", parsed.boot, "4026531999", parsed.start),
        LeaseHolder(parsed.host, dead.pid, "r", "0" * 16, parsed.pidns, parsed.start),
    ):
        assert not holder_is_dead(other.format()), other
    for text in (f"{parsed.host}:{dead.pid}:run-4", "worker-a", "", "a:b:c:d", f"{parsed.host}:x:r:-.-.-"):
        assert not holder_is_dead(text), text


def test_acquire_lease_takes_a_dead_holder_over_and_aborts_its_run(metadata_store) -> None:
    store = metadata_store
    parsed = LeaseHolder.parse(current_holder("x"))
    assert parsed is not None
    dead = LeaseHolder(parsed.host, _dead_pid(), "dead-run", parsed.boot, parsed.pidns, parsed.start).format()
    store.start_step_run(
        {
            "id": "dead-run",
            "invocation": "s",
            "step_name": "s",
            "step_path": "m:s",
            "orchestrator": "local",
            "attempt": 1,
            "params": {},
            "inputs": {},
            "context": {},
        }
    )
    assert store.acquire_lease("key", dead, ttl=600)
    assert store.acquire_lease("key", current_holder("new-run"), ttl=600)  # the dead one: taken at once
    assert store.lease_holder("key")[0] == current_holder("new-run")
    row = store.get_step_run("dead-run")
    assert row["status"] == "ABORTED" and row["ended_at"] is not None
    assert not store.acquire_lease("key", "someone-else", ttl=600)  # the live taker keeps it
    # a holder this host cannot judge (unknown format, another host) keeps its lease until it expires
    assert store.acquire_lease("key2", "worker-on-another-host", ttl=600)
    assert not store.acquire_lease("key2", current_holder("r"), ttl=600)
    assert store.abort_dead_holders() == []  # nothing dead or expired here
