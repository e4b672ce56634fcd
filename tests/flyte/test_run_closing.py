"""Every Flyte execution of isthmus tasks ends with its isthmus pipeline run closed — hand-written
``@workflow``, ``@dynamic``, eager and launch plans too — and stale runs are closed by ``isthmus runs close``."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from isthmus import defaults
from isthmus.context import derived_run_id
from isthmus.records import RunStatus
from isthmus.run_closing import close_stale_runs, derived_status, settle_pipeline_run
from isthmus.store import schema as s
from tests.conftest import skip_or_fail
from tests.flyte import hand_workflows as hw

REPO = Path(__file__).resolve().parents[2]


def _store():
    return defaults.metadata_store()


def _only_run() -> dict:
    (run,) = _store().list_runs(orchestrator="flyte")
    return run


def _sr(invocation: str, status: str, error: str | None = None, attempt: int = 1) -> dict:
    return {"invocation": invocation, "status": status, "error": error, "attempt": attempt}


# -- the rule ---------------------------------------------------------------------------------------
def test_derived_status_rule() -> None:
    assert derived_status([]) == (RunStatus.COMPLETED, None)
    assert derived_status([_sr("a", "COMPLETED"), _sr("b", "RUNNING")])[0] is RunStatus.RUNNING
    assert derived_status([_sr("a", "RETRY")])[0] is RunStatus.RUNNING  # another attempt follows
    # a later attempt of the same invocation replaces the failed one
    assert derived_status([_sr("a", "FAILED", "x"), _sr("a", "COMPLETED", attempt=2)]) == (RunStatus.COMPLETED, None)
    # ... another call of the same step (attempt 1 again) does not
    assert derived_status([_sr("a", "FAILED", "x"), _sr("a", "COMPLETED")])[0] is RunStatus.FAILED
    status, error = derived_status([_sr("a", "COMPLETED"), _sr("b", "FAILED", "ValueError: bad")])
    assert status is RunStatus.FAILED and error == "step 'b' failed: ValueError: bad"
    assert derived_status([_sr("a", "ABORTED")])[0] is RunStatus.ABORTED


# -- hand-written workflows, run locally ------------------------------------------------------------
def test_hand_written_workflow_completes_its_run() -> None:
    assert hw.summed(n=3) == "sum=3"
    run = _only_run()
    assert run["pipeline"] == "tests.flyte.hand_workflows.summed"
    assert run["status"] == "COMPLETED" and run["ended_at"] is not None and run["error"] is None
    assert run["steps"] == 3
    # a second call is a new run, closed too (all hits)
    hw.summed(n=3)
    runs = _store().list_runs(orchestrator="flyte")
    assert [r["status"] for r in runs] == ["COMPLETED", "COMPLETED"] and runs[0]["hits"] == 3


def test_hand_written_workflow_failure_marks_its_run_failed() -> None:
    with pytest.raises(Exception, match="boom"):
        hw.failing(n=2)
    run = _only_run()
    assert run["status"] == "FAILED"
    assert run["error"].startswith("step 'explode' failed: RuntimeError: boom")


def test_an_interrupted_workflow_marks_its_run_aborted(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(KeyboardInterrupt):
        hw.stopped(n=2)
    run = _only_run()
    assert run["status"] == "ABORTED" and run["error"] == "step 'interrupted' was aborted"
    assert f"isthmus interrupted: aborted; run {run['id']}" in caplog.text


def test_dynamic_workflow_completes_its_run() -> None:
    assert hw.dynamic_sums(sizes=[2, 3]) == [1, 3]
    run = _only_run()
    assert run["status"] == "COMPLETED" and run["steps"] == 4


def test_dynamic_workflow_failure_marks_its_run_failed() -> None:
    with pytest.raises(Exception, match="boom"):
        hw.dynamic_failing(sizes=[2])
    run = _only_run()
    assert run["status"] == "FAILED" and "explode" in run["error"]


def test_launch_plan_and_eager_workflow_close_their_runs() -> None:
    assert hw.summed_plan() == "sum=6"
    result = hw.eager_sum(n=3)  # a coroutine when called from a thread with an event loop
    assert (asyncio.run(result) if inspect.iscoroutine(result) else result) == "eager=3"
    runs = _store().list_runs(orchestrator="flyte")
    assert len(runs) == 2 and {r["status"] for r in runs} == {"COMPLETED"}
    assert {r["pipeline"] for r in runs} == {
        "tests.flyte.hand_workflows.summed",
        "tests.flyte.hand_workflows.eager_sum",
    }


def test_a_task_starting_after_its_run_was_settled_reopens_it() -> None:
    """In a cluster each task settles the run as it ends; the next task of the execution reopens it."""
    from flytekitplugins.isthmus.context import reopen_run
    from isthmus.runner import default_runner

    hw.summed(n=2)
    run_id = _only_run()["id"]
    reopen_run(default_runner(), run_id)
    assert _store().get_run(run_id)["status"] == "RUNNING" and _store().get_run(run_id)["ended_at"] is None
    assert settle_pipeline_run(_store(), run_id) is RunStatus.COMPLETED
    assert _store().get_run(run_id)["status"] == "COMPLETED"


# -- tasks in separate processes, as pods of one Flyte execution ----------------------------------
def test_tasks_in_separate_pods_settle_the_execution_run(isthmus_home: Path, tmp_path: Path) -> None:
    from flytekit.models.literals import LiteralMap

    from tests.flyte.test_entrypoint import _literal, _pyflyte_execute

    run_id = derived_run_id("flyte", "proj", "development", "f3a9c2e1b")
    _pyflyte_execute(hw.make_numbers, LiteralMap({"n": _literal(3, int)}), tmp_path / "a", isthmus_home)
    assert _store().get_run(run_id)["status"] == "COMPLETED"  # settled by the task that ended
    numbers = _literal([0, 1, 2], list[int])
    numbers.set_metadata({})  # a plain value (no ref another test's objects may have left attached)
    _pyflyte_execute(hw.total, LiteralMap({"numbers": numbers}), tmp_path / "b", isthmus_home)
    run = _store().get_run(run_id)
    assert run["status"] == "COMPLETED" and len(_store().step_runs_of(run_id)) == 2
    with pytest.raises(AssertionError):  # the pod's task fails (error.pb written)
        _pyflyte_execute(hw.explode, LiteralMap({"n": _literal(1, int)}), tmp_path / "c", isthmus_home)
    run = _store().get_run(run_id)
    assert run["status"] == "FAILED" and "explode" in run["error"]


# -- pyflyte run, in fresh processes -------------------------------------------------------------
def _pyflyte_run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    pyflyte = Path(sys.executable).with_name("pyflyte")
    if not pyflyte.exists():
        skip_or_fail(f"flytekit's pyflyte is not installed next to {sys.executable}")
    env = {
        **os.environ,
        "ISTHMUS_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [str(pyflyte), "run", "tests/flyte/hand_workflows.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _isthmus(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ISTHMUS_HOME": str(home), "COLUMNS": "250"}
    cli = Path(sys.executable).with_name("isthmus")
    return subprocess.run([str(cli), *args], env=env, capture_output=True, text=True, timeout=120)


def test_pyflyte_run_closes_runs_and_says_what_happened(isthmus_home: Path) -> None:
    first = _pyflyte_run(isthmus_home, "summed", "--n", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout + first.stderr
    run = _only_run()
    assert run["status"] == "COMPLETED"
    for name in ("make_numbers", "total", "describe"):
        assert f"isthmus {name}: computed in " in out
    assert out.count(f"; run {run['id']}") == 3
    shown = _isthmus(isthmus_home, "runs", "show", run["id"])
    assert shown.returncode == 0 and "COMPLETED" in shown.stdout

    second = _pyflyte_run(isthmus_home, "summed", "--n", "3")
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout + second.stderr
    latest = _store().list_runs(orchestrator="flyte")[0]
    assert latest["status"] == "COMPLETED" and latest["hits"] == 3
    for name in ("make_numbers", "total", "describe"):
        assert f"isthmus {name}: cache hit from step run " in out
    assert out.count(f"of run {run['id'][:8]} (flyte); run {latest['id']}") == 3


def test_pyflyte_run_of_failing_and_dynamic_workflows(isthmus_home: Path) -> None:
    failed = _pyflyte_run(isthmus_home, "failing", "--n", "2")
    assert failed.returncode != 0
    run = _only_run()
    assert run["status"] == "FAILED" and "boom" in run["error"]
    assert f"isthmus explode: failed; run {run['id']}" in failed.stdout + failed.stderr

    dynamic = _pyflyte_run(isthmus_home, "dynamic_sums", "--sizes", "[2, 3]")
    assert dynamic.returncode == 0, dynamic.stderr[-3000:]
    latest = _store().list_runs(orchestrator="flyte")[0]
    assert latest["pipeline"] == "tests.flyte.hand_workflows.dynamic_sums"
    assert latest["status"] == "COMPLETED" and latest["steps"] == 4


def test_the_summary_can_be_silenced(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    logger = logging.getLogger("flytekitplugins.isthmus.summary")
    hw.summed(n=2)
    assert any(r.name == logger.name and "isthmus make_numbers: computed" in r.getMessage() for r in caplog.records)
    caplog.clear()
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        hw.summed(n=2)
    finally:
        logger.setLevel(old)
    assert not [r for r in caplog.records if r.name == logger.name]


# -- stale runs ------------------------------------------------------------------------------------
def _backdate(run_id: str, hours: float) -> None:
    then = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
    with _store().engine.begin() as conn:
        conn.execute(update(s.pipeline_runs).where(s.pipeline_runs.c.id == run_id).values(started_at=then))
        conn.execute(
            update(s.step_runs).where(s.step_runs.c.pipeline_run_id == run_id).values(started_at=then, ended_at=then)
        )


def _stuck(n: int, hours: float, *, crashed: bool = False) -> str:
    """A run left RUNNING as older versions did (or by a task whose pod died: ``crashed``)."""
    hw.summed(n=n)
    run_id = _store().list_runs(orchestrator="flyte")[0]["id"]
    _store().reopen_pipeline_run(run_id)
    if crashed:
        with _store().engine.begin() as conn:
            conn.execute(
                update(s.step_runs)
                .where(s.step_runs.c.pipeline_run_id == run_id, s.step_runs.c.invocation == "total")
                .values(status="RUNNING")
            )
    _backdate(run_id, hours)
    return run_id


def test_close_stale_runs() -> None:
    done, crashed, recent = _stuck(2, 30), _stuck(3, 30, crashed=True), _stuck(4, 0)
    store = _store()
    preview = close_stale_runs(store, dt.timedelta(hours=24), dry_run=True)
    assert {c.run_id for c in preview} == {done, crashed}
    assert store.get_run(done)["status"] == "RUNNING"  # a dry run changes nothing

    closed = {c.run_id: c for c in close_stale_runs(store, dt.timedelta(hours=24))}
    assert set(closed) == {done, crashed}
    assert store.get_run(done)["status"] == "COMPLETED"
    assert store.get_run(done)["error"].startswith("closed by 'isthmus runs close' (no activity since ")
    assert store.get_run(crashed)["status"] == "ABORTED"
    assert "step 'total' never ended (its process died)" in store.get_run(crashed)["error"]
    assert store.get_run(recent)["status"] == "RUNNING"
    assert close_stale_runs(store, dt.timedelta(hours=24)) == []


def test_runs_close_command(isthmus_home: Path) -> None:
    run_id = _stuck(2, 30)
    with _store().engine.begin() as conn:  # hostile text reaches the table as text, not as markup
        conn.execute(update(s.pipeline_runs).where(s.pipeline_runs.c.id == run_id).values(pipeline="[red]x[/red]"))
    dry = _isthmus(isthmus_home, "runs", "close", "--idle", "12h", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Would close" in dry.stdout and run_id[:8] in dry.stdout and "[red]x[/red]" in dry.stdout
    assert _store().get_run(run_id)["status"] == "RUNNING"
    done = _isthmus(isthmus_home, "runs", "close", "--idle", "12h")
    assert done.returncode == 0 and "COMPLETED" in done.stdout
    assert _store().get_run(run_id)["status"] == "COMPLETED"
    again = _isthmus(isthmus_home, "runs", "close")
    assert again.returncode == 0 and "no RUNNING run idle for 24h" in again.stdout

    bad = _isthmus(isthmus_home, "runs", "close", "--idle", "soon")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --idle 'soon':") and "Traceback" not in bad.stderr
