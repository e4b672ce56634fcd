"""Pipeline runs closed from their step runs (``isthmus.run_closing``), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json

from isthmus.records import RunStatus
from isthmus.run_closing import close_stale_runs, settle_pipeline_run

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def _run(store, run_id: str, started: dt.datetime, pipeline: str = "p") -> None:
    store.create_pipeline_run(
        {"id": run_id, "pipeline": pipeline, "orchestrator": "flyte", "params": {}, "started_at": started}
    )


def _step(store, run_id: str, sid: str, invocation: str, started: dt.datetime, status: str | None) -> None:
    store.start_step_run(
        {
            "id": sid,
            "pipeline_run_id": run_id,
            "invocation": invocation,
            "step_name": invocation,
            "step_path": f"m:{invocation}",
            "orchestrator": "flyte",
            "attempt": 1,
            "params": {},
            "inputs": {},
            "context": {},
            "started_at": started,
        }
    )
    if status is not None:
        _end(store, sid, status, started)


def _end(store, sid: str, status: str, when: dt.datetime) -> None:
    error = "ValueError: bad" if status == "FAILED" else None
    store.finish_step_run(sid, {"status": RunStatus(status), "error": error, "ended_at": when})


def test_settle_and_reopen(metadata_store) -> None:
    store = metadata_store
    _run(store, "r1", NOW)
    _step(store, "r1", "s1", "a", NOW, "COMPLETED")
    _step(store, "r1", "s2", "b", NOW, None)  # still running
    assert settle_pipeline_run(store, "r1") is RunStatus.RUNNING
    assert store.get_run("r1")["status"] == "RUNNING"
    _end(store, "s2", "FAILED", NOW)
    assert settle_pipeline_run(store, "r1") is RunStatus.FAILED
    run = store.get_run("r1")
    assert run["status"] == "FAILED" and run["error"] == "step 'b' failed: ValueError: bad" and run["ended_at"]
    assert store.reopen_pipeline_run("r1") is True
    run = store.get_run("r1")
    assert run["status"] == "RUNNING" and run["ended_at"] is None and run["error"] is None
    assert store.reopen_pipeline_run("r1") is False  # already open
    assert store.reopen_pipeline_run("no-such-run") is False


def test_close_stale_runs(metadata_store) -> None:
    store = metadata_store
    old = NOW - dt.timedelta(days=2)
    _run(store, "done", old)
    _step(store, "done", "d1", "a", old, "COMPLETED")
    _run(store, "crashed", old, pipeline="[bold]x")
    _step(store, "crashed", "c1", "a", old, None)
    _run(store, "empty", old)
    _run(store, "busy", old)  # started long ago, but a step started recently
    _step(store, "busy", "b1", "a", NOW - dt.timedelta(minutes=5), None)
    _run(store, "young", NOW - dt.timedelta(hours=1))
    _run(store, "closed", old)
    store.finish_pipeline_run("closed", RunStatus.COMPLETED)

    closed = {c.run_id: c for c in close_stale_runs(store, dt.timedelta(hours=24), now=NOW)}
    assert set(closed) == {"done", "crashed", "empty"}
    assert closed["done"].status is RunStatus.COMPLETED
    assert closed["crashed"].status is RunStatus.ABORTED and closed["crashed"].pipeline == "[bold]x"
    assert closed["empty"].status is RunStatus.ABORTED and closed["empty"].error.endswith("; no step ran")
    for run_id, c in closed.items():
        run = store.get_run(run_id)
        assert run["status"] == c.status and run["error"] == c.error
    assert store.get_run("busy")["status"] == "RUNNING" and store.get_run("young")["status"] == "RUNNING"
    assert [r["id"] for r in store.running_pipeline_runs(started_before=NOW)] == ["busy", "young"]
    # a closed run holds no RUNNING step run: the one that never ended is marked, saying who did it
    assert [(a.step_run_id, a.invocation) for a in closed["crashed"].aborted_steps] == [("c1", "a")]
    assert closed["done"].aborted_steps == () and closed["empty"].aborted_steps == ()
    step = store.get_step_run("c1")
    assert step["status"] == "ABORTED" and step["ended_at"] is not None
    assert (
        step["error"]
        == f"aborted: never ended (its run had no activity since {old.isoformat()}); marked by isthmus runs close"
    )
    assert store.get_step_run("b1")["status"] == "RUNNING"


def _cli(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from isthmus.cli import app

    result = CliRunner().invoke(app, ["runs", "close", *args])
    return result.exit_code, result.output


def test_cli_runs_close_idle_zero_bare_seconds_json_and_bad_idle() -> None:
    from isthmus import Client

    store = Client().metadata
    now = dt.datetime.now(dt.UTC)
    _run(store, "crashed", now - dt.timedelta(minutes=5))
    _step(store, "crashed", "c1", "a", now - dt.timedelta(minutes=5), None)
    code, out = _cli("--idle", "600", "--json")  # bare seconds; idle for 5 minutes only: nothing
    assert code == 0 and json.loads(out) == {"dry_run": False, "idle_seconds": 600.0, "closed": []}
    code, out = _cli("--idle", "0", "--dry-run", "--json")  # 0: every RUNNING run, idle from now on
    data = json.loads(out)
    assert code == 0 and data["dry_run"] is True and [c["run_id"] for c in data["closed"]] == ["crashed"]
    assert store.get_run("crashed")["status"] == "RUNNING"
    code, out = _cli("--idle", "0", "--json")
    (closed,) = json.loads(out)["closed"]
    assert code == 0 and closed["status"] == "ABORTED" and "never ended" in closed["error"]
    assert store.get_run("crashed")["status"] == "ABORTED"
    for bad in ("soon", "-5", "1x"):
        code, out = _cli("--idle", bad)
        assert code == 1 and len(out.strip().splitlines()) == 1, out
        assert out.startswith(f"error: --idle {bad!r}: not a duration; use e.g. 30m, 6h, 2d or seconds")
    code, out = _cli("--idle", "800000d", "--dry-run")  # a cutoff before year 1: one line, not a traceback
    assert (
        code == 1
        and out.strip() == "error: --idle '800000d' is longer than 36500d; use at most that (0: every RUNNING run)"
    )
