"""Typed records: ``RunStatus`` in the store and in lineage, and the typed answers of ``claim_step_run``."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from isthmus import StepFailed, lineage, step
from isthmus.lineage.errors import UnknownRunStatus
from isthmus.lineage.openlineage import END_EVENT_TYPES, OpenLineageEmitter, end_event_type
from isthmus.records import PipelineRunRecord, RunStatus, StepRunRecord
from isthmus.store import MetadataStore
from isthmus.store.claims import CacheCandidate, ClaimBusy, ClaimCandidates, ClaimHit, ClaimStarted
from isthmus.store.holders import current_holder
from isthmus.store.metadata import link_rows_for, utcnow

# Statuses the store holds (WAITING lives only in lineage payloads of queued batch jobs).
STORED = [s for s in RunStatus if s is not RunStatus.WAITING]


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Any:
    path = tmp_path / "records.db"
    store = MetadataStore(f"sqlite:///{path}")
    yield store, path
    store.dispose()


def _pipeline_row(run_id: str) -> PipelineRunRecord:
    return {"id": run_id, "pipeline": "p", "orchestrator": "local", "params": {}, "context": {}}


def _step_row(run_id: str, pipeline_run_id: str, **extra: Any) -> StepRunRecord:
    row: StepRunRecord = {
        "id": run_id,
        "pipeline_run_id": pipeline_run_id,
        "invocation": "s",
        "step_name": "s",
        "step_path": "tests.core.test_records:s",
        "orchestrator": "local",
        "attempt": 1,
        "params": {},
        "inputs": {},
        "context": {},
    }
    row.update(extra)  # type: ignore[typeddict-item]
    return row


# -- RunStatus in the store -------------------------------------------------------------------------
def test_run_status_is_its_text() -> None:
    assert [s.value for s in RunStatus] == [str(s) for s in RunStatus]
    assert RunStatus.COMPLETED == "COMPLETED" and f"{RunStatus.FAILED}" == "FAILED"
    assert json.dumps({"status": RunStatus.ABORTED}) == '{"status": "ABORTED"}'
    with pytest.raises(ValueError):
        RunStatus("COMPLETE")  # OpenLineage's word, not a run status
    # SQLite's driver stores a member as its value, psycopg as its name: the same text either way.
    assert all(s.name == s.value for s in RunStatus)


@pytest.mark.parametrize("status", STORED, ids=str)
def test_status_round_trips_through_sqlite_as_text(sqlite_store: Any, status: RunStatus) -> None:
    store, path = sqlite_store
    pipeline_run_id, step_run_id = str(uuid.uuid4()), str(uuid.uuid4())
    store.create_pipeline_run(_pipeline_row(pipeline_run_id))
    store.finish_pipeline_run(pipeline_run_id, status)
    store.start_step_run(_step_row(step_run_id, pipeline_run_id))
    store.finish_step_run(step_run_id, {"status": status})

    # What another program reading the file sees: the plain text, nothing else.
    with sqlite3.connect(path) as conn:
        for table, row_id in (("step_runs", step_run_id), ("pipeline_runs", pipeline_run_id)):
            raw, kind = conn.execute(f"SELECT status, typeof(status) FROM {table} WHERE id = ?", (row_id,)).fetchone()
            assert (raw, kind) == (status.value, "text")

    # What isthmus reads back: the same member.
    assert store.get_step_run(step_run_id)["status"] is status
    assert [r["status"] for r in store.step_runs_of(pipeline_run_id)] == [status]
    assert store.get_run(pipeline_run_id)["status"] is status


def test_status_is_stored_as_its_text_on_each_store(metadata_store: MetadataStore) -> None:
    """SQLite and PostgreSQL: the column holds the member's text, read back as plain ``str`` by SQL."""
    from sqlalchemy import text

    pipeline_run_id = str(uuid.uuid4())
    ids = {status: str(uuid.uuid4()) for status in STORED}
    metadata_store.create_pipeline_run(_pipeline_row(pipeline_run_id))
    for status, step_run_id in ids.items():
        metadata_store.start_step_run(_step_row(step_run_id, pipeline_run_id, status=status))
    with metadata_store.engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT id, status FROM step_runs")).all())
    assert {rows[i]: type(rows[i]) for i in ids.values()} == {s.value: str for s in STORED}
    assert {r["id"]: r["status"] for r in metadata_store.step_runs_of(pipeline_run_id)} == {
        i: s for s, i in ids.items()
    }


def test_text_written_by_hand_reads_as_run_status(sqlite_store: Any) -> None:
    """Rows written before the enum existed (plain strings) read back as members."""
    store, path = sqlite_store
    pipeline_run_id, step_run_id = str(uuid.uuid4()), str(uuid.uuid4())
    store.create_pipeline_run(_pipeline_row(pipeline_run_id))
    store.start_step_run(_step_row(step_run_id, pipeline_run_id))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE step_runs SET status = 'RETRY' WHERE id = ?", (step_run_id,))
    assert store.get_step_run(step_run_id)["status"] is RunStatus.RETRY


# -- RunStatus in lineage ---------------------------------------------------------------------------
def test_lineage_event_type_mapping_is_total() -> None:
    from openlineage.client.event_v2 import RunState

    assert set(END_EVENT_TYPES) == set(RunStatus)
    for status in RunStatus:
        assert end_event_type({"status": status}) == END_EVENT_TYPES[status]
        assert end_event_type({"status": status.value}) == END_EVENT_TYPES[status]  # as read from JSON
        RunState[END_EVENT_TYPES[status]]  # an event type OpenLineage knows
    assert END_EVENT_TYPES[RunStatus.COMPLETED] == "COMPLETE"
    assert END_EVENT_TYPES[RunStatus.FAILED] == END_EVENT_TYPES[RunStatus.RETRY] == "FAIL"
    assert END_EVENT_TYPES[RunStatus.ABORTED] == "ABORT"


@pytest.mark.parametrize("bad", ["COMPLETE", "completed", "DONE", "", None, 3])
def test_lineage_refuses_an_unknown_status(bad: Any) -> None:
    with pytest.raises(UnknownRunStatus, match="not a run status") as info:
        end_event_type({"id": "r1", "status": bad})
    assert "r1" in str(info.value) and repr(bad) in str(info.value)


def test_unknown_status_sends_no_event(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Through the hook, a bad status costs the event (one warning), never an OTHER event and never the run."""
    from openlineage.client import OpenLineageClient

    events = tmp_path / "events.jsonl"
    client = OpenLineageClient(config={"transport": {"type": "file", "log_file_path": str(events), "append": True}})
    emitter = OpenLineageEmitter(client)
    good: StepRunRecord = _step_row(str(uuid.uuid4()), str(uuid.uuid4()), status=RunStatus.ABORTED)
    bad = {**good, "id": str(uuid.uuid4()), "status": "ABORT"}
    with pytest.raises(UnknownRunStatus):
        emitter.on_step_end(bad)  # type: ignore[arg-type]
    lineage.set_lineage_hook(emitter)
    try:
        with caplog.at_level(logging.WARNING, logger="isthmus.lineage"):
            lineage.emit("on_step_end", bad)
            lineage.emit("on_step_end", good)
        assert emitter.flush(10)
    finally:
        lineage.set_lineage_hook(None)
    sent = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["eventType"] for e in sent] == ["ABORT"]
    assert "'ABORT' is not a run status" in caplog.text


@step
def _flaky(n: int) -> int:
    raise RuntimeError("always")


def test_runner_sends_mapped_event_types(tmp_path: Path, runner: Any) -> None:
    """A retried then failing step: FAIL for the retried attempt and for the last one, never OTHER."""
    from openlineage.client import OpenLineageClient

    events = tmp_path / "events.jsonl"
    client = OpenLineageClient(config={"transport": {"type": "file", "log_file_path": str(events), "append": True}})
    emitter = OpenLineageEmitter(client)
    lineage.set_lineage_hook(emitter)
    try:
        with pytest.raises(StepFailed):
            runner.run(_flaky, {"n": 1}, retries=1)
        assert emitter.flush(10)
    finally:
        lineage.set_lineage_hook(None)
    sent = [json.loads(line)["eventType"] for line in events.read_text().splitlines()]
    assert sent == ["START", "FAIL", "START", "FAIL"]
    statuses = sorted(r["status"] for r in _step_runs_named(runner.metadata, "_flaky"))
    assert statuses == [RunStatus.FAILED, RunStatus.RETRY]


def _step_runs_named(store: MetadataStore, name: str) -> list[StepRunRecord]:
    from sqlalchemy import select

    from isthmus.store import schema as s

    with store.engine.connect() as conn:
        ids = [r[0] for r in conn.execute(select(s.step_runs.c.id).where(s.step_runs.c.step_name == name))]
    return [store.get_step_run(i) for i in ids]


# -- claim_step_run answers with types ---------------------------------------------------------------
def _claim(
    store: MetadataStore, key: str, step_run_id: str, pipeline_run_id: str, *, verdict: bool | None, ttl: float = 60.0
) -> Any:
    def try_hit(cand: CacheCandidate) -> bool | None:
        return verdict

    def hit_write(cand: CacheCandidate) -> tuple[StepRunRecord, list[dict[str, Any]]]:
        cand["row"] = _step_row(
            step_run_id,
            pipeline_run_id,
            status=RunStatus.COMPLETED,
            cache_hit=True,
            source_step_run_id=cand["id"],
            started_at=utcnow(),
        )
        return cand["row"], link_rows_for(step_run_id, "s", {}, {})

    row = _step_row(step_run_id, pipeline_run_id, cache_key=key)
    return store.claim_step_run(row, key, current_holder(step_run_id), ttl, try_hit, hit_write)


def test_claim_results_are_typed(sqlite_store: Any) -> None:
    store, _ = sqlite_store
    pipeline_run_id = str(uuid.uuid4())
    store.create_pipeline_run(_pipeline_row(pipeline_run_id))
    key = "blake3:" + "ab" * 32
    first, second, third, fourth = (str(uuid.uuid4()) for _ in range(4))

    started = _claim(store, key, first, pipeline_run_id, verdict=True)
    assert started == ClaimStarted(aborted=[])
    assert store.get_step_run(first)["status"] is RunStatus.RUNNING

    # The same key while a live holder computes it: busy, and nothing recorded.
    assert _claim(store, key, second, pipeline_run_id, verdict=True) == ClaimBusy()
    with pytest.raises(Exception, match="no step run"):
        store.get_step_run(second)

    release = (key, current_holder(first))
    store.finish_step_run(
        first, {"status": RunStatus.COMPLETED, "outputs": {}}, step_name="s", cache_key=key, release=release
    )

    # A result that needs a full check: the candidates, nothing recorded yet.
    pending = _claim(store, key, second, pipeline_run_id, verdict=None)
    assert isinstance(pending, ClaimCandidates)
    assert [c["id"] for c in pending.rows] == [first]

    # A result confirmed at once: recorded as a hit in the same transaction.
    hit = _claim(store, key, third, pipeline_run_id, verdict=True)
    assert isinstance(hit, ClaimHit)
    assert hit.candidate["id"] == first and hit.candidate["row"]["id"] == third
    recorded = store.get_step_run(third)
    assert (
        recorded["status"] is RunStatus.COMPLETED and recorded["cache_hit"] and recorded["source_step_run_id"] == first
    )

    # Gone artifacts: the entry is dropped and this holder starts the step.
    gone = _claim(store, key, fourth, pipeline_run_id, verdict=False)
    assert gone == ClaimStarted(aborted=[])
    assert store.cache_candidates(key, time.time()) == []

    with pytest.raises(dataclasses.FrozenInstanceError):
        hit.candidate = {}  # type: ignore[misc]  # frozen: the type checker refuses it too
    with pytest.raises(dataclasses.FrozenInstanceError):
        pending.rows = []  # type: ignore[misc]


def test_claim_taking_over_an_expired_holder_lists_its_run(sqlite_store: Any) -> None:
    store, _ = sqlite_store
    pipeline_run_id = str(uuid.uuid4())
    store.create_pipeline_run(_pipeline_row(pipeline_run_id))
    key = "blake3:" + "cd" * 32
    stale, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    assert _claim(store, key, stale, pipeline_run_id, verdict=None, ttl=-1.0) == ClaimStarted(aborted=[])
    taken = _claim(store, key, fresh, pipeline_run_id, verdict=None)
    assert taken == ClaimStarted(aborted=[stale])
    assert store.get_step_run(stale)["status"] is RunStatus.ABORTED
    assert store.get_step_run(fresh)["status"] is RunStatus.RUNNING


def test_a_claim_that_waited_for_the_finishing_holder_is_a_hit(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim whose lease insert waits on the holder's final transaction (its result and the lease's
    release, committed together; PostgreSQL's row locks) sees that result: a hit, not a second run."""
    import threading

    from isthmus.store import metadata as metadata_module

    first_store, second_store = MetadataStore(store_url), MetadataStore(store_url)
    try:
        pipeline_run_id = str(uuid.uuid4())
        first_store.create_pipeline_run(_pipeline_row(pipeline_run_id))
        key = "blake3:" + "cd" * 32
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        assert _claim(first_store, key, first, pipeline_run_id, verdict=True) == ClaimStarted(aborted=[])

        committing = threading.Event()
        run_direct = metadata_module.run_direct

        def slow_commit(engine: Any, cache: Any, fn: Any, **options: Any) -> Any:  # the final transaction stays open
            if engine is not first_store.engine:
                return run_direct(engine, cache, fn, **options)

            def held(conn: Any) -> Any:
                result = fn(conn)  # written, not committed
                committing.set()
                time.sleep(1.5)
                return result

            return run_direct(engine, cache, held, **options)

        monkeypatch.setattr(metadata_module, "run_direct", slow_commit)

        finisher = threading.Thread(
            target=first_store.finish_step_run,
            args=(first, {"status": RunStatus.COMPLETED, "outputs": {}}),
            kwargs={"step_name": "s", "cache_key": key, "release": (key, current_holder(first))},
        )
        finisher.start()
        assert committing.wait(10)
        claimed = _claim(second_store, key, second, pipeline_run_id, verdict=True)
        finisher.join()
        assert isinstance(claimed, ClaimHit) and claimed.candidate["id"] == first, claimed
        assert second_store.get_step_run(second)["cache_hit"] is True
    finally:
        first_store.dispose()
        second_store.dispose()
