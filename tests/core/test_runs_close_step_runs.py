"""``isthmus runs close`` leaves no step run RUNNING in a run it closes: a step run that never ended is
marked ABORTED (saying runs close did it) and its lease released, dead process or live one (``--idle 0``),
and the output names what was marked; a dry run only says so."""

from __future__ import annotations

import datetime as dt
import json
import socket
from pathlib import Path

import pytest

from isthmus import Client, config
from isthmus.store.holders import current_holder
from tests.core import test_run_closing as closing
from tests.helpers import invoke, kill_when_marked

KILLED_MID_STEP = """
import os, time
from isthmus import pipeline, step

@step
def fast(n: int) -> int:
    return n

@step
def slow(n: int) -> int:
    open(os.environ["MARKER"], "w").close()
    time.sleep(600)  # killed here
    return n

@pipeline
def killed(n: int = 3):
    return slow(fast(n))

if __name__ == "__main__":
    killed.run()
"""


def _kill_mid_step(tmp_path: Path, isthmus_home: Path) -> None:
    """Run ``killed`` in a fresh process and kill -9 it while step 'slow' runs."""
    kill_when_marked(tmp_path, "killed_mid_step", KILLED_MID_STEP, isthmus_home)


def test_runs_close_after_kill_9_marks_the_step_run_that_never_ended(tmp_path: Path, isthmus_home: Path) -> None:
    _kill_mid_step(tmp_path, isthmus_home)
    store = Client().metadata
    (slow,) = [sr for sr in store.step_runs_of(store.resolve_run_id("latest")) if sr["invocation"] == "slow"]
    assert slow["status"] == "RUNNING" and slow["cache_key"]
    assert store.lease_holder(slow["cache_key"]) is not None

    code, out = invoke("runs", "close", "--idle", "0", "--dry-run", "--json")
    assert code == 0, out
    (would,) = json.loads(out)["closed"]
    assert would["aborted_steps"] == [{"step_run_id": slow["id"], "invocation": "slow"}]
    assert store.get_step_run(slow["id"])["status"] == "RUNNING"  # a dry run changes nothing
    assert store.lease_holder(slow["cache_key"]) is not None

    code, out = invoke("runs", "close", "--idle", "0")
    assert code == 0, out
    assert "marked ABORTED: step run" in out and slow["id"][:8] in out and "'slow'" in out

    code, out = invoke("runs", "show", "latest", "--json")
    shown = json.loads(out)
    assert shown["run"]["status"] == "ABORTED"
    assert "step 'slow' never ended" in shown["run"]["error"]
    steps = {s["invocation"]: s for s in shown["steps"]}
    assert steps["fast"]["status"] == "COMPLETED"
    assert steps["slow"]["status"] == "ABORTED" and steps["slow"]["ended_at"]
    assert steps["slow"]["error"].startswith("aborted: never ended (its run had no activity since ")
    assert steps["slow"]["error"].endswith("; marked by isthmus runs close")
    assert store.lease_holder(slow["cache_key"]) is None  # released: the next run computes it at once

    code, out = invoke("runs", "close", "--idle", "0", "--json")
    assert code == 0 and json.loads(out)["closed"] == []
    code, out = invoke("cache", "prune")  # nothing left for prune to mark
    assert code == 0 and "abandoned step runs marked ABORTED: 0" in out


def _run(store, run_id: str) -> None:
    store.create_pipeline_run(
        {"id": run_id, "pipeline": "p", "orchestrator": "local", "params": {}, "host": socket.gethostname()}
    )


def test_runs_close_idle_zero_marks_a_live_step_run_and_says_so(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--idle 0`` closes every RUNNING run, live ones included (its help says so): their open step runs
    are marked, a live holder's lease is released, a step without a lease (caching off) is marked too."""
    monkeypatch.setenv("ISTHMUS_STORE_URL", store_url)
    config.reset()
    client = Client()
    store = client.metadata
    now = dt.datetime.now(dt.timezone.utc)
    _run(store, "live")
    closing._step(store, "live", "l1", "a", now, "COMPLETED")
    closing._step(store, "live", "l2", "b", now, None)
    assert store.acquire_lease("key-l2", current_holder("l2"), ttl=600)  # this process: alive
    closing._step(store, "live", "l3", "c", now, None)  # caching off: no lease
    _run(store, "other")  # another run's lease is none of runs close's business
    closing._step(store, "other", "o1", "a", now, "COMPLETED")
    assert store.acquire_lease("key-o", current_holder("o9"), ttl=600)
    store.finish_pipeline_run("other", "COMPLETED")

    (closed,) = client.close_stale_runs(dt.timedelta(0))
    assert closed.run_id == "live" and closed.status == "ABORTED"
    assert [(a.step_run_id, a.invocation) for a in closed.aborted_steps] == [("l2", "b"), ("l3", "c")]
    for sid in ("l2", "l3"):
        step = store.get_step_run(sid)
        assert step["status"] == "ABORTED" and step["ended_at"] is not None
        assert step["error"].endswith("; marked by isthmus runs close")
    assert store.get_step_run("l1")["status"] == "COMPLETED"
    assert store.lease_holder("key-l2") is None and store.lease_holder("key-o") is not None
    assert client.close_stale_runs(dt.timedelta(0)) == []


def test_runs_close_table_names_the_marked_step_runs_and_a_dry_run_says_would() -> None:
    store = Client().metadata
    now = dt.datetime.now(dt.timezone.utc)
    _run(store, "r")
    closing._step(store, "r", "s-0123456789", "[bold]x", now, None)
    code, out = invoke("runs", "close", "--idle", "0", "--dry-run")
    assert code == 0 and "would mark ABORTED: step run s-012345 ('[bold]x')" in out
    assert store.get_step_run("s-0123456789")["status"] == "RUNNING"
    code, out = invoke("runs", "close", "--idle", "0")
    assert code == 0 and "marked ABORTED: step run s-012345 ('[bold]x')" in out and "would" not in out
    assert store.get_step_run("s-0123456789")["status"] == "ABORTED"
