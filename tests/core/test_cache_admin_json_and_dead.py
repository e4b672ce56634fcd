"""``isthmus cache list --json`` times as ISO strings (like every other command); ``cache prune`` says that
it marked a dead process's step run, and closes the local run that process drove."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys

from click.testing import CliRunner

from isthmus import Client
from isthmus.cli import app
from isthmus.store.holders import LeaseHolder, current_holder
from tests.core import gc_steps as g


def test_cache_list_json_gives_iso_times() -> None:
    g.chain.run(n=3)
    result = CliRunner().invoke(app, ["cache", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 3
    for row in rows:
        created = dt.datetime.fromisoformat(row["created_at"])
        assert created.tzinfo is not None and abs(created - dt.datetime.now(dt.timezone.utc)).total_seconds() < 600
        assert row["expires_at"] is None  # no expiry: null, as before


def test_cache_list_json_gives_an_expiry_as_an_iso_time() -> None:
    g.chain.run(n=3)
    meta = Client().metadata
    (entry, *_) = meta.list_cache_entries()
    from sqlalchemy import update

    from isthmus.store import schema as s

    with meta.engine.begin() as conn:
        conn.execute(update(s.cache_entries).values(expires_at=entry["created_at"] + 86400))
    rows = json.loads(CliRunner().invoke(app, ["cache", "list", "--json"]).output)
    for row in rows:
        left = dt.datetime.fromisoformat(row["expires_at"]) - dt.datetime.fromisoformat(row["created_at"])
        assert abs(left.total_seconds() - 86400) < 600


def dead_local_run(meta, run_id: str = "r1", step_run_id: str = "s1") -> None:
    """A local run of this host whose process died in its step run ``step_run_id``, holding a lease."""
    meta.create_pipeline_run(
        {"id": run_id, "pipeline": "p", "orchestrator": "local", "params": {}, "host": socket.gethostname()}
    )
    meta.start_step_run(
        {
            "id": step_run_id,
            "pipeline_run_id": run_id,
            "invocation": "a",
            "step_name": "a",
            "step_path": "m:a",
            "orchestrator": "local",
            "attempt": 1,
            "params": {},
            "inputs": {},
            "context": {},
        }
    )
    mine = LeaseHolder.parse(current_holder("x"))
    assert mine is not None
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    holder = LeaseHolder(mine.host, proc.pid, step_run_id, mine.boot, mine.pidns, mine.start).format()
    assert meta.acquire_lease(f"key-{step_run_id}", holder, ttl=600)


def test_cache_prune_marks_and_closes_saying_who_did_it() -> None:
    meta = Client().metadata
    dead_local_run(meta)
    result = CliRunner().invoke(app, ["cache", "prune"])
    assert result.exit_code == 0, result.output
    assert "abandoned step runs marked ABORTED: 1; pipeline runs they drove closed (ABORTED): 1" in result.output
    error = meta.get_step_run("s1")["error"]
    assert error.endswith("is gone; marked by isthmus cache prune") and "took the step over" not in error
    run = meta.get_run("r1")
    assert run["status"] == "ABORTED" and run["error"].startswith("closed by 'isthmus cache prune': the process of")
