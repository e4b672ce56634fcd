"""A pipeline run's status derived from its step runs, for orchestrator runs nothing closes explicitly.

A Flyte execution of hand-written workflows (``@workflow``, ``@dynamic``, eager, launch plans) has no
node that runs last and no end event a task can see: each task runs in its own pod and knows only its
execution id. So each isthmus task of such a run *settles* the run as it ends, and *reopens* it as it
starts. The rule, over the last attempt of every step call (a retry — a higher attempt number of the
same invocation — replaces the earlier attempt):

- any still RUNNING (or RETRY: another attempt follows): the run stays RUNNING;
- else any FAILED: FAILED, with the first failed invocation and its error;
- else any ABORTED: ABORTED;
- else (all COMPLETED, cache hits included): COMPLETED.

Between two sequential tasks the run therefore reads COMPLETED for the time the next pod takes to start;
when the execution ends, the last task to end has written the final status (the last one reads every
other task's end, since each writes its own step run's end before reading). A task whose process dies
(OOM, a killed pod) leaves its step run and the pipeline run RUNNING: :func:`close_stale_runs`
(``isthmus runs close``) closes such runs, and runs left RUNNING by older versions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from isthmus import lineage
from isthmus.records import PipelineRunRecord, RunStatus, StepRunRecord

_OPEN = (RunStatus.RUNNING, RunStatus.RETRY, RunStatus.WAITING)


def latest_by_invocation(step_runs: list[StepRunRecord]) -> list[StepRunRecord]:
    """The last attempt of each call (``step_runs`` in start order, as the store lists them).

    A step run replaces the previous one of its invocation when its attempt number is higher (a retry);
    otherwise it is another call of the same step (a loop in a dynamic workflow) and counts on its own."""
    calls: list[StepRunRecord] = []
    last: dict[str, int] = {}  # invocation -> index of its latest call in ``calls``
    for sr in step_runs:
        i = last.get(sr["invocation"])
        if i is not None and int(sr.get("attempt") or 1) > int(calls[i].get("attempt") or 1):
            calls[i] = sr
        else:
            last[sr["invocation"]] = len(calls)
            calls.append(sr)
    return calls


def derived_status(step_runs: list[StepRunRecord]) -> tuple[RunStatus, str | None]:
    """The status (and error) a run has by the rule in the module docstring."""
    latest = latest_by_invocation(step_runs)
    if any(sr["status"] in _OPEN for sr in latest):
        return RunStatus.RUNNING, None
    for sr in latest:
        if sr["status"] == RunStatus.FAILED:
            return RunStatus.FAILED, f"step {sr['invocation']!r} failed: {sr.get('error') or 'no error recorded'}"
    aborted = [sr["invocation"] for sr in latest if sr["status"] == RunStatus.ABORTED]
    if aborted:
        return RunStatus.ABORTED, f"step {aborted[0]!r} was aborted"
    return RunStatus.COMPLETED, None


def settle_pipeline_run(store: Any, run_id: str) -> RunStatus:
    """Close ``run_id`` with its derived status unless a step run of it is still open; announce a close
    to lineage. Returns the status it has now."""
    status, error = derived_status(store.step_runs_of(run_id))
    if status is RunStatus.RUNNING:
        return status
    record = store.get_pipeline_run(run_id)
    if record is None:
        return status
    store.finish_pipeline_run(run_id, status, outputs=record.get("outputs"), error=error)
    if record["status"] == RunStatus.RUNNING:
        lineage.emit("on_pipeline_end", {**record, "status": status, "error": error})
    return status


def reopen_pipeline_run(store: Any, run_id: str) -> bool:
    """Mark ``run_id`` RUNNING again (a task of it starts after an earlier task settled it)."""
    return bool(store.reopen_pipeline_run(run_id))


@dataclass(frozen=True)
class ClosedRun:
    """What :func:`close_stale_runs` did (or would do) to one run."""

    run_id: str
    pipeline: str
    orchestrator: str
    status: RunStatus
    error: str | None


def _last_activity(run: PipelineRunRecord, step_runs: list[StepRunRecord]) -> dt.datetime:
    times = [run["started_at"]]
    for sr in step_runs:
        times += [t for t in (sr.get("started_at"), sr.get("ended_at")) if t is not None]
    return max(_utc(t) for t in times)


def _utc(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def close_stale_runs(
    store: Any, idle: dt.timedelta, *, now: dt.datetime | None = None, dry_run: bool = False
) -> list[ClosedRun]:
    """Close RUNNING pipeline runs with no activity (run start, step run start or end) for ``idle``.

    Each gets its derived status when all its step runs ended (a hand-written Flyte workflow's run left
    RUNNING by an older version: COMPLETED or FAILED), else ABORTED (a step run never ended: its
    process died); the error says who closed it and why. ``dry_run``: report only."""
    now = now or dt.datetime.now(dt.UTC)
    cutoff = now - idle
    closed: list[ClosedRun] = []
    for run in store.running_pipeline_runs(started_before=cutoff):
        step_runs = store.step_runs_of(run["id"])
        last = _last_activity(run, step_runs)
        if last >= cutoff:
            continue
        status, error = derived_status(step_runs)
        since = f"no activity since {last.isoformat(timespec='seconds')}"
        if status is RunStatus.RUNNING:
            open_steps = [sr["invocation"] for sr in latest_by_invocation(step_runs) if sr["status"] in _OPEN]
            status = RunStatus.ABORTED
            error = f"closed by 'isthmus runs close': {since}; step {open_steps[0]!r} never ended (its process died)"
        elif not step_runs:
            status, error = RunStatus.ABORTED, f"closed by 'isthmus runs close': {since}; no step ran"
        else:
            error = f"closed by 'isthmus runs close' ({since})" + (f"; {error}" if error else "")
        closed.append(ClosedRun(run["id"], run["pipeline"], run["orchestrator"], status, error))
        if not dry_run:
            store.finish_pipeline_run(run["id"], status, outputs=run.get("outputs"), error=error)
            lineage.emit("on_pipeline_end", {**run, "status": status, "error": error})
    return closed
