"""``isthmus.store.MetadataStore`` against a real SQLite file and a real PostgreSQL server.

Every test runs once per backend through the ``store_url`` / ``metadata_store`` fixtures (tests/conftest.py).
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import queue
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from sqlalchemy import func, inspect, select, text

from isthmus.artifacts.refs import ArtifactRef
from isthmus.errors import RunNotFound
from isthmus.store import MetadataStore
from isthmus.store import metadata as metadata_module
from isthmus.store import schema as s

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


# -- helpers ---------------------------------------------------------------------------------------
def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _count(store: MetadataStore, table: Any, *where: Any) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar() or 0)


def _hex(tag: str) -> str:
    """Hex digits standing for ``tag``; tags that share a prefix share a hex prefix."""
    return tag.encode().hex() if len(tag) <= 32 else blake3(tag.encode()).hexdigest()


def _h(tag: str) -> str:
    """A well-formed content hash standing for ``tag`` (refs refuse anything else)."""
    return "blake3:" + _hex(tag).ljust(64, "0")


def _ref(tag: str, size: int = 10) -> ArtifactRef:
    return ArtifactRef(
        uri=f"file:///artifacts/{tag}",
        content_hash=_h(tag),
        size=size,
        materializer="isthmus.json",
        python_type="builtins:dict",
        metadata={"tag": tag},
    )


def _run_row(run_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": run_id or str(uuid.uuid4()),
        "pipeline": "train",
        "orchestrator": "local",
        "params": {"lr": 0.1},
        "context": {"dag_run_id": "manual__1"},
        **extra,
    }


def _step_row(step_run_id: str, pipeline_run_id: str | None, step_name: str = "prep", **extra: Any) -> dict[str, Any]:
    return {
        "id": step_run_id,
        "pipeline_run_id": pipeline_run_id,
        "invocation": step_name,
        "step_name": step_name,
        "step_path": f"pkg.steps:{step_name}",
        "orchestrator": "local",
        "attempt": 1,
        "params": {"n": 3},
        "inputs": {},
        "context": {},
        "code_hash": "blake3:code",
        **extra,
    }


def _completed_step(
    store: MetadataStore,
    *,
    cache_key: str | None,
    step_name: str = "prep",
    pipeline_run_id: str | None = None,
    expires_at: float | None = None,
    out: str | None = None,
    started_at: dt.datetime | None = None,
) -> str:
    """Start and finish one step run with one output; returns its id."""
    sid = str(uuid.uuid4())
    row = _step_row(sid, pipeline_run_id, step_name, cache_key=cache_key)
    if started_at is not None:
        row["started_at"] = started_at
    store.start_step_run(row)
    ref = _ref(out or f"out-{sid}")
    store.finish_step_run(
        sid,
        {"status": "COMPLETED", "outputs": {"out": ref.to_dict()}, "duration_ms": 1.5},
        outputs={"out": ref},
        step_name=step_name,
        cache_key=cache_key,
        expires_at=expires_at,
    )
    return sid


# -- schema and migrations -------------------------------------------------------------------------
def test_migrations_run_on_first_open_and_only_once(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(metadata_module._MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head == metadata_module.SCHEMA_HEAD, "SCHEMA_HEAD must name the newest alembic revision"

    store = MetadataStore(store_url)
    try:
        with store.engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
            tables = set(inspect(conn).get_table_names())
        assert versions == [head]
        assert {t.name for t in s.metadata.sorted_tables} <= tables
    finally:
        store.dispose()

    # A second open finds the schema at head and never runs alembic again.
    import alembic.command

    def no_upgrade(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the schema was migrated a second time")

    monkeypatch.setattr(alembic.command, "upgrade", no_upgrade)
    again = MetadataStore(store_url)
    try:
        assert again._current_revision() == head
        again.create_pipeline_run(_run_row())
        assert again.count_runs() == 1
    finally:
        again.dispose()


# -- pipeline runs and step runs -------------------------------------------------------------------
def test_pipeline_run_round_trip(metadata_store: MetadataStore) -> None:
    run_id = str(uuid.uuid4())
    metadata_store.create_pipeline_run(_run_row(run_id, user="ada", host="node1", environment_hash="blake3:env"))
    run = metadata_store.get_run(run_id)
    assert run["status"] == "RUNNING"
    assert run["params"] == {"lr": 0.1}
    assert run["context"] == {"dag_run_id": "manual__1"}
    assert (run["user"], run["host"], run["environment_hash"]) == ("ada", "node1", "blake3:env")
    assert run["ended_at"] is None

    metadata_store.finish_pipeline_run(run_id, "COMPLETED", outputs={"model": {"uri": "x"}})
    run = metadata_store.get_run(run_id)
    assert run["status"] == "COMPLETED"
    assert run["outputs"] == {"model": {"uri": "x"}}
    assert run["error"] is None
    assert _utc(run["ended_at"]) >= _utc(run["started_at"])

    failed = str(uuid.uuid4())
    metadata_store.create_pipeline_run(_run_row(failed, orchestrator="airflow", context={"run_id": "scheduled__2"}))
    metadata_store.finish_pipeline_run(failed, "FAILED", error="ValueError: boom")
    assert metadata_store.get_run(failed)["error"] == "ValueError: boom"
    assert metadata_store.find_pipeline_run("airflow", "run_id", "scheduled__2")["id"] == failed
    assert metadata_store.find_pipeline_run("airflow", "run_id", "nope") is None
    assert metadata_store.find_pipeline_run("local", "run_id", "scheduled__2") is None


def test_step_run_round_trip(metadata_store: MetadataStore) -> None:
    run_id = str(uuid.uuid4())
    metadata_store.create_pipeline_run(_run_row(run_id))
    sid = str(uuid.uuid4())
    metadata_store.start_step_run(
        _step_row(sid, run_id, deps={"numpy": "2.0"}, resources={"cpu": 2}, started_at=T0, cache_key="k-rt")
    )
    row = metadata_store.get_step_run(sid)
    assert row["status"] == "RUNNING"
    assert row["cache_hit"] is False
    assert row["deps"] == {"numpy": "2.0"}
    assert row["resources"] == {"cpu": 2}
    assert _utc(row["started_at"]) == T0

    ref = _ref("rt")
    metadata_store.finish_step_run(
        sid,
        {"status": "COMPLETED", "outputs": {"out": ref.to_dict()}, "duration_ms": 12.5},
        outputs={"out": ref},
        step_name="prep",
    )
    row = metadata_store.get_step_run(sid[:13])  # a unique prefix works too
    assert row["id"] == sid
    assert row["status"] == "COMPLETED"
    assert ArtifactRef.from_dict(row["outputs"]["out"]) == ref
    assert row["duration_ms"] == pytest.approx(12.5)
    assert row["ended_at"] is not None
    assert [r["id"] for r in metadata_store.step_runs_of(run_id)] == [sid]

    later = str(uuid.uuid4())
    metadata_store.start_step_run(_step_row(later, run_id, started_at=T0 + dt.timedelta(hours=1)))
    assert metadata_store.previous_step_run("prep", T0 + dt.timedelta(hours=1))["id"] == sid
    assert metadata_store.previous_step_run("prep", T0) is None
    assert (
        metadata_store.previous_step_run("prep", T0 + dt.timedelta(hours=2), exclude=sid) is None
    )  # `later` is RUNNING

    with pytest.raises(RunNotFound, match="no step run"):
        metadata_store.get_step_run("does-not-exist")

    runs = metadata_store.list_runs()
    assert len(runs) == 1 and runs[0]["steps"] == 2 and int(runs[0]["hits"] or 0) == 0


def test_finish_step_run_writes_artifacts_links_and_cache_entry(metadata_store: MetadataStore) -> None:
    upstream = _ref("upstream")
    sid = str(uuid.uuid4())
    metadata_store.start_step_run(_step_row(sid, None, "train", cache_key="k-train"))
    model, metrics = _ref("model", 100), _ref("metrics", 7)
    metadata_store.finish_step_run(
        sid,
        {"status": "COMPLETED", "outputs": {"model": model.to_dict(), "metrics": metrics.to_dict()}},
        outputs={"model": model, "metrics": metrics},
        inputs={"data": upstream},
        step_name="train",
        cache_key="k-train",
        expires_at=None,
    )
    art = metadata_store.get_artifact(_h("model"))
    assert (art["uri"], art["size"], art["producer_step_run_id"]) == (model.uri, 100, sid)
    assert art["metadata"] == {"tag": "model"}
    assert metadata_store.get_artifact(_h("metrics")[7:19])["content_hash"] == _h("metrics")  # prefix without "blake3:"
    with pytest.raises(RunNotFound):
        metadata_store.get_artifact("upstream")  # inputs are linked, not registered as new artifacts

    with metadata_store.engine.connect() as conn:
        links = {
            (r.role, r.name, r.content_hash, r.artifact_name)
            for r in conn.execute(select(s.step_run_artifacts).where(s.step_run_artifacts.c.step_run_id == sid))
        }
    assert links == {
        ("output", "model", _h("model"), "train.model"),
        ("output", "metrics", _h("metrics"), "train.metrics"),
        ("input", "data", _h("upstream"), "data"),
    }
    [entry] = metadata_store.list_cache_entries("train")
    assert (entry["cache_key"], entry["step_run_id"], entry["expires_at"]) == ("k-train", sid, None)
    [cand] = metadata_store.cache_candidates("k-train", time.time())
    assert cand["id"] == sid
    assert ArtifactRef.from_dict(cand["outputs"]["model"]) == model
    assert metadata_store.artifact_producer(_h("model"))["id"] == sid
    assert [a["artifact_name"] for a in metadata_store.list_artifacts("train.model")] == ["train.model"]

    # A cache hit inserts its own row, links the same artifacts and registers none.
    hit = str(uuid.uuid4())
    metadata_store.finish_step_run(
        hit,
        {"duration_ms": 0.5},
        outputs={"model": model},
        step_name="train",
        insert_row=_step_row(
            hit, None, "train", status="COMPLETED", cache_hit=True, source_step_run_id=sid, started_at=T0
        ),
        new_artifacts=False,
    )
    assert metadata_store.get_step_run(hit)["cache_hit"] is True
    assert metadata_store.artifact_producer(_h("model"))["id"] == sid  # the producer, not the hit
    assert _count(metadata_store, s.artifacts) == 2
    assert _count(metadata_store, s.cache_entries) == 1


def test_finish_step_run_is_one_transaction(metadata_store: MetadataStore) -> None:
    """When any part of finishing fails, nothing of it is written: no row update, no artifact, no cache entry."""
    from sqlalchemy.exc import IntegrityError

    sid = _completed_step(metadata_store, cache_key="k1", out="first")
    again = _ref("second")
    with pytest.raises(IntegrityError):
        # The "out" output link already exists: the link insert fails after the row update and the artifact
        # insert, before the cache entry.
        metadata_store.finish_step_run(
            sid,
            {"status": "FAILED", "error": "should be rolled back"},
            outputs={"out": again},
            step_name="prep",
            cache_key="k2",
        )
    row = metadata_store.get_step_run(sid)
    assert (row["status"], row["error"]) == ("COMPLETED", None)
    assert _count(metadata_store, s.artifacts, s.artifacts.c.content_hash == _h("second")) == 0
    assert metadata_store.cache_candidates("k2", time.time()) == []
    assert [c["id"] for c in metadata_store.cache_candidates("k1", time.time())] == [sid]

    # A cache entry for a step run that does not exist is refused (foreign key), with its artifacts.
    ghost = str(uuid.uuid4())
    with pytest.raises(IntegrityError):
        metadata_store.finish_step_run(
            ghost, {"status": "COMPLETED"}, outputs={"o": _ref("ghost")}, step_name="x", cache_key="k3"
        )
    assert _count(metadata_store, s.artifacts, s.artifacts.c.content_hash == _h("ghost")) == 0
    assert metadata_store.cache_candidates("k3", time.time()) == []


# -- cache -----------------------------------------------------------------------------------------
def test_cache_candidates_newest_first_and_expiry(metadata_store: MetadataStore) -> None:
    now = time.time()
    oldest = _completed_step(metadata_store, cache_key="k")
    time.sleep(0.01)
    expired = _completed_step(metadata_store, cache_key="k", expires_at=now - 1)
    time.sleep(0.01)
    middle = _completed_step(metadata_store, cache_key="k", expires_at=now + 3600)
    time.sleep(0.01)
    newest = _completed_step(metadata_store, cache_key="k")
    _completed_step(metadata_store, cache_key="other")

    ids = [c["id"] for c in metadata_store.cache_candidates("k", time.time())]
    assert ids == [newest, middle, oldest]
    assert [c["id"] for c in metadata_store.cache_candidates("k", time.time(), limit=2)] == [newest, middle]
    assert [c["id"] for c in metadata_store.cache_candidates("k", now + 7200)] == [newest, oldest]
    assert expired not in ids
    assert metadata_store.cache_candidates("missing", time.time()) == []

    metadata_store.drop_cache_entry("k", newest)
    assert [c["id"] for c in metadata_store.cache_candidates("k", time.time())] == [middle, oldest]


def test_clear_cache_and_prune_expired(metadata_store: MetadataStore) -> None:
    now = time.time()
    _completed_step(metadata_store, cache_key="a1", step_name="a", expires_at=now - 10)
    _completed_step(metadata_store, cache_key="a2", step_name="a", expires_at=now + 3600)
    _completed_step(metadata_store, cache_key="a3", step_name="a")
    b = _completed_step(metadata_store, cache_key="b1", step_name="b", expires_at=now - 5)
    _completed_step(metadata_store, cache_key="c1", step_name="c")

    assert metadata_store.prune_expired(now) == 2
    assert sorted(e["cache_key"] for e in metadata_store.list_cache_entries()) == ["a2", "a3", "c1"]
    assert metadata_store.prune_expired(now) == 0
    assert metadata_store.get_step_run(b)["status"] == "COMPLETED"  # the run stays; only its cache entry goes

    assert metadata_store.clear_cache("a") == 2
    assert [e["cache_key"] for e in metadata_store.list_cache_entries()] == ["c1"]
    assert metadata_store.clear_cache("nope") == 0
    assert metadata_store.clear_cache() == 1
    assert metadata_store.list_cache_entries() == []
    assert _count(metadata_store, s.step_runs) == 5


# -- leases ----------------------------------------------------------------------------------------
def test_leases(metadata_store: MetadataStore) -> None:
    st = metadata_store
    assert st.lease_holder("k") is None
    assert st.acquire_lease("k", "worker-a", ttl=60) is True
    holder, expires = st.lease_holder("k")
    assert holder == "worker-a" and expires > time.time() + 50
    assert st.acquire_lease("k", "worker-b", ttl=60) is False  # a live holder keeps it
    assert st.lease_holder("k")[0] == "worker-a"
    assert st.acquire_lease("k", "worker-a", ttl=60) is True  # the holder may re-acquire
    assert st.renew_lease("k", "worker-b", ttl=60) is False
    assert st.renew_lease("k", "worker-a", ttl=120) is True
    assert st.lease_holder("k")[1] > time.time() + 100

    st.release_lease("k", "worker-b")  # not the holder: no effect
    assert st.lease_holder("k")[0] == "worker-a"
    st.release_lease("k", "worker-a")
    assert st.lease_holder("k") is None
    assert st.acquire_lease("k", "worker-b", ttl=60) is True

    # A crashed holder's lease expires and is taken over.
    assert st.acquire_lease("crash", "dead-worker", ttl=0.05) is True
    assert st.acquire_lease("crash", "worker-c", ttl=60) is False
    time.sleep(0.1)
    assert st.acquire_lease("crash", "worker-c", ttl=60) is True
    assert st.lease_holder("crash")[0] == "worker-c"
    assert st.renew_lease("crash", "dead-worker", ttl=60) is False
    st.release_lease("crash", "dead-worker")
    assert st.lease_holder("crash")[0] == "worker-c"


# -- aliases and artifacts -------------------------------------------------------------------------
def test_aliases(metadata_store: MetadataStore) -> None:
    v1 = _completed_step(metadata_store, cache_key=None, step_name="train", out="model-v1")
    v2 = _completed_step(metadata_store, cache_key=None, step_name="train", out="model-v2")

    with pytest.raises(RunNotFound, match="no alias"):
        metadata_store.get_artifact("train.out@prod")
    metadata_store.set_alias("train.out", "prod", _h("model-v1"), step_run_id=v1)
    assert metadata_store.get_artifact("train.out@prod")["content_hash"] == _h("model-v1")

    metadata_store.set_alias("train.out", "prod", _h("model-v2"), step_run_id=v2)  # moves the alias
    metadata_store.set_alias("train.out", "staging", _h("model-v1"))
    assert metadata_store.get_artifact("train.out@prod")["content_hash"] == _h("model-v2")
    assert metadata_store.get_artifact("train.out@staging")["content_hash"] == _h("model-v1")
    aliases = {(a["name"], a["alias"]): (a["content_hash"], a["step_run_id"]) for a in metadata_store.list_aliases()}
    assert aliases == {
        ("train.out", "prod"): (_h("model-v2"), v2),
        ("train.out", "staging"): (_h("model-v1"), None),
    }

    # Hash prefixes: unique, ambiguous, unknown.
    assert metadata_store.get_artifact(_h("model-v2"))["producer_step_run_id"] == v2
    with pytest.raises(RunNotFound, match="ambiguous"):
        metadata_store.get_artifact(_hex("model-v"))
    with pytest.raises(RunNotFound, match="matches no artifact"):
        metadata_store.get_artifact(_h("nothing"))

    assert metadata_store.referenced_hashes() == {_h("model-v1"), _h("model-v2")}
    metadata_store.forget_artifact(_h("model-v1"))
    assert metadata_store.referenced_hashes() == {_h("model-v2")}


# -- run ids ---------------------------------------------------------------------------------------
def test_resolve_run_id(metadata_store: MetadataStore) -> None:
    ids = [
        "aaaa1111-0000-4000-8000-000000000001",
        "aaaa2222-0000-4000-8000-000000000002",
        "bbbb3333-0000-4000-8000-000000000003",
    ]
    for i, run_id in enumerate(ids):  # bbbb… is the newest
        metadata_store.create_pipeline_run(_run_row(run_id, started_at=T0 + dt.timedelta(minutes=i)))

    assert metadata_store.resolve_run_id(ids[1]) == ids[1]
    assert metadata_store.resolve_run_id("bbbb") == ids[2]
    assert metadata_store.resolve_run_id(" aaaa2 ") == ids[1]
    assert metadata_store.resolve_run_id("latest") == ids[2]
    assert metadata_store.resolve_run_id("latest~0") == ids[2]
    assert metadata_store.resolve_run_id("latest~1") == ids[1]
    assert metadata_store.resolve_run_id("latest~2") == ids[0]
    assert metadata_store.get_run("latest~1")["id"] == ids[1]

    with pytest.raises(RunNotFound, match=r"only 3 run\(s\)"):
        metadata_store.resolve_run_id("latest~3")
    with pytest.raises(RunNotFound, match="ambiguous"):
        metadata_store.resolve_run_id("aaaa")
    with pytest.raises(RunNotFound, match="no pipeline run matches 'cccc'") as info:
        metadata_store.resolve_run_id("cccc")
    assert isinstance(info.value, LookupError)
    assert "isthmus runs list" in str(info.value)
    assert [r["id"] for r in metadata_store.list_runs(limit=2)] == [ids[2], ids[1]]


def test_resolve_run_id_on_empty_store(metadata_store: MetadataStore) -> None:
    with pytest.raises(RunNotFound, match=r"only 0 run\(s\)"):
        metadata_store.resolve_run_id("latest")


# -- snapshots -------------------------------------------------------------------------------------
def test_code_and_environment_snapshots_are_stored_once(metadata_store: MetadataStore, store_url: str) -> None:
    components = {"step": "blake3:s", "helpers": "blake3:h"}
    sources = {"pkg.steps:prep": "def prep(n):\n    return n\n"}
    env = {"python": "3.11.7", "packages": {"numpy": "2.0"}}
    for _ in range(3):
        metadata_store.save_code_snapshot("blake3:code1", components, sources)
        metadata_store.save_environment("blake3:env1", env)

    other = MetadataStore(store_url)  # another process/store: deduplicated by the database, not the memo
    try:
        other.save_code_snapshot("blake3:code1", {"changed": "ignored"}, {})
        other.save_environment("blake3:env1", {"changed": True})
        other.save_environment("blake3:env2", {"python": "3.12"})
    finally:
        other.dispose()

    assert _count(metadata_store, s.code_snapshots) == 1
    assert _count(metadata_store, s.environments) == 2
    snap = metadata_store.get_code_snapshot("blake3:code1")
    assert (snap["components"], snap["sources"]) == (components, sources)
    assert metadata_store.get_environment("blake3:env1") == env
    assert metadata_store.get_code_snapshot("blake3:missing") is None
    assert metadata_store.get_environment("blake3:missing") is None


# -- concurrency -----------------------------------------------------------------------------------
N_PROCS = 8
N_STEPS = 50


def _processes() -> Any:
    """Independent processes that share no connection with this one.

    The fork server imports this module (sqlalchemy, isthmus) once and forks each worker from that clean,
    connection-free process, so eight workers start in well under a second instead of importing everything
    eight times over.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _concurrent_writer(url: str, worker: int, n_steps: int, barrier: Any, results: Any) -> None:
    """One process: start + finish ``n_steps`` step runs with cache entries, and race for a shared lease."""
    errors: list[str] = []
    lease_won = None
    store = None
    try:
        store = MetadataStore(url)
        run_id = str(uuid.uuid4())
        store.create_pipeline_run(_run_row(run_id, context={"worker": worker}))
        barrier.wait(timeout=120)
        for i in range(n_steps):
            try:
                if i == n_steps // 2:
                    lease_won = store.acquire_lease("shared-lease", f"worker-{worker}", ttl=600)
                sid = str(uuid.uuid4())
                store.start_step_run(_step_row(sid, run_id, f"step{i}", cache_key=f"key-{i}"))
                ref = _ref(f"shared-{i}")  # every worker registers the same artifacts at the same time
                store.finish_step_run(
                    sid,
                    {"status": "COMPLETED", "outputs": {"out": ref.to_dict()}},
                    outputs={"out": ref},
                    step_name=f"step{i}",
                    cache_key=f"key-{i}",
                )
            except Exception:
                errors.append(traceback.format_exc())
        store.finish_pipeline_run(run_id, "COMPLETED")
    except Exception:
        errors.append(traceback.format_exc())
    finally:
        if store is not None:
            store.dispose()
        results.put((worker, lease_won, errors))


@pytest.mark.timeout(300)
def test_concurrent_writers_from_many_processes(store_url: str) -> None:
    MetadataStore(store_url).dispose()  # schema in place; concurrent first opens are tested below
    ctx = _processes()
    barrier = ctx.Barrier(N_PROCS + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_concurrent_writer, args=(store_url, w, N_STEPS, barrier, results)) for w in range(N_PROCS)
    ]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=120)  # every process has its store open: start writing together
        t0 = time.perf_counter()
        outcomes = []
        for _ in procs:
            try:
                outcomes.append(results.get(timeout=240))
            except queue.Empty:
                pytest.fail(f"a writer process did not report; exit codes {[p.exitcode for p in procs]}")
        elapsed = time.perf_counter() - t0
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()

    errors = [e for _, _, errs in outcomes for e in errs]
    assert not errors, f"{len(errors)} error(s) in writer processes; first:\n{errors[0]}"
    assert [p.exitcode for p in procs] == [0] * N_PROCS
    assert sum(1 for _, won, _ in outcomes if won) == 1, f"exactly one process holds the lease: {outcomes}"

    store = MetadataStore(store_url)
    try:
        total = N_PROCS * N_STEPS
        assert _count(store, s.step_runs) == total
        assert _count(store, s.step_runs, s.step_runs.c.status == "COMPLETED") == total
        assert _count(store, s.cache_entries) == total
        assert _count(store, s.step_run_artifacts) == total
        assert _count(store, s.artifacts) == N_STEPS
        assert _count(store, s.pipeline_runs, s.pipeline_runs.c.status == "COMPLETED") == N_PROCS
        assert len(store.cache_candidates("key-7", time.time(), limit=100)) == N_PROCS
    finally:
        store.dispose()
    backend = store_url.split(":", 1)[0]
    print(
        f"\n{backend}: {N_PROCS} processes x {N_STEPS} step runs = {total} in {elapsed:.2f}s ({total / elapsed:.0f}/s)"
    )


def _open_store(url: str, results: Any) -> None:
    try:
        store = MetadataStore(url)
        store.create_pipeline_run(_run_row())
        store.dispose()
        results.put(None)
    except Exception:
        results.put(traceback.format_exc())


@pytest.mark.timeout(300)
def test_concurrent_first_open_migrates_once(store_url: str, tmp_path: Path) -> None:
    ctx = _processes()
    results = ctx.Queue()
    procs = [ctx.Process(target=_open_store, args=(store_url, results)) for _ in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert [o for o in outcomes if o] == []
    store = MetadataStore(store_url)
    try:
        assert store.count_runs() == 4
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
                metadata_module.SCHEMA_HEAD
            ]
    finally:
        store.dispose()


def test_ensure_pipeline_run_is_idempotent(metadata_store: MetadataStore) -> None:
    from isthmus.context import derived_run_id

    run_id = derived_run_id("airflow", "my_dag", "manual__2026-01-01")
    assert run_id == derived_run_id("airflow", "my_dag", "manual__2026-01-01")
    assert run_id != derived_run_id("airflow", "my_dag", "manual__2026-01-02")
    row = {"id": run_id, "pipeline": "my_dag", "orchestrator": "airflow", "context": {"dag_id": "my_dag"}}
    assert metadata_store.ensure_pipeline_run(row) is True
    assert metadata_store.ensure_pipeline_run(row) is False
    assert metadata_store.get_run(run_id)["context"] == {"dag_id": "my_dag"}


def test_finish_pipeline_run_can_record_params_redacted(metadata_store: MetadataStore) -> None:
    metadata_store.ensure_pipeline_run({"id": "p-1", "pipeline": "flow", "orchestrator": "flyte"})
    metadata_store.finish_pipeline_run("p-1", "COMPLETED", params={"n": 3, "api_token": "abc123secret"})
    run = metadata_store.get_run("p-1")
    assert run["status"] == "COMPLETED" and run["params"] == {"n": 3, "api_token": "***"}
