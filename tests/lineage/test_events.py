"""OpenLineage from local pipelines: schema-valid events, run tree, failures, cache hits, transports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from isthmus import StepDefinitionError, StepFailed, lineage, pipeline, step
from isthmus.lineage.naming import step_run_uuid
from isthmus.lineage.openlineage import OpenLineageEmitter
from tests.lineage import schemas
from tests.lineage.receiver import MarquezReceiver


@pytest.fixture(autouse=True)
def _restore_environ():
    """openlineage-python rewrites OPENLINEAGE_URL into OPENLINEAGE__TRANSPORT__… variables in os.environ."""
    import os

    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@step(owner="ml-team", tags=["demo"])
def load(n: int) -> list:
    return list(range(n))


@step
def total(xs: list) -> int:
    return sum(xs)


@step
def explode(xs: list) -> int:
    raise RuntimeError(f"cannot handle {len(xs)} items")


@pipeline
def flow(n: int = 3):
    return total(load(n))


@pipeline
def failing(n: int = 3):
    return explode(load(n))


def _file_events(home: Path) -> list[dict[str, Any]]:
    lineage.get_lineage_hook().flush(10)
    path = home / "lineage" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _by_run(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        runs.setdefault(e["run"]["runId"], []).append(e)
    return runs


def test_local_runs_emit_schema_valid_events_in_a_tree(isthmus_home: Path) -> None:
    run = flow.run(n=4)
    again = flow.run(n=4)
    events = _file_events(isthmus_home)
    assert len(events) == 12  # (pipeline + 2 steps) x START/COMPLETE x 2 runs
    for event in events:
        schemas.validate_event(event)
    runs = _by_run(events)
    for run_events in runs.values():  # START first, then exactly one terminal event
        assert [e["eventType"] for e in run_events] == ["START", "COMPLETE"]
    # the tree: each step run's parent is its pipeline run
    pipeline_events = [e for e in events if e["job"]["name"] == "flow"]
    assert {e["run"]["runId"] for e in pipeline_events} == {run.id, again.id}
    step_events = [e for e in events if e["job"]["name"] in ("flow.load", "flow.total")]
    for e in step_events:
        parent = e["run"]["facets"]["parent"]
        assert (parent["job"]["namespace"], parent["job"]["name"]) == ("isthmus", "flow")
        assert parent["run"]["runId"] in (run.id, again.id)
    # step facets: fingerprints, cache hits on the second run, datasets with versions
    completes = [e for e in step_events if e["eventType"] == "COMPLETE"]
    hits = {
        e["job"]["name"]: e["run"]["facets"]["isthmus_step"]["cacheHit"]
        for e in completes
        if e["run"]["facets"]["parent"]["run"]["runId"] == again.id
    }
    assert hits == {"flow.load": True, "flow.total": True}
    total_event = next(e for e in completes if e["job"]["name"] == "flow.total")
    (out,) = total_event["outputs"]
    assert (
        out["namespace"] == "file"
        and out["facets"]["version"]["datasetVersion"] == run.steps["total"].outputs["output"].content_hash
    )
    assert (
        total_event["inputs"][0]["facets"]["version"]["datasetVersion"]
        == run.steps["load"].outputs["output"].content_hash
    )
    facets = total_event["run"]["facets"]
    assert facets["processing_engine"]["name"] == "isthmus/local"
    assert facets["isthmus_environment"]["pythonVersion"] and isinstance(
        facets["isthmus_environment"]["dependencies"], dict
    )
    assert facets["isthmus_resources"]["requested"] == {}
    load_event = next(e for e in completes if e["job"]["name"] == "flow.load")
    assert load_event["job"]["facets"]["ownership"]["owners"] == [{"name": "ml-team"}]
    assert load_event["job"]["facets"]["sourceCode"]["language"] == "python"
    assert "return list(range(n))" in load_event["job"]["facets"]["sourceCode"]["sourceCode"]
    assert load_event["job"]["facets"]["jobType"] == {
        **load_event["job"]["facets"]["jobType"],
        "processingType": "BATCH",
        "jobType": "TASK",
    }


def test_failing_step_sends_fail_with_its_error(isthmus_home: Path) -> None:
    with pytest.raises(StepFailed):
        failing.run(n=2)
    events = _file_events(isthmus_home)
    for event in events:
        schemas.validate_event(event)
    fail = [e for e in events if e["eventType"] == "FAIL"]
    assert {e["job"]["name"] for e in fail} == {"failing", "failing.explode"}
    step_fail = next(e for e in fail if e["job"]["name"] == "failing.explode")
    error = step_fail["run"]["facets"]["errorMessage"]
    assert "cannot handle 2 items" in error["message"] and "raise RuntimeError" in error["stackTrace"]
    assert error["programmingLanguage"] == "python"


def test_step_run_ids_are_derived_the_same_way_everywhere() -> None:
    row = {"id": "x", "pipeline_run_id": "6f1c9a52-3b0e-4f7d-9a43-2a6c1d8e5b71", "invocation": "train", "attempt": 2}
    assert step_run_uuid(row) == step_run_uuid(dict(row, id="another-process"))
    assert step_run_uuid(row) != step_run_uuid(dict(row, attempt=3))


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch):
    r = MarquezReceiver()
    monkeypatch.setenv("OPENLINEAGE_URL", r.url)
    yield r
    r.close()


def _fresh_emitter() -> OpenLineageEmitter:
    emitter = OpenLineageEmitter()
    lineage.set_lineage_hook(emitter)
    return emitter


def test_http_transport_to_a_marquez_compatible_receiver(receiver: MarquezReceiver) -> None:
    emitter = _fresh_emitter()
    try:
        run = flow.run(n=5)
        assert emitter.flush(20)
    finally:
        lineage.set_lineage_hook(None)
    assert emitter.failed == 0 and len(receiver.events) == 6
    for event in receiver.events:
        schemas.validate_event(event)
    order: dict[str, list[str]] = {}
    for e in receiver.events:
        order.setdefault(e["run"]["runId"], []).append(e["eventType"])
    assert all(v == ["START", "COMPLETE"] for v in order.values())
    assert run.id in order


@pytest.mark.parametrize("trouble", ["down", "error-500"])
def test_a_broken_receiver_never_fails_the_pipeline(
    trouble: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if trouble == "down":
        import socket

        with socket.socket() as s:  # a port with nothing listening
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{port}")
        server = None
    else:
        server = MarquezReceiver(status=500)
        monkeypatch.setenv("OPENLINEAGE_URL", server.url)
    emitter = _fresh_emitter()
    try:
        with caplog.at_level("WARNING", logger="isthmus.lineage"):
            run = flow.run(n=6)
            assert emitter.flush(60)
    finally:
        lineage.set_lineage_hook(None)
        if server:
            server.close()
    assert run.status == "COMPLETED" and run.outputs == 15
    assert emitter.failed == 6 and emitter.sent == 0
    warnings = [r for r in caplog.records if r.name == "isthmus.lineage"]
    assert len(warnings) == 1 and "runs go on" in warnings[0].getMessage()


def test_lineage_can_be_turned_off(isthmus_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    lineage.set_lineage_hook(None)
    try:
        flow.run(n=2)
        assert isinstance(lineage.get_lineage_hook(), lineage.NoopLineage)
    finally:
        lineage.set_lineage_hook(None)
    assert not (isthmus_home / "lineage" / "events.jsonl").exists()


@step(
    lineage_inputs=["postgres://db.internal:5432/shop.public.orders"],
    lineage_outputs=[("s3://reports", "daily/summary.csv")],
)
def summarize(n: int) -> int:
    return n * 2


@step(enable_lineage=False)
def quiet(n: int) -> int:
    return n


@pipeline
def external(n: int = 1):
    return quiet(summarize(n))


def test_declared_external_datasets_join_the_graph_and_steps_can_opt_out(isthmus_home: Path) -> None:
    external.run(n=3)
    events = _file_events(isthmus_home)
    for event in events:
        schemas.validate_event(event)
    names = {e["job"]["name"] for e in events}
    assert "external.quiet" not in names and "external.summarize" in names
    complete = next(e for e in events if e["job"]["name"] == "external.summarize" and e["eventType"] == "COMPLETE")
    assert {"namespace": "postgres://db.internal:5432", "name": "shop.public.orders"}.items() <= complete["inputs"][
        0
    ].items()
    assert any(o["namespace"] == "s3://reports" and o["name"] == "daily/summary.csv" for o in complete["outputs"])


def test_external_dataset_without_a_scheme_is_rejected_at_definition() -> None:
    with pytest.raises(StepDefinitionError, match="needs a scheme"):

        @step(lineage_inputs=["orders"])
        def bad(x: int) -> int:
            return x


def test_credentials_in_a_declared_dataset_never_reach_its_name() -> None:
    """A URL's password, a token used as its user and a presigned query are credentials, not a dataset's
    namespace or name (OpenLineage names a Postgres table ``postgres://host:port`` + ``db.schema.table``)."""
    pw = "".join(["db", "-pw-", "7731"])  # (not a literal: the source of this test is no secret store)

    @step(
        lineage_inputs=[
            f"postgres://etl:{pw}@db.internal:5432/shop.public.orders",
            "https://ghp_aaaaBBBBccccDDDDeeeeFFFFgggg12345678@github.com/org/repo",
            "s3://bucket/key.csv?X-Amz-Signature=abcdef0123&X-Amz-Security-Token=zz",
            (f"postgres://etl:{pw}@db.internal:5432", "shop.public.customers"),
        ],
        lineage_outputs=["abfss://container@account.dfs.core.windows.net/out/x"],
    )
    def reads(n: int) -> int:
        return n

    assert list(reads.lineage_inputs) == [
        ("postgres://db.internal:5432", "shop.public.orders"),
        ("https://github.com", "org/repo"),
        ("s3://bucket", "key.csv"),
        ("postgres://etl:***@db.internal:5432", "shop.public.customers"),
    ]
    assert list(reads.lineage_outputs) == [("abfss://container@account.dfs.core.windows.net", "out/x")]
