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
(``isthmus runs close``) closes such runs, and runs left RUNNING by older versions; it marks ABORTED the
step runs of a run it closes that never ended, and releases their leases, so a closed run holds no
RUNNING step run.

:func:`abort_dead_processes` (``isthmus gc``, ``isthmus cache prune``) does it at once where a death is
proven: it marks ABORTED the step runs whose lease holder is provably dead or whose lease expired
(:meth:`MetadataStore.abort_dead_holders`), and closes ABORTED the pipeline run of a step run whose
process provably died (:func:`isthmus.store.holders.holder_is_dead`; an expired lease proves nothing)
once none of its step runs is open — only a run of orchestrator ``local`` recorded on this host. One
process drives such a run and runs its steps, in threads or in its worker processes, so that death ends
the run (the driver is gone, or its broken worker pool fails the run). An orchestrator's run goes on after
a task's process dies (it retries the task, or starts the next one): those are left to ``runs close``.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select

from isthmus import lineage
from isthmus.records import PipelineRunRecord, RunStatus, StepRunRecord
from isthmus.store import schema as s
from isthmus.store.holders import LeaseHolder, holder_is_dead

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
class AbortedStepRun:
    """A step run that never ended, marked ABORTED (or, in a dry run, to be) as its run was closed."""

    step_run_id: str
    invocation: str


@dataclass(frozen=True)
class ClosedRun:
    """What :func:`close_stale_runs` did (or would do) to one run."""

    run_id: str
    pipeline: str
    orchestrator: str
    status: RunStatus
    error: str | None
    aborted_steps: tuple[AbortedStepRun, ...] = ()  # its step runs that never ended, marked ABORTED

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": str(self.status)}


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
    process died); the error says who closed it and why. Its step runs still RUNNING are marked ABORTED
    first, and their leases released (:func:`abort_step_runs`): live ones too, for an ``idle`` the
    caller chose short. ``dry_run``: report only."""
    now = now or dt.datetime.now(dt.UTC)
    cutoff = now - idle
    closed: list[ClosedRun] = []
    leases: dict[str, list[tuple[str, str]]] | None = None  # read once, when a run has a step run to mark
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
        never_ended = [sr for sr in step_runs if sr["status"] == RunStatus.RUNNING]
        if never_ended and not dry_run:
            leases = _leases_by_step_run(store) if leases is None else leases
            why = f"never ended (its run had no activity since {last.isoformat(timespec='seconds')})"
            never_ended = abort_step_runs(store, never_ended, why=why, by="isthmus runs close", leases=leases)
        aborted = tuple(AbortedStepRun(sr["id"], sr["invocation"]) for sr in never_ended)
        closed.append(ClosedRun(run["id"], run["pipeline"], run["orchestrator"], status, error, aborted))
        if not dry_run:
            store.finish_pipeline_run(run["id"], status, outputs=run.get("outputs"), error=error)
            lineage.emit("on_pipeline_end", {**run, "status": status, "error": error})
    return closed


def _leases_by_step_run(store: Any) -> dict[str, list[tuple[str, str]]]:
    """Step run id -> the (cache key, holder) of each lease it holds (a holder in an unknown format names
    no step run)."""
    lease = s.cache_leases
    with store.engine.connect() as conn:
        rows = conn.execute(select(lease.c.cache_key, lease.c.holder)).all()
    found: dict[str, list[tuple[str, str]]] = {}
    for key, holder in rows:
        parsed = LeaseHolder.parse(holder)
        if parsed is not None:
            found.setdefault(parsed.step_run_id, []).append((str(key), str(holder)))
    return found


def abort_step_runs(
    store: Any,
    step_runs: list[StepRunRecord],
    *,
    why: str,
    by: str,
    leases: dict[str, list[tuple[str, str]]] | None = None,
) -> list[StepRunRecord]:
    """Mark ``step_runs`` ABORTED where still RUNNING (``aborted: <why>; marked by <by>``, as gc and
    ``cache prune`` say it) and release the leases they hold, in one transaction; announce each end to
    lineage. ``leases``: :func:`_leases_by_step_run`, when already read. Returns the step runs marked."""
    leases = _leases_by_step_run(store) if leases is None else leases
    error = f"aborted: {why}; marked by {by}"

    marked = set(store.abort_step_runs(leases, [sr["id"] for sr in step_runs], error))
    done = [sr for sr in step_runs if sr["id"] in marked]
    for sr in done:
        lineage.emit("on_step_end", store.get_step_run(sr["id"]))
    return done


@dataclass
class DeadProcesses:
    """What :func:`abort_dead_processes` did (or, in a dry run, would do)."""

    aborted: list[str] = field(default_factory=list)  # step run ids marked ABORTED
    closed: list[ClosedRun] = field(default_factory=list)  # pipeline runs closed ABORTED


def _abandoned_leases(store: Any) -> dict[str, LeaseHolder | None]:
    """Step run id -> its holder when the holder is provably dead, None when its lease only expired: the
    leases :meth:`MetadataStore.abort_dead_holders` drops (a holder in an unknown format names no step run)."""
    lease = s.cache_leases
    with store.engine.connect() as conn:
        rows = conn.execute(select(lease.c.holder, lease.c.expires_at)).all()
    now = time.time()
    found: dict[str, LeaseHolder | None] = {}
    for holder, expires_at in rows:
        parsed = LeaseHolder.parse(holder)
        if parsed is None:
            continue
        if holder_is_dead(holder):
            found[parsed.step_run_id] = parsed
        elif expires_at < now:
            found.setdefault(parsed.step_run_id, None)
    return found


def _running(store: Any, step_run_ids: list[str]) -> list[str]:
    r = s.step_runs
    query = select(r.c.id).where(r.c.id.in_(step_run_ids), r.c.status == RunStatus.RUNNING)
    with store.engine.connect() as conn:
        return sorted(str(row[0]) for row in conn.execute(query))


def abort_dead_processes(store: Any, *, by: str, dry_run: bool = False) -> DeadProcesses:
    """Mark step runs of dead (or silent) lease holders ABORTED and close the local pipeline runs their
    dead processes drove (see the module docstring); ``by`` (``"isthmus gc"``) is said in both errors.
    ``dry_run``: report only, as if the step runs were marked."""
    leases = _abandoned_leases(store)
    if dry_run:
        aborted = _running(store, list(leases)) if leases else []
    else:
        aborted = store.abort_dead_holders(by=by)
    dead = {sid: holder for sid in aborted if (holder := leases.get(sid)) is not None}
    closed = _close_runs_of(store, dead, by=by, dry_run=dry_run)
    return DeadProcesses(aborted=aborted, closed=closed)


def _close_runs_of(store: Any, dead: dict[str, LeaseHolder], *, by: str, dry_run: bool) -> list[ClosedRun]:
    """Close ABORTED the RUNNING local runs of this host that the step runs in ``dead`` belong to, once
    none of their step runs is open (in a dry run, the step runs in ``dead`` count as ended)."""
    r = s.step_runs
    with store.engine.connect() as conn:
        rows = conn.execute(select(r.c.id, r.c.pipeline_run_id).where(r.c.id.in_(list(dead)))).all() if dead else []
    by_run: dict[str, str] = {}
    for sid, run_id in sorted(rows, key=lambda row: str(row[0])):
        if run_id is not None:
            by_run.setdefault(str(run_id), str(sid))
    closed: list[ClosedRun] = []
    for run_id, sid in sorted(by_run.items()):
        run = store.get_pipeline_run(run_id)
        if run is None or run["status"] != RunStatus.RUNNING or run["orchestrator"] != "local":
            continue
        if run.get("host") != socket.gethostname():
            continue
        step_runs = store.step_runs_of(run_id)
        if dry_run:
            step_runs = [{**sr, "status": RunStatus.ABORTED} if sr["id"] in dead else sr for sr in step_runs]
        if any(sr["status"] in _OPEN for sr in latest_by_invocation(step_runs)):
            continue  # a step run of it never ended and holds no lease: ``runs close`` decides by idle time
        holder = dead[sid]
        invocation = next((sr["invocation"] for sr in step_runs if sr["id"] == sid), "?")
        error = f"closed by '{by}': the process of step {invocation!r} (pid {holder.pid} on {holder.host}) is gone"
        closed.append(ClosedRun(run_id, run["pipeline"], run["orchestrator"], RunStatus.ABORTED, error))
        if not dry_run:
            store.finish_pipeline_run(run_id, RunStatus.ABORTED, outputs=run.get("outputs"), error=error)
            lineage.emit("on_pipeline_end", {**run, "status": RunStatus.ABORTED, "error": error})
    return closed
