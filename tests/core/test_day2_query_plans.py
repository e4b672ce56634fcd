"""The day-2 commands read through indexes on SQLite (EXPLAIN QUERY PLAN of every statement they run).

``why``, ``runs show`` and ``diff --last`` never scan a table and never sort more than one run's step
runs; gc reads links and cache entries only by index (its one pass over the artifacts is the point).
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from isthmus import Client
from isthmus.store.metadata import MetadataStore
from tests.helpers import queries_run

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_lineage_gc import fill  # noqa: E402


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MetadataStore, str]]:
    home = tmp_path_factory.mktemp("plans")
    meta = MetadataStore(f"sqlite:///{home}/isthmus.db")
    _raw, newest = fill(meta, 400)
    yield meta, newest
    meta.dispose()


def _plans(meta: MetadataStore, fn: Callable[[], Any]) -> list[tuple[str, list[str]]]:
    """Each SELECT ``fn`` ran, with its query plan lines."""
    seen = queries_run(meta.engine, fn)
    raw = meta.engine.raw_connection()
    try:
        return [
            (statement, [str(row[3]) for row in raw.cursor().execute("EXPLAIN QUERY PLAN " + statement, params)])
            for statement, params in seen
        ]
    finally:
        raw.close()


def _client(meta: MetadataStore) -> Client:
    return Client(metadata=meta, artifacts=None)


@pytest.mark.parametrize(
    "command",
    [
        "why",
        "why by prefix",
        "runs show",
        "diff --last",
        "diff --last-good",
        "runs list",
        "runs list --pipeline",
        "step run by id",
        "step run by prefix",
    ],
)
def test_cli_paths_search_indexes_only(filled: tuple[MetadataStore, str], command: str) -> None:
    meta, newest = filled
    client = _client(meta)
    calls: dict[str, Callable[[], Any]] = {
        "why": lambda: client.explain(f"{newest}:train"),
        "why by prefix": lambda: client.explain(client.step_runs(newest[:8])[-1]["id"][:10]),
        "runs show": lambda: (client.run("latest~1"), client.step_runs("latest"), client.reasons("latest")),
        "diff --last": lambda: client.last_runs("p3", 2),
        "diff --last-good": lambda: meta.latest_runs_of("p3", "COMPLETED", limit=1),
        "runs list": lambda: meta.list_runs(limit=20),
        "runs list --pipeline": lambda: meta.list_runs(limit=20, pipeline="p3", orchestrator="local"),
        "step run by id": lambda: meta.get_step_run(client.step_runs(newest)[0]["id"]),
        "step run by prefix": lambda: meta.get_step_run(client.step_runs(newest)[0]["id"][:9]),
    }
    for statement, plan in _plans(meta, calls[command]):
        for line in plan:
            # the one ordered walk allowed: 'latest~N' reads the started_at index newest first, LIMIT-bound
            # and a pass over 'page', the LIMIT-bound page of runs that 'runs list' counts step runs for
            if line.startswith("SCAN"):
                assert "USING INDEX ix_pipeline_runs_started_at" in line or line == "SCAN page", (line, statement)
            if "TEMP B-TREE" in line:  # sorting is allowed only for the few step runs of one pipeline run
                assert any("(pipeline_run_id=?)" in other for other in plan), (line, statement)


def test_why_nearest_earlier_run_reads_the_step_name_started_at_index(filled: tuple[MetadataStore, str]) -> None:
    meta, newest = filled
    train = [sr for sr in meta.step_runs_of(newest) if sr["step_name"] == "train"][0]
    plans = _plans(meta, lambda: meta.earlier_step_runs("train", train["started_at"], exclude=train["id"]))
    (plan,) = [p for _, p in plans]
    assert any("ix_step_runs_step_name_started_at (step_name=? AND started_at<?)" in line for line in plan), plan
    assert not any("TEMP B-TREE" in line or line.startswith("SCAN") for line in plan), plan


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("prune_cache", [False, True])
@pytest.mark.parametrize("keep_last", [5, 1], ids=["half-kept", "few-kept"])  # 50 or 10 of 100 runs
def test_gc_reads_links_and_cache_entries_by_index(
    filled: tuple[MetadataStore, str], prune_cache: bool, dry_run: bool, keep_last: int
) -> None:
    meta, _newest = filled
    now = 10**10
    fresh = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
    when: dict[str, Any] = {"now": now, "fresh": fresh, "prune_cache": prune_cache}
    when |= {"keep_last": keep_last, "age_cutoff": None}
    plans = _plans(
        meta,
        (lambda: meta.retention_summary(**when, listing=100)) if dry_run else (lambda: meta.retention_plan(**when)),
    )
    lines = [line for _, plan in plans for line in plan]
    # an index built on the fly is allowed only on the candidate set a dry run materializes once
    assert not any("AUTOMATIC" in line and "gc_candidates" not in line for line in lines), lines
    for table in ("step_run_artifacts", "cache_entries"):
        for line in [line for line in lines if table in line.split()]:
            # a dry run counts every cache entry it would drop: one pass along an index is allowed there
            walk = dry_run and prune_cache and table == "cache_entries" and "USING INDEX" in line
            assert line.startswith("SEARCH") or "COVERING INDEX" in line or walk, (table, line)
    assert not any(line.startswith("SCAN artifacts") and "INDEX" not in line for line in lines), lines


@pytest.mark.parametrize("command", ["NAME~N", "NAME~N hash only", "a hash's number", "artifacts list --name"])
def test_artifact_ids_read_the_versions_index(filled: tuple[MetadataStore, str], command: str) -> None:
    """``NAME~N`` and version numbers: the name's versions newest first from the artifact_versions index
    (each checked by the artifacts' key), never its step runs' links, never a sort."""
    from isthmus.artifact_ids import resolve_artifact, resolve_artifact_hash, versions_of

    meta, _newest = filled
    old = versions_of(meta, "train.output")[-2].content_hash
    calls: dict[str, Callable[[], Any]] = {
        "NAME~N": lambda: resolve_artifact(meta, "train.output~3"),
        "NAME~N hash only": lambda: resolve_artifact_hash(meta, "train.output~3"),
        "a hash's number": lambda: resolve_artifact(meta, old),
        "artifacts list --name": lambda: versions_of(meta, "train.output", limit=20),
    }
    plans = _plans(meta, calls[command])
    lines = [line for _, plan in plans for line in plan]
    assert any("ix_artifact_versions_artifact_name_first_at (artifact_name=?" in line for line in lines), lines
    for statement, plan in plans:
        versions = "artifact_versions" in statement  # ordered by the index: never sorted
        for line in plan:
            assert not line.startswith("SCAN") and not (versions and "TEMP B-TREE" in line), (line, statement)
            assert "step_runs" not in line.split(), (line, statement)
            if "step_run_artifacts" in line.split():  # the names of one hash, by its index
                assert "ix_step_run_artifacts_content_hash (content_hash=?)" in line, (line, statement)


@pytest.fixture(scope="module")
def aliased(filled: tuple[MetadataStore, str]) -> tuple[MetadataStore, str, str]:
    """``train.output@production`` in two projects, at the newest run's train output; and that hash."""
    meta, newest = filled
    train = [sr for sr in meta.step_runs_of(newest) if sr["step_name"] == "train"][0]
    (out,) = [x["content_hash"] for x in meta.links_of_step_runs([train["id"]]) if x["role"] == "output"]
    for project in ("team-a", "team-b"):
        meta.set_alias("train.output", "production", out, project=project)
    return meta, newest, str(out)


@pytest.mark.parametrize(
    "command",
    [
        "artifacts history --project",
        "artifacts show NAME@ALIAS --project",
        "artifacts aliases --project",
        "artifacts alias --project",
    ],
)
def test_alias_paths_of_a_project_search_indexes_only(aliased: tuple[MetadataStore, str, str], command: str) -> None:
    from isthmus.aliases import alias_history
    from isthmus.artifact_ids import alias_target

    meta, _newest, out = aliased
    calls: dict[str, Callable[[], Any]] = {
        "artifacts history --project": lambda: alias_history(meta, "train.output@production", "team-a"),
        "artifacts show NAME@ALIAS --project": lambda: alias_target(meta, "train.output", "production", "team-a"),
        "artifacts aliases --project": lambda: meta.list_aliases(frozenset({"team-b"})),
        "artifacts alias --project": lambda: meta.set_alias("train.output", "production", out, project="team-a"),
    }
    for statement, plan in _plans(meta, calls[command]):
        assert plan and all(line.startswith("SEARCH") for line in plan), (plan, statement)
        assert any("project=?" in line for line in plan), (plan, statement)


def test_project_scope_reads_links_and_runs_by_index(aliased: tuple[MetadataStore, str, str]) -> None:
    """What a principal of some projects sees (the web UI): every link, step run and pipeline run by index."""
    from isthmus.artifact_ids import count_versions, versions_of
    from isthmus.governance.scope import step_run_projects, visible_hashes

    meta, newest, out = aliased
    ids = [str(sr["id"]) for sr in meta.step_runs_of(newest)]
    only = frozenset({"team-a"})

    def scoped() -> None:
        visible_hashes(meta, [out], only)
        step_run_projects(meta, ids)
        count_versions(meta, "train.output", projects=only)
        versions_of(meta, "train.output", limit=5, projects=only)

    for statement, plan in _plans(meta, scoped):
        for line in plan:
            if line.startswith("SCAN"):  # the one ordered walk: the newest artifacts, LIMIT-bound
                assert "USING INDEX ix_artifacts_created_at" in line or "COVERING INDEX" in line, (line, statement)


def test_dag_scope_reads_links_and_runs_by_index(aliased: tuple[MetadataStore, str, str]) -> None:
    """What an Airflow user of some DAGs sees (the web UI): the same index walks, the DAG id read from the
    pipeline run found by its primary key."""
    from isthmus.artifact_ids import count_versions, versions_of
    from isthmus.governance.scope import RunScope, visible_hashes, visible_step_runs

    meta, newest, out = aliased
    ids = [str(sr["id"]) for sr in meta.step_runs_of(newest)]
    dags = RunScope(dags=frozenset({"train_dag"}))

    def scoped() -> None:
        visible_hashes(meta, [out], dags)
        visible_step_runs(meta, ids, dags)
        count_versions(meta, "train.output", projects=dags)
        versions_of(meta, "train.output", limit=5, projects=dags)
        meta.list_aliases(dags)

    for statement, plan in _plans(meta, scoped):
        for line in plan:
            if line.startswith("SCAN"):  # the ordered walks: the newest artifacts, the aliases (a small table)
                assert any(i in line for i in ("ix_artifacts_created_at", "COVERING INDEX", "artifact_aliases")), (
                    line,
                    statement,
                )
            else:  # a pipeline run (and its DAG id) by its primary key, never a scan of the runs
                assert line.startswith(("SEARCH", "CORRELATED")), (line, statement)
                assert "pipeline_runs" not in line or "(id=?)" in line, (line, statement)
