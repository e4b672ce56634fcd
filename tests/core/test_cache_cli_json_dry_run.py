"""``isthmus cache clear --json`` and ``cache prune --json``, as every other day-2 command prints for
scripts; ``cache prune --dry-run`` counts what prune would do (the same numbers the real prune then
reports), changes nothing, and needs no role."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from isthmus import Client
from isthmus.artifacts import tmpfiles
from isthmus.governance import roles
from isthmus.governance.roles import PermissionDenied, Role
from isthmus.store import schema as s
from tests.core import gc_steps as g
from tests.core.test_cache_admin_json_and_dead import dead_local_run
from tests.helpers import invoke


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_cache_clear_json() -> None:
    g.chain.run(n=3)
    code, out = invoke("cache", "clear", "--step", "make", "--yes", "--json")
    assert code == 0 and json.loads(out) == {"step": "make", "cleared": 1}
    code, out = invoke("cache", "clear", "-y", "--json")
    assert code == 0 and json.loads(out) == {"step": None, "cleared": 2}
    code, out = invoke("cache", "clear", "-y")
    assert code == 0 and out == "cleared 0 cache entries\n"  # the text is as it was


def _everything_prune_does(client: Client) -> dict[str, Path]:
    """One of each thing prune acts on; returns the files it would remove."""
    meta, arts = client.metadata, client.artifacts
    steps = g.chain.run(n=3).steps
    expired = steps["double"]  # expired, and its artifact gone too: counted once, as expired
    with meta.engine.begin() as conn:
        conn.execute(
            update(s.cache_entries).where(s.cache_entries.c.step_run_id == expired.step_run_id).values(expires_at=1.0)
        )
    for name in ("double", "count"):  # count: an unexpired entry whose artifact is gone
        os.remove(arts.path_for(steps[name].outputs["output"].content_hash))

    tmp = Path(arts.root, ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    part = tmp / f"{'0' * 32}.{_dead_pid()}@{tmpfiles.HOST_ID}.part"  # a dead writer's partial write
    part.write_bytes(b"x" * 100)
    stray = Path(arts.path_for("blake3:" + "ab" * 32))  # an object no run refers to, older than the grace
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"stray")
    os.utime(stray, (time.time() - 7200, time.time() - 7200))

    dead_local_run(meta)  # r1, its step run s1 holding lease key-s1
    return {"part": part, "stray": stray}


def test_cache_prune_dry_run_counts_what_prune_then_does_and_changes_nothing() -> None:
    client = Client()
    meta = client.metadata
    files = _everything_prune_does(client)
    expected = {
        "aborted": 1,
        "runs_closed": 1,
        "closed_runs": ["r1"],
        "expired": 1,
        "missing": 1,
        "tmp": 1,
        "unreferenced": 1,
    }

    code, out = invoke("cache", "prune", "--artifacts", "--dry-run", "--json")
    assert code == 0, out
    assert json.loads(out) == {"dry_run": True, **expected}
    assert len(meta.list_cache_entries()) == 3 and files["part"].exists() and files["stray"].exists()
    assert meta.get_step_run("s1")["status"] == "RUNNING" and meta.get_run("r1")["status"] == "RUNNING"
    assert meta.lease_holder("key-s1") is not None
    assert [e.action for e in client.audit_log()] == []  # nothing done: nothing audited

    code, out = invoke("cache", "prune", "--dry-run")  # without --artifacts no object is counted
    assert code == 0, out
    assert "cache prune (dry run): would drop expired entries: 1, entries with missing artifacts: 1" in out
    assert "partial writes to remove: 1, unreferenced objects to remove: 0" in out
    assert "abandoned step runs to mark ABORTED: 1; pipeline runs they drove to close (ABORTED): 1" in out

    code, out = invoke("cache", "prune", "--artifacts", "--json")
    assert code == 0, out
    assert json.loads(out) == {"dry_run": False, **expected}
    assert [e["step_name"] for e in meta.list_cache_entries()] == ["make"]
    assert not files["part"].exists() and not files["stray"].exists()
    assert meta.get_step_run("s1")["status"] == "ABORTED" and meta.get_run("r1")["status"] == "ABORTED"

    code, out = invoke("cache", "prune", "--artifacts", "--dry-run", "--json")
    assert code == 0 and json.loads(out) == {
        "dry_run": True,
        **{k: 0 for k in expected},
        "closed_runs": [],
    }


def test_cache_prune_dry_run_needs_no_role() -> None:
    client = Client()
    roles.grant(client.metadata, "someone-else", Role.ADMIN, by="test")  # the OS user now has no role
    code, out = invoke("cache", "prune", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["dry_run"] is True
    assert client.prune_cache(dry_run=True)["expired"] == 0
    with pytest.raises(PermissionDenied, match="cache.prune"):
        client.prune_cache()
    code, out = invoke("cache", "prune")
    assert code == 1
