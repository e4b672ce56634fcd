"""``isthmus gc`` and processes that died mid-run: their step runs marked ABORTED with what happened, the
local pipeline runs they drove closed (never a live run, never an orchestrator's run), partial writes
counted in bytes, and a dry run that previews all of it without acting."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from isthmus import Client, config
from isthmus.artifacts import tmpfiles
from isthmus.cli import app
from isthmus.store.holders import LeaseHolder, current_holder
from tests.core import test_run_closing as closing
from tests.helpers import kill_when_marked


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _dead_holder(step_run_id: str) -> tuple[str, int]:
    """A lease holder string of a process of this host that is gone, and its pid."""
    mine = LeaseHolder.parse(current_holder("x"))
    assert mine is not None
    pid = _dead_pid()
    return LeaseHolder(mine.host, pid, step_run_id, mine.boot, mine.pidns, mine.start).format(), pid


def _run(store, run_id: str, orchestrator: str = "local") -> None:
    store.create_pipeline_run(
        {"id": run_id, "pipeline": "p", "orchestrator": orchestrator, "params": {}, "host": socket.gethostname()}
    )


def _step(store, run_id: str, sid: str, invocation: str, *, ended: bool = False) -> None:
    started = dt.datetime.now(dt.timezone.utc)
    closing._step(store, run_id, sid, invocation, started, "COMPLETED" if ended else None)


def test_gc_marks_dead_step_runs_and_closes_the_local_runs_they_drove(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISTHMUS_STORE_URL", store_url)
    config.reset()
    client = Client()
    store = client.metadata
    _run(store, "killed")  # a local run whose process died in its second step
    _step(store, "killed", "k1", "a", ended=True)
    _step(store, "killed", "k2", "b")
    holder, pid = _dead_holder("k2")
    assert store.acquire_lease("key-k2", holder, ttl=600)
    _run(store, "live")  # a local run whose process is alive
    _step(store, "live", "l1", "a")
    assert store.acquire_lease("key-l1", current_holder("l1"), ttl=600)
    _run(store, "airflow", orchestrator="airflow")  # Airflow retries a dead task: the run goes on
    _step(store, "airflow", "a1", "a")
    assert store.acquire_lease("key-a1", _dead_holder("a1")[0], ttl=600)
    _run(store, "uncached")  # another step of it holds no lease (caching off): it stays RUNNING
    _step(store, "uncached", "u1", "a")
    _step(store, "uncached", "u2", "b")
    assert store.acquire_lease("key-u1", _dead_holder("u1")[0], ttl=600)

    dry = client.gc(dry_run=True)
    assert (dry.aborted, dry.runs_closed, dry.closed_runs) == (3, 1, ["killed"])
    assert store.get_step_run("k2")["status"] == "RUNNING" and store.get_run("killed")["status"] == "RUNNING"
    assert store.lease_holder("key-k2") is not None

    report = client.gc()
    assert (report.aborted, report.runs_closed, report.closed_runs) == (3, 1, ["killed"])
    step = store.get_step_run("k2")
    host = socket.gethostname()
    assert step["status"] == "ABORTED"
    assert step["error"] == f"aborted: its process (pid {pid} on {host}) is gone; marked by isthmus gc"
    run = store.get_run("killed")
    assert run["status"] == "ABORTED" and run["ended_at"] is not None
    assert run["error"] == f"closed by 'isthmus gc': the process of step 'b' (pid {pid} on {host}) is gone"
    assert store.get_run("live")["status"] == "RUNNING" and store.get_step_run("l1")["status"] == "RUNNING"
    assert store.get_step_run("a1")["status"] == "ABORTED" and store.get_run("airflow")["status"] == "RUNNING"
    assert store.get_step_run("u1")["status"] == "ABORTED" and store.get_run("uncached")["status"] == "RUNNING"
    again = client.gc()
    assert (again.aborted, again.runs_closed) == (0, 0)


def test_a_lease_that_only_expired_is_no_evidence_that_the_run_is_over(isthmus_home: Path) -> None:
    client = Client()
    store = client.metadata
    _run(store, "slow")
    _step(store, "slow", "s1", "a")
    assert store.acquire_lease("key-s1", current_holder("s1"), ttl=-1)  # alive, but silent
    report = client.gc()
    assert report.aborted == 1 and report.runs_closed == 0
    assert "its lease expired" in store.get_step_run("s1")["error"]
    assert store.get_run("slow")["status"] == "RUNNING"  # ``runs close`` decides by idle time


def test_partial_writes_count_in_bytes_freed_and_a_dry_run_previews_them() -> None:
    store = Client().artifacts
    tmp = Path(store.root, ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    old = tmp / tmpfiles.part_name()
    old.write_bytes(b"x" * 200_000)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    dead = tmp / f"{'0' * 32}.{_dead_pid()}@{tmpfiles.HOST_ID}.part"
    dead.write_bytes(b"y" * 1000)
    fresh = tmp / tmpfiles.part_name()  # a live writer's, inside the grace period: stays
    fresh.write_bytes(b"z" * 10)

    dry = Client().gc(dry_run=True)
    assert (dry.parts_removed, dry.part_bytes, dry.bytes_freed) == (2, 201_000, 201_000)
    assert old.exists() and dead.exists()
    report = Client().gc()
    assert (report.parts_removed, report.part_bytes, report.bytes_freed) == (2, 201_000, 201_000)
    assert not old.exists() and not dead.exists() and fresh.exists()

    result = CliRunner().invoke(app, ["gc", "--json"])
    data = json.loads(result.output)
    assert result.exit_code == 0 and (data["parts_removed"], data["part_bytes"], data["bytes_freed"]) == (0, 0, 0)


KILLED_PIPELINE = """
import os, time
from isthmus import Materializer, pipeline, register_materializer, step

class Blob:
    def __init__(self, data):
        self.data = data

@register_materializer(types=(Blob,))
class SlowBlob(Materializer):
    name, version = "slow-blob-gc", "1"

    def save(self, obj, path):
        with open(path, "wb") as fh:
            fh.write(obj.data[:4096])
            fh.flush()
            open(os.environ["MARKER"], "w").close()
            time.sleep(600)  # killed while the partial write is on disk

    def load(self, path, python_type):
        with open(path, "rb") as fh:
            return Blob(fh.read())

@step
def size(n: int) -> int:
    return n

@step
def blob(n: int) -> Blob:
    return Blob(b"x" * n)

@pipeline
def killed(n: int = 8192):
    return blob(size(n))

if __name__ == "__main__":
    killed.run()
"""


def test_gc_after_kill_9_previews_then_aborts_closes_and_frees_the_partial_write(
    tmp_path: Path, isthmus_home: Path
) -> None:
    kill_when_marked(tmp_path, "killed_pipeline", KILLED_PIPELINE, isthmus_home)  # while it writes

    def gc(*args: str) -> dict:
        result = CliRunner().invoke(app, ["gc", *args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    def run() -> dict:
        (row,) = json.loads(CliRunner().invoke(app, ["runs", "list", "--json"]).output)
        return row

    assert run()["status"] == "RUNNING"
    dry = gc("--dry-run")
    assert (dry["aborted"], dry["runs_closed"], dry["parts_removed"]) == (1, 1, 1)
    assert dry["part_bytes"] == 4096 and dry["bytes_freed"] == 4096
    assert run()["status"] == "RUNNING"
    done = gc()
    assert {k: done[k] for k in ("aborted", "runs_closed", "parts_removed", "part_bytes", "bytes_freed")} == {
        "aborted": 1,
        "runs_closed": 1,
        "parts_removed": 1,
        "part_bytes": 4096,
        "bytes_freed": 4096,
    }
    row = run()
    assert row["status"] == "ABORTED" and done["closed_runs"] == [row["id"]]
    text = CliRunner().invoke(app, ["gc", "--dry-run"]).output
    assert "step runs of dead processes to mark ABORTED: 0" in text and "pipeline runs to close: 0" in text
