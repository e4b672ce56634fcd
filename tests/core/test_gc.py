"""``isthmus gc`` / ``Client.gc``: what goes, what stays, and safety under a concurrent run."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, insert, update

from isthmus import Client, config, defaults
from isthmus.artifacts import tmpfiles
from isthmus.cli import app
from isthmus.store import metadata as metadata_module
from isthmus.store import schema
from tests.core import gc_steps as g

ROOT = Path(__file__).resolve().parents[2]


def fresh_run(*ns: int) -> list[dict]:
    """``chain`` in a fresh process for each n; one record per run."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.core.gc_steps", *map(str, ns)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def objects(client: Client) -> set[str]:
    return {h for h, _ in client.artifacts.iter_objects()}


def test_dry_run_deletes_nothing_and_reports_what_would_go() -> None:
    old, new = g.chain.run(n=3), g.chain.run(n=4)
    client = Client()
    before = objects(client)
    report = client.gc(keep_last=1, prune_cache=True, grace=0, dry_run=True)
    assert objects(client) == before and report.dry_run
    old_hashes = {r.content_hash for s in old.steps.values() for r in s.outputs.values()}
    assert set(report.deleted) == old_hashes and report.artifacts_deleted == 3
    assert report.bytes_freed == sum(r.size for s in old.steps.values() for r in s.outputs.values())
    assert client.metadata.list_cache_entries() and new.id


def test_a_dry_run_counts_what_the_real_run_then_deletes_and_lists_a_bounded_sample() -> None:
    for n in (3, 4, 5):
        g.chain.run(n=n)
    client = Client()
    dry = client.gc(keep_last=1, prune_cache=True, grace=0, dry_run=True, listing=2)
    assert len(dry.deleted) == 2 and not dry.listed_all and dry.deleted == sorted(dry.deleted)
    assert dry.artifacts_deleted == 6 and dry.cache_entries_dropped == 6
    real = client.gc(keep_last=1, prune_cache=True, grace=0)
    assert (real.artifacts_deleted, real.bytes_freed, real.cache_entries_dropped) == (
        dry.artifacts_deleted,
        dry.bytes_freed,
        dry.cache_entries_dropped,
    )
    assert set(dry.deleted) <= set(real.deleted) and real.listed_all


def test_keep_last_ranks_runs_in_the_database_when_their_ids_would_be_many(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``_LISTED_RUNS`` ids (pipelines x keep_last), the newest runs are ranked by a window function
    instead of listed as bound parameters (psycopg caps a statement at 65,535): the same decision."""
    from isthmus.store import metadata as metadata_module

    for n in (3, 4, 5):
        g.chain.run(n=n)
    client = Client()
    listed = client.gc(keep_last=2, prune_cache=True, grace=0, dry_run=True)
    monkeypatch.setattr(metadata_module, "_LISTED_RUNS", 1)
    ranked = client.gc(keep_last=2, prune_cache=True, grace=0, dry_run=True)
    assert ranked.to_dict() == listed.to_dict() and (ranked.runs, ranked.runs_kept, ranked.artifacts_deleted) == (
        3,
        2,
        3,
    )


def test_keep_last_deletes_old_runs_objects_and_a_fresh_run_recomputes_them() -> None:
    (first,) = fresh_run(3)
    (second,) = fresh_run(4)
    client = Client()
    old = {h for h in objects(client)}
    report = client.gc(keep_last=1, prune_cache=True, grace=0)
    assert report.artifacts_deleted == 3 and report.bytes_freed > 0 and report.cache_entries_dropped == 3
    assert len(objects(client)) == len(old) - 3
    assert all(client.metadata.artifacts_by_hash([h]) == {} for h in report.deleted)
    (again,) = fresh_run(3)  # a new process: the deleted results are recomputed, never a failed hit
    assert again["value"] == 6 and not any(again["hits"].values())
    (hit,) = fresh_run(4)
    assert all(hit["hits"].values()) and first["id"] != second["id"]


def test_live_cache_entries_and_aliases_protect() -> None:
    old = g.chain.run(n=3)
    g.chain.run(n=4)
    client = Client()
    report = client.gc(keep_last=1, grace=0)  # without --prune-cache the old run's entries are live
    assert report.artifacts_deleted == 0
    made = old.steps["make"].outputs["output"].content_hash
    client.metadata.set_alias("make.output", "prod", made)
    client.metadata.clear_cache()
    report = client.gc(keep_last=1, grace=0)
    assert made not in report.deleted and report.artifacts_deleted == 2
    assert made in objects(client)


def test_a_version_an_alias_pointed_at_before_is_kept_for_rollback() -> None:
    old = g.chain.run(n=3)
    new = g.chain.run(n=4)
    client = Client()
    before = old.steps["make"].outputs["output"].content_hash
    after = new.steps["make"].outputs["output"].content_hash
    client.promote("make.output@prod", before)
    client.promote("make.output@prod", after)
    client.metadata.clear_cache()
    report = client.gc(keep_last=1, grace=0)
    assert report.alias_history and before not in report.deleted and before in objects(client)
    assert client.rollback("make.output@prod").to_hash == before


def test_older_than_and_grace_keep_recent_runs() -> None:
    g.chain.run(n=3)
    g.chain.run(n=4)
    client = Client()
    assert client.gc(older_than=3600, prune_cache=True, grace=0).artifacts_deleted == 0
    assert client.gc(keep_last=0, prune_cache=True).artifacts_deleted == 0  # default grace: all too new
    assert client.gc(keep_last=0, prune_cache=True, grace=0, older_than=0).artifacts_deleted == 6


def test_part_files_and_orphans_are_removed() -> None:
    g.chain.run(n=3)
    store = defaults.artifact_store()
    tmp = Path(store.root, ".tmp")
    part = tmp / tmpfiles.part_name()
    part.write_bytes(b"x" * 10)
    os.utime(part, (time.time() - 7200, time.time() - 7200))
    dead = tmp / f"{'0' * 32}.999999@{tmpfiles.HOST_ID}.part"  # a writer of this host that is gone
    dead.write_bytes(b"y")
    orphan = store.save([1, 2, 3, 4, 5, 6, 7])  # committed, never recorded
    path = Path(store.path_for(orphan.content_hash))
    os.utime(path, (time.time() - 7200, time.time() - 7200))
    report = Client().gc(grace=60)
    assert not part.exists() and not dead.exists() and not path.exists()
    assert report.parts_removed == 2 and report.orphans_deleted == 1 and report.artifacts_deleted == 0


@pytest.mark.parametrize("scan_from", [5000, 0], ids=["looked-up", "one-pass"])
def test_an_orphan_is_an_object_no_artifact_row_and_no_link_names(
    scan_from: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether the recorded hashes are looked up 500 at a time or read in one pass (from
    ``_HASH_SCAN_FROM`` objects on): an object with a row, or with only a link left, is not an orphan;
    stray names in the objects directory are not objects."""
    from isthmus.store import metadata as metadata_module

    monkeypatch.setattr(metadata_module, "_HASH_SCAN_FROM", scan_from)
    run = g.chain.run(n=3)
    client = Client()
    store, meta = client.artifacts, client.metadata
    outputs = sorted(r.content_hash for s in run.steps.values() for r in s.outputs.values())
    meta.forget_artifacts(outputs[:1])  # its row is gone; the step run's output link still names it
    orphan = store.save([1, 2, 3, 4, 5, 6, 7])  # committed, never recorded
    shard = Path(store.path_for(orphan.content_hash)).parent
    other, third = [p for p in ("ab", "cd", "ef") if p != shard.name][:2]
    misplaced = [other + orphan.content_hash[9:], third + orphan.content_hash[9:]]
    strays = [
        shard / orphan.content_hash[7:].upper(),  # not a digest isthmus writes
        shard / "notes.txt",
        *(shard / name for name in misplaced),  # digests in the wrong directory
    ]
    for stray in strays:
        stray.write_bytes(b"x")
    # where the misplaced digests belong: a link to a file outside the store and a directory
    outside = shard.parent.parent.parent / "outside.bin"
    outside.write_bytes(b"not the store's")
    (shard.parent / other).mkdir(exist_ok=True)
    os.symlink(outside, shard.parent / other / misplaced[0])
    (shard.parent / third / misplaced[1]).mkdir(parents=True)
    not_utf8 = os.fsencode(shard.name) + b"\xff" * 62  # a digest's length, but not UTF-8
    strays.append(Path(os.fsdecode(os.path.join(os.fsencode(shard), not_utf8))))
    strays[-1].write_bytes(b"x")
    for stray in strays:
        os.utime(stray, (time.time() - 7200, time.time() - 7200))  # as old as the orphan: kept by name alone
    os.symlink(store.path_for(orphan.content_hash), shard / (shard.name + "0" * 62))  # a link, not a file
    assert sorted(store.object_hashes()) == sorted({orphan.content_hash, *outputs}) == sorted(objects(client))
    assert meta.unrecorded_hashes(store.object_hashes()) == [orphan.content_hash]
    path = Path(store.path_for(orphan.content_hash))
    os.utime(path, (time.time() - 7200, time.time() - 7200))
    assert client.gc(grace=60, dry_run=True).orphans_deleted == 1
    assert client.gc(grace=60).orphans_deleted == 1 and not path.exists()
    assert all(Path(store.path_for(h)).exists() for h in outputs)
    assert all(stray.exists() for stray in strays) and (shard / (shard.name + "0" * 62)).is_symlink()
    assert (shard.parent / other / misplaced[0]).is_symlink() and outside.read_bytes() == b"not the store's"
    assert (shard.parent / third / misplaced[1]).is_dir()


def test_cli_gc_json_and_bad_ages() -> None:
    g.chain.run(n=3)
    g.chain.run(n=4)
    result = CliRunner().invoke(app, ["gc", "--keep-last", "1", "--prune-cache", "--grace", "0", "--dry-run", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["artifacts_deleted"] == 3
    result = CliRunner().invoke(app, ["gc", "--older-than", "soon"])
    assert result.exit_code == 1 and result.output.startswith("error: --older-than 'soon'")
    for option in ("--older-than", "--grace"):  # a cutoff before year 1: one line, not a traceback
        result = CliRunner().invoke(app, ["gc", "--dry-run", option, "800000d"])
        assert result.exit_code == 1 and result.output.strip() == (
            f"error: {option} '800000d' is longer than 36500d; use at most that (e.g. 3650d)"
        )
    with pytest.raises(ValueError, match="older_than=3.*not an age from 0 to 100 years"):
        Client().gc(older_than=3e12, dry_run=True)
    result = CliRunner().invoke(app, ["gc", "--keep-last", "1", "--prune-cache", "--grace", "0"])
    assert result.exit_code == 0 and "deleted 3 artifact(s)" in result.output


# Runs spread over ~1.2 s (a run takes milliseconds): results outlive gc's grace of 0.5 s while this
# process still goes on to hit them, so gc deletes some of them under it, however fast the runs are.
CONCURRENT = """
import json, sys, time
from tests.core import gc_steps as g
failures = 0
for i in range(int(sys.argv[1])):
    n = i % 4 + 2  # repeats: hits on results gc may be deleting; new values: writes
    try:
        run = g.chain.run(n=n)
        assert run.outputs == 2 * n, run.outputs
    except Exception as exc:
        failures += 1
        print("FAILED", n, type(exc).__name__, exc, flush=True)
    time.sleep(0.1)
print(json.dumps({"failures": failures}), flush=True)
"""


def test_gc_under_a_concurrent_run_never_loses_a_needed_object() -> None:
    g.chain.run(n=2)
    g.chain.run(n=3)
    client = Client()
    deleted = skipped = 0
    for _round in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, "12"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while child.poll() is None:
            report = client.gc(keep_last=0, older_than=0, prune_cache=True, grace=0.5)
            deleted, skipped = deleted + report.artifacts_deleted, skipped + report.in_use_skipped
            time.sleep(0.05)
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-2000:]
        assert json.loads(out.splitlines()[-1]) == {"failures": 0}, out
    print(f"gc deleted {deleted} objects while the other process ran ({skipped} kept: in use meanwhile)")
    assert deleted > 0  # gc really deleted results the other process went on to need, and recomputed


def test_loaded_copies_of_deleted_artifacts_are_removed(tmp_path: Path) -> None:
    src = tmp_path / "report.txt"
    src.write_text("old report")
    first = g.keep_file.run(src)
    loaded = first.value
    assert loaded.read_text() == "old report" and "files" in loaded.parts
    src.write_text("new report")
    g.keep_file.run(src)
    client = Client()
    report = client.gc(keep_last=0, older_than=0, prune_cache=True, grace=0)
    assert first.outputs["output"].content_hash in report.deleted
    assert report.copies_removed >= 1 and not loaded.exists()


def test_gc_deletes_through_an_s3_store(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ISTHMUS_ARTIFACT_ROOT", f"s3://{s3_server.new_bucket()}/root")
    config.reset()
    old = g.chain.run(n=3)
    g.chain.run(n=4)
    client = Client()
    assert not client.artifacts.local
    refs = [r for s in old.steps.values() for r in s.outputs.values()]
    assert all(client.artifacts.exists(r) for r in refs)
    assert client.gc(keep_last=1, prune_cache=True, grace=0, dry_run=True).artifacts_deleted == 3
    report = client.gc(keep_last=1, prune_cache=True, grace=0)
    assert report.artifacts_deleted == 3 and report.bytes_freed == sum(r.size for r in refs)
    assert not any(client.artifacts.exists(r) for r in refs)
    again = g.chain.run(n=3)  # recomputed, not a failed hit
    assert not any(s.cache_hit for s in again.steps.values()) and again.outputs == 6


def test_lineage_and_gc_on_sqlite_and_postgresql(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_STORE_URL", store_url)
    config.reset()
    old = g.chain.run(n=3)
    new = g.chain.run(n=4)
    client = Client()
    made = old.steps["make"].outputs["output"].content_hash
    assert client.lineage(made.split(":")[1][:10], direction="downstream").target == made
    assert client.lineage(new.id[:8]).target_kind == "pipeline_run"
    assert client.lineage(new.steps["count"].step_run_id[:13], direction="upstream").target_kind == "step_run"
    dry = client.gc(keep_last=1, prune_cache=True, grace=0, dry_run=True)
    assert (dry.artifacts_deleted, dry.cache_entries_dropped, len(dry.deleted), dry.runs_kept) == (3, 3, 3, 1)
    report = client.gc(keep_last=1, prune_cache=True, grace=0)
    assert report.artifacts_deleted == 3 and report.cache_entries_dropped == 3 and report.alias_history
    assert set(report.deleted) == set(dry.deleted) and report.bytes_freed == dry.bytes_freed
    lin = client.lineage(made, direction="downstream")
    assert lin.artifacts[made].present is False and lin.step_runs
    assert not any(s.cache_hit for s in g.chain.run(n=3).steps.values())


@pytest.mark.parametrize("few_kept", [0, 10**6], ids=["from-what-is-needed", "from-the-candidates"])
def test_the_entries_prune_cache_drops_are_found_alike_either_way(
    store_url: str, monkeypatch: pytest.MonkeyPatch, few_kept: int
) -> None:
    """With few runs kept gc finds the cache entries to drop from what is needed, otherwise from the
    candidates: both give the same entries, dry or real, whatever protects an output (a kept run's link, an
    alias, either end of an alias change, a recent artifact, a RUNNING step run's input) or leaves it out
    (an output whose artifact row is gone), on SQLite and PostgreSQL."""
    monkeypatch.setenv("ISTHMUS_STORE_URL", store_url)
    monkeypatch.setattr(metadata_module, "_FEW_KEPT", few_kept)  # 0: always the first way; 10**6: the second
    config.reset()
    first = g.chain.run(n=3)
    old = [g.chain.run(n=n) for n in (5, 7, 9, 11)]  # outputs n and 2n: no two runs share one
    g.chain.run(n=3, recompute=["make"])  # the run kept: it links every output of the first run again
    client = Client()

    def made(run: Any, name: str) -> str:
        return str(run.steps[name].outputs["output"].content_hash)

    client.promote("count.output@production", made(old[1], "count"))
    client.promote("count.output@production", made(old[0], "count"))  # old[1]'s stays named by the history
    running = old[3].steps["double"].step_run_id  # RUNNING again: its input is in use, its links not yet there
    a, h, r, link = schema.artifacts, schema.artifact_alias_history, schema.step_runs, schema.step_run_artifacts
    with client.metadata.engine.begin() as conn:
        now = dt.datetime.now(dt.timezone.utc)
        later = now + dt.timedelta(days=1)  # old[2]'s result written after gc's grace began
        conn.execute(update(a).where(a.c.content_hash == made(old[2], "double")).values(created_at=later))
        conn.execute(delete(a).where(a.c.content_hash == made(old[3], "make")))  # its row gone, its link kept
        conn.execute(update(r).where(r.c.id == running).values(status="RUNNING", ended_at=None))
        conn.execute(delete(link).where(link.c.step_run_id == running))
        change = {"name": "make.output", "alias": "x", "action": "set", "forced": False, "via": "api"}
        conn.execute(  # old[0]'s list named only as where an alias moved from
            insert(h).values(**change, from_hash=made(old[0], "make"), to_hash=made(first, "make"), changed_at=now)
        )
    dropped = [(0, "double"), (1, "make"), (1, "double"), (2, "make"), (2, "count")]
    droppable = {old[i].steps[name].step_run_id for i, name in dropped}
    candidates = {made(old[0], "double"), made(old[1], "make"), made(old[1], "double"), made(old[2], "make")}
    candidates |= {made(old[2], "count"), made(old[3], "double")}  # the RUNNING step run's own output is unlinked
    at = time.time()
    plan = client.metadata.retention_plan(
        now=at, keep_last=1, age_cutoff=None, fresh=dt.datetime.fromtimestamp(at, dt.timezone.utc), prune_cache=True
    )
    assert {sid for _, sid in plan.droppable} == droppable
    assert set(plan.candidates) == candidates
    dry = client.gc(keep_last=1, prune_cache=True, grace=0, dry_run=True)
    assert (dry.artifacts_deleted, dry.cache_entries_dropped) == (6, 5)
    assert set(dry.deleted) == candidates and dry.listed_all and dry.bytes_freed == sum(plan.candidates.values())
    real = client.gc(keep_last=1, prune_cache=True, grace=0)
    assert (real.artifacts_deleted, real.cache_entries_dropped) == (6, 5) and set(real.deleted) == candidates


def test_an_output_computed_again_stays_while_its_later_entry_is_live(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The artifact row names the step run that first computed it; gc must also see the live entry of a
    later step run that computed the same bytes (the first one's entry gone), on SQLite and PostgreSQL."""
    monkeypatch.setenv("ISTHMUS_STORE_URL", store_url)
    config.reset()
    first = g.chain.run(n=3)
    again = g.chain.run(n=3, recompute=["make"])  # the same list, computed by a second step run
    made = first.steps["make"].outputs["output"]
    assert again.steps["make"].outputs["output"].content_hash == made.content_hash
    g.chain.run(n=4)  # the run --keep-last 1 keeps
    client = Client()
    meta = client.metadata
    assert meta.artifacts_by_hash([made.content_hash])[made.content_hash]["producer_step_run_id"] == (
        first.steps["make"].step_run_id
    )
    entries = {e["step_run_id"]: (e["cache_key"], e["step_run_id"]) for e in meta.list_cache_entries("make")}
    unknown = ("blake3:" + "0" * 64, first.steps["make"].step_run_id)
    assert meta.drop_cache_entries([entries[first.steps["make"].step_run_id], unknown]) == 1  # the producer's goes
    for dry_run in (True, False):
        report = client.gc(keep_last=1, grace=0, dry_run=dry_run)
        assert made.content_hash not in report.deleted, dry_run
    assert made.content_hash in objects(client)
    meta.drop_cache_entries([entries[again.steps["make"].step_run_id]])  # and the later one's
    assert made.content_hash in client.gc(keep_last=1, grace=0, dry_run=True).deleted
    assert made.content_hash in client.gc(keep_last=1, grace=0).deleted
    assert made.content_hash not in objects(client)


def test_a_killed_writer_not_yet_reaped_is_gone() -> None:
    """A writer killed a moment ago is a zombie until its parent reaps it: it writes nothing more, so its
    part is abandoned (as the step-run holder rule already says)."""
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    name = f"{'0' * 32}.{child.pid}@{tmpfiles.HOST_ID}.part"
    deadline = time.time() + 30
    while not tmpfiles._zombie(child.pid) and time.time() < deadline:  # exited, not reaped (no wait yet)
        time.sleep(0.01)
    assert tmpfiles.writer_gone(name)
    child.wait()
    assert tmpfiles.writer_gone(name)  # reaped: no such process
    assert not tmpfiles.writer_gone(tmpfiles.part_name())  # this process is alive


def test_an_interrupted_dry_run_does_not_wait_for_the_objects_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The objects directory is listed on another thread during a dry run's counting query; Ctrl-C in
    that query ends gc at once, however long the listing (a huge or slow objects directory) would take."""
    import isthmus.gc as gc_module

    g.chain.run(n=3)
    client = Client()
    listing = threading.Event()

    def slow_orphans(*_args: object) -> list[tuple[str, int]]:
        listing.set()
        time.sleep(5)
        return []

    def interrupted(**_kwargs: object) -> None:
        assert listing.wait(5)
        raise KeyboardInterrupt

    monkeypatch.setattr(gc_module, "_orphans", slow_orphans)
    monkeypatch.setattr(client.metadata, "retention_summary", interrupted)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.gc(dry_run=True)
    assert time.monotonic() - started < 2
