"""``artifact_versions`` agrees with the output links it is kept from, on SQLite and PostgreSQL: written by
computed steps and cache hits, widened by a step run that started earlier but finished later, kept for a
link that a process without this code inserts (the trigger, not the writer, keeps it), filled by the
migration from a store written before it existed — and ``NAME~N`` and version numbers read from it are
those the links give."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import select, text

from isthmus import Client, config, pipeline, step
from isthmus.artifacts.refs import ArtifactRef
from isthmus.store import schema as s
from isthmus.store.metadata import MetadataStore
from tests.helpers import as_utc, versions_from_links, versions_kept


@step
def make(n: int) -> list:
    return list(range(n))


@step
def count(items: list) -> int:
    return len(items)


@pipeline
def small(n: int = 3):
    return count(make(n))


def _newest_first(store: MetadataStore, name: str) -> list[str]:
    """The stored versions of ``name``, newest first, as the links order them (first production, then hash)."""
    stored = {h for (h,) in store.engine.connect().execute(select(s.artifacts.c.content_hash))}
    versions = [(f, h) for (n, h), (f, _) in versions_from_links(store).items() if n == name and h in stored]
    return [h for _, h in sorted(versions, reverse=True)]


def _hand_run(store: MetadataStore, started: dt.datetime) -> str:
    """A step run of ``train`` started at ``started``, left RUNNING; its id."""
    sid = str(uuid.uuid4())
    store.start_step_run(
        {
            "id": sid,
            "invocation": "train",
            "step_name": "train",
            "step_path": "m:train",
            "orchestrator": "local",
            "attempt": 1,
            "params": {},
            "inputs": {},
            "context": {},
            "started_at": started,
        }
    )
    return sid


def _finish(store: MetadataStore, sid: str, content_hash: str) -> None:
    ref = ArtifactRef(
        uri=f"file:///x/{content_hash[7:]}",
        content_hash=content_hash,
        size=1,
        materializer="json",
        python_type="builtins:int",
    )
    store.finish_step_run(sid, {"status": "COMPLETED"}, outputs={"output": ref}, step_name="train")


def test_versions_follow_the_links_and_number_as_they_do(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_STORE_URL", store_url)
    config.reset()
    made = [small.run(n=n).steps["make"].outputs["output"].content_hash for n in (3, 4, 5)]
    assert small.run(n=4).steps["make"].cache_hit  # a hit of the second: it widens last_at, not first_at
    client = Client()
    store = client.metadata
    kept = versions_kept(store)
    assert kept == versions_from_links(store) and len(kept) == 6  # make.output and count.output, three each
    second = kept[("make.output", made[1])]
    assert second[1] > second[0]  # produced again by the hit

    # a step run that started before another but finishes after it, with the same content: the
    # version's first production moves back to the earlier start, its last stays the later one
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    late, early = _hand_run(store, t0 + dt.timedelta(hours=1)), _hand_run(store, t0)
    shared, other = "blake3:" + "a" * 64, "blake3:" + "b" * 64
    _finish(store, late, shared)
    assert versions_kept(store)[("train.output", shared)] == (t0 + dt.timedelta(hours=1),) * 2
    _finish(store, early, shared)
    _finish(store, _hand_run(store, t0 + dt.timedelta(minutes=30)), other)
    assert versions_kept(store)[("train.output", shared)] == (t0, t0 + dt.timedelta(hours=1))
    assert versions_kept(store) == versions_from_links(store)

    # NAME~N and the numbers are the links' order: shared (first at t0) is older than other (t0 + 30 min)
    for name in ("make.output", "count.output", "train.output"):
        order = _newest_first(store, name)
        assert [client.artifact(f"{name}~{i}").content_hash for i in range(len(order))] == order
        assert [(client.artifact(h).number, client.artifact(h).versions) for h in order] == [
            (len(order) - i, len(order)) for i in range(len(order))
        ]
        listed = client.artifact_versions(name)
        assert [r["content_hash"] for r in listed] == order
        assert [(as_utc(r["first_produced"]), as_utc(r["last_produced"])) for r in listed] == [
            versions_from_links(store)[(name, h)] for h in order
        ]
    assert _newest_first(store, "train.output") == [other, shared]
    store.dispose()


def test_the_migration_fills_versions_from_a_store_written_before_them(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISTHMUS_STORE_URL", store_url)
    config.reset()
    made = [small.run(n=n).steps["make"].outputs["output"].content_hash for n in (3, 4, 5, 6)]
    small.run(n=4)
    store = Client().metadata
    before = versions_kept(store)
    assert before == versions_from_links(store) and len(before) == 8
    # the store as revision 0006 left it: no versions table, no trigger keeping it
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE artifact_versions"))
        if store.dialect == "postgresql":
            conn.execute(text("DROP TRIGGER artifact_versions_of_links ON step_run_artifacts"))
            conn.execute(text("DROP FUNCTION isthmus_artifact_version()"))
        else:
            conn.execute(text("DROP TRIGGER artifact_versions_of_links"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0006'"))
    store.dispose()
    config.reset()
    reopened = MetadataStore(store_url)  # migrates to 0007 on first use
    try:
        assert versions_kept(reopened) == before
        client = Client(reopened)
        assert client.artifact("make.output~0").content_hash == made[3]
        assert client.artifact("make.output~3").content_hash == made[0]
        assert (client.artifact(made[1]).number, client.artifact(made[1]).versions) == (2, 4)
        monkeypatch.setenv("ISTHMUS_STORE_URL", store_url)
        config.reset()
        newer = small.run(n=7).steps["make"].outputs["output"].content_hash  # kept by the migrated trigger
        assert versions_kept(reopened) == versions_from_links(reopened) and len(versions_kept(reopened)) == 10
        assert client.artifact("make.output").content_hash == newer
    finally:
        reopened.dispose()


def test_a_link_written_without_isthmus_still_makes_its_version(metadata_store: MetadataStore) -> None:
    """An older isthmus still writing after the upgrade, a hand-made fixture: plain INSERTs of a step run
    and its output link keep the versions all the same (a trigger in the database)."""
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    sid = _hand_run(metadata_store, t0)
    h = "blake3:" + "c" * 64
    link = {"step_run_id": sid, "role": "output", "name": "output", "content_hash": h, "artifact_name": "train.output"}
    used = {**link, "role": "input", "name": "x", "artifact_name": "x"}
    with metadata_store.engine.begin() as conn:
        conn.execute(s.step_run_artifacts.insert(), [link, used])
    assert versions_kept(metadata_store) == versions_from_links(metadata_store) == {("train.output", h): (t0, t0)}
    later = _hand_run(metadata_store, t0 + dt.timedelta(days=1))
    with metadata_store.engine.begin() as conn:
        conn.execute(s.step_run_artifacts.insert(), [{**link, "step_run_id": later}])
    assert versions_kept(metadata_store) == {("train.output", h): (t0, t0 + dt.timedelta(days=1))}
