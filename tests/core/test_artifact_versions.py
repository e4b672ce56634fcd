"""``artifact_versions`` agrees with the output links it is kept from, on SQLite and PostgreSQL: written by
computed steps and cache hits, widened by a step run that started earlier but finished later, kept for a
link that a process without this code inserts (the trigger, not the writer, keeps it), filled by the
migration from a store written before it existed — and ``NAME~N`` and version numbers read from it are
those the links give."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, text

from isthmus import Client, config
from isthmus.store import schema as s
from isthmus.store.metadata import MetadataStore
from tests.core import gc_steps as g
from tests.helpers import as_utc, finish_train_run, start_train_run, versions_from_links, versions_kept


def _newest_first(store: MetadataStore, name: str) -> list[str]:
    """The stored versions of ``name``, newest first, as the links order them (first production, then hash)."""
    stored = {h for (h,) in store.engine.connect().execute(select(s.artifacts.c.content_hash))}
    versions = [(f, h) for (n, h), (f, _) in versions_from_links(store).items() if n == name and h in stored]
    return [h for _, h in sorted(versions, reverse=True)]


def test_versions_follow_the_links_and_number_as_they_do(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_STORE_URL", store_url)
    config.reset()
    made = [g.chain.run(n=n).steps["make"].outputs["output"].content_hash for n in (3, 4, 5)]
    assert g.chain.run(n=4).steps["make"].cache_hit  # a hit of the second: it widens last_at, not first_at
    client = Client()
    store = client.metadata
    kept = versions_kept(store)
    assert kept == versions_from_links(store) and len(kept) == 9  # make, count and double .output: three each
    second = kept[("make.output", made[1])]
    assert second[1] > second[0]  # produced again by the hit

    # a step run that started before another but finishes after it, with the same content: the
    # version's first production moves back to the earlier start, its last stays the later one
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    late, early = start_train_run(store, started_at=t0 + dt.timedelta(hours=1)), start_train_run(store, started_at=t0)
    shared, other = "blake3:" + "a" * 64, "blake3:" + "b" * 64
    finish_train_run(store, late, shared)
    assert versions_kept(store)[("train.output", shared)] == (t0 + dt.timedelta(hours=1),) * 2
    finish_train_run(store, early, shared)
    finish_train_run(store, start_train_run(store, started_at=t0 + dt.timedelta(minutes=30)), other)
    assert versions_kept(store)[("train.output", shared)] == (t0, t0 + dt.timedelta(hours=1))
    assert versions_kept(store) == versions_from_links(store)

    # NAME~N and the numbers are the links' order: shared (first at t0) is older than other (t0 + 30 min)
    for name in ("make.output", "count.output", "double.output", "train.output"):
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
    made = [g.chain.run(n=n).steps["make"].outputs["output"].content_hash for n in (3, 4, 5, 6)]
    g.chain.run(n=4)
    store = Client().metadata
    before = versions_kept(store)
    assert before == versions_from_links(store) and len(before) == 12
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
        newer = g.chain.run(n=7).steps["make"].outputs["output"].content_hash  # kept by the migrated trigger
        assert versions_kept(reopened) == versions_from_links(reopened) and len(versions_kept(reopened)) == 15
        assert client.artifact("make.output").content_hash == newer
    finally:
        reopened.dispose()


def test_a_link_written_without_isthmus_still_makes_its_version(metadata_store: MetadataStore) -> None:
    """An older isthmus still writing after the upgrade, a hand-made fixture: plain INSERTs of a step run
    and its output link keep the versions all the same (a trigger in the database)."""
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    sid = start_train_run(metadata_store, started_at=t0)
    h = "blake3:" + "c" * 64
    link = {"step_run_id": sid, "role": "output", "name": "output", "content_hash": h, "artifact_name": "train.output"}
    used = {**link, "role": "input", "name": "x", "artifact_name": "x"}
    with metadata_store.engine.begin() as conn:
        conn.execute(s.step_run_artifacts.insert(), [link, used])
    assert versions_kept(metadata_store) == versions_from_links(metadata_store) == {("train.output", h): (t0, t0)}
    later = start_train_run(metadata_store, started_at=t0 + dt.timedelta(days=1))
    with metadata_store.engine.begin() as conn:
        conn.execute(s.step_run_artifacts.insert(), [{**link, "step_run_id": later}])
    assert versions_kept(metadata_store) == {("train.output", h): (t0, t0 + dt.timedelta(days=1))}
