"""Two steps produce the same bytes: one content hash, one ``artifacts`` row whose producer is the first
step run that recorded it. An artifact named by NAME (``split.train``, ``~N``, ``@alias``, ``@latest``)
is still that name's version: its producer is the step run that output it under that name, ``lineage``
starts there, ``artifacts list`` counts that name's uses; ``why`` names the producer of an input in the
consumer's own pipeline run (a cache hit there included). A bare hash names bytes: its first producer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from isthmus import Client, config, pipeline, step
from tests.helpers import invoke, queries_run


@step
def make(n: int) -> list:
    return [2 * i for i in range(n)]


@step(outputs=["train", "test"])
def split(xs: list) -> tuple:
    half = len(xs) // 2
    return xs[:half], xs[half:]


@step
def score(train: list, test: list) -> int:
    return sum(train) - sum(test)


@pipeline
def scored(n: int = 3):
    train, test = split(make(n))
    return score(train, test)


@dataclass(frozen=True)
class Runs:
    """Run 1 (n=3) makes [0, 2, 4]; run 2 (n=6) splits [0, 2, 4] off as its train: one hash, two names."""

    shared: str  # run 1's make.output = run 2's split.train
    run1: str
    run2: str
    make1: str
    split1: str
    make2: str
    split2: str
    score2: str


@pytest.fixture
def runs(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Runs:
    """The two runs, on SQLite and on PostgreSQL."""
    monkeypatch.setenv("ISTHMUS_STORE_URL", store_url)
    config.reset()
    return _two_runs()


def _two_runs() -> Runs:
    first, second = scored.run(n=3), scored.run(n=6)
    shared = first.steps["make"].outputs["output"].content_hash
    assert second.steps["split"].outputs["train"].content_hash == shared
    assert not any(r.cache_hit for r in [*first.steps.values(), *second.steps.values()])
    return Runs(
        shared=shared,
        run1=first.id,
        run2=second.id,
        make1=first.steps["make"].step_run_id,
        split1=first.steps["split"].step_run_id,
        make2=second.steps["make"].step_run_id,
        split2=second.steps["split"].step_run_id,
        score2=second.steps["score"].step_run_id,
    )


def test_an_artifact_named_by_name_is_produced_by_that_names_step_run(runs: Runs) -> None:
    client = Client()
    client.promote("split.train@prod", "split.train")
    for ref in ("split.train", "split.train~0", "split.train@latest", "split.train@prod"):
        found = client.artifact(ref)
        assert (found.content_hash, found.name, found.producer_step_run_id) == (runs.shared, "split.train", runs.split2)
    assert client.artifact("make.output~1").producer_step_run_id == runs.make1
    for ref in (runs.shared, runs.shared.split(":", 1)[1][:12]):  # a hash names bytes: their first producer
        found = client.artifact(ref)
        assert found.producer_step_run_id == runs.make1 and found.names == ["make.output", "split.train"]


def test_an_alias_records_the_producer_under_its_own_name(runs: Runs) -> None:
    client = Client()
    client.promote("split.train@prod", runs.shared)  # by hash: still split.train's version
    client.promote("make.output@prod", "make.output~1")
    recorded = {a["name"]: a["step_run_id"] for a in client.aliases()}
    assert recorded == {"split.train": runs.split2, "make.output": runs.make1}


def test_listing_a_name_shows_its_producer_and_counts_its_uses(runs: Runs) -> None:
    client = Client()
    (newest, older) = client.artifact_versions("split.train")
    assert newest["content_hash"] == runs.shared and newest["producer_step_run_id"] == runs.split2
    assert older["producer_step_run_id"] == runs.split1 and older["used_by"] == 2  # split 1 made it, score 1 took it
    # the step runs that took these bytes (split 1 as xs, score 2 as train) and split 2, which made them so:
    # not make 1, which produced the same bytes under another name
    assert newest["used_by"] == 3
    shared_make = [r for r in client.artifact_versions("make.output") if r["content_hash"] == runs.shared]
    assert [(r["producer_step_run_id"], r["used_by"]) for r in shared_make] == [(runs.make1, 3)]
    every = {(r["name"], r["producer_step_run_id"], r["used_by"]) for r in client.artifact_versions()}
    assert {("split.train", runs.split2, 3), ("make.output", runs.make1, 3)} <= every

    code, out = invoke("artifacts", "list", "--name", "split.train", "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert [(r["id"], r["producer_step_run_id"], r["used_by"]) for r in rows][0] == ("split.train", runs.split2, 3)


def test_lineage_upstream_of_a_name_starts_at_its_producer(runs: Runs) -> None:
    client = Client()
    lin = client.lineage("split.train", direction="upstream")
    assert {(s.id, s.depth) for s in lin.step_runs.values()} == {(runs.split2, 1), (runs.make2, 2)}
    assert client.lineage("make.output~1", direction="upstream").step_runs.keys() == {runs.make1}
    assert client.lineage(runs.shared, direction="upstream").step_runs.keys() == {runs.make1}  # a hash: bytes

    code, out = invoke("lineage", "split.train", "--upstream", "--json")
    assert code == 0, out
    assert {s["id"] for s in json.loads(out)["step_runs"]} == {runs.split2, runs.make2}


def _train_change(client: Client, step_run: str) -> Any:
    (change,) = [c for c in client.explain(step_run).changes if c.component == "inputs" and c.name == "train"]
    return change


def test_why_names_the_producer_of_an_input_in_the_consumers_run(runs: Runs) -> None:
    change = _train_change(Client(), f"{runs.run2}:score")
    assert change.new == runs.shared
    assert (change.produced_by["new"].id, change.produced_by["old"].id) == (runs.split2, runs.split1)

    code, out = invoke("why", "latest:score")
    assert code == 0, out
    assert f"now from split {runs.split2[:8]} (was from split {runs.split1[:8]})" in out
    assert runs.make1[:8] not in out
    code, out = invoke("why", "latest:score", "--json")
    (data,) = [c for c in json.loads(out)["changes"] if c["name"] == "train"]
    assert data["produced_by"]["new"]["id"] == runs.split2


def test_why_counts_a_cache_hit_as_the_producer_in_its_run(runs: Runs) -> None:
    again = scored.run(n=3)  # every step a hit of run 1
    forced = scored.run(n=6, recompute=["score"])  # make and split hits of run 2, score computed
    assert again.steps["split"].cache_hit and forced.steps["split"].cache_hit
    change = _train_change(Client(), f"{forced.id}:score")
    assert change.produced_by["new"].id == forced.steps["split"].step_run_id  # not split 2, not make 1
    assert change.produced_by["old"].id == again.steps["split"].step_run_id
    assert change.produced_by["new"].cache_hit


def test_a_bare_hash_input_without_a_producer_in_its_run_names_the_first_producer(runs: Runs) -> None:
    from isthmus.explain import key_changes

    store = Client().metadata
    old, new = store.get_step_run(runs.split1), store.get_step_run(runs.split2)
    old = {**old, "pipeline_run_id": None}  # a step run of no pipeline run: the first producer anywhere
    (change,) = [c for c in key_changes(store, old, new) if c.component == "inputs"]  # type: ignore[arg-type]
    assert (change.produced_by["old"].id, change.produced_by["new"].id) == (runs.make1, runs.make2)


def test_artifacts_show_json_names_the_producer_under_the_name(runs: Runs) -> None:
    code, out = invoke("artifacts", "show", "split.train", "--json")
    assert code == 0, out
    assert json.loads(out)["artifact"]["producer_step_run_id"] == runs.split2


def test_artifacts_show_prints_the_producer_under_the_name(runs: Runs) -> None:
    code, out = invoke("artifacts", "show", "split.train")
    assert code == 0, out
    assert f"step split (step run {runs.split2}" in out


def _plan_lines(client: Client, fn: Callable[[], Any]) -> list[str]:
    """The SQLite query plan lines of every SELECT ``fn`` ran."""
    raw = client.metadata.engine.raw_connection()
    try:
        return [
            str(row[3])
            for statement, params in queries_run(client.metadata.engine, fn)
            for row in raw.cursor().execute("EXPLAIN QUERY PLAN " + statement, params)
        ]
    finally:
        raw.close()


@pytest.mark.parametrize(
    "command", ["artifacts show NAME", "artifacts list --name", "artifacts list", "lineage", "why"]
)
def test_the_producer_and_uses_of_a_name_are_read_by_index(command: str) -> None:
    runs = _two_runs()  # on the SQLite store of this test's home
    client = Client()
    calls: dict[str, Callable[[], Any]] = {
        "artifacts show NAME": lambda: client.artifact("split.train"),
        "artifacts list --name": lambda: client.artifact_versions("split.train"),
        "artifacts list": lambda: client.artifact_versions(),
        "lineage": lambda: client.lineage("split.train", direction="upstream"),
        "why": lambda: client.explain(f"{runs.run2}:score"),
    }
    lines = _plan_lines(client, calls[command])
    for line in lines:
        if "step_run_artifacts" in line.split() or "step_runs" in line.split():
            assert line.startswith("SEARCH"), (command, line)
    if command != "why":  # why sorts the few output links of one hash (as it always did)
        assert not any("TEMP B-TREE FOR ORDER BY" in line for line in lines), (command, lines)
