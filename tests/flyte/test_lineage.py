"""OpenLineage from Flyte runs: the core's emitter, fed by the plugin (Flyte has no OpenLineage integration),
sending over openlineage-python's HTTP transport to a Marquez-compatible receiver."""

from __future__ import annotations

from typing import Any

import pytest

from isthmus import defaults, lineage
from tests.flyte import flyte_steps as fs
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


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch):
    """A Marquez-compatible receiver, and a fresh emitter configured (OPENLINEAGE_URL) to send to it."""
    try:
        from isthmus.lineage.openlineage import OpenLineageEmitter
    except ImportError as exc:
        from tests.conftest import skip_or_fail

        skip_or_fail(f"openlineage-python is not installed ({exc}); install the 'lineage' extra")
    r = MarquezReceiver()
    monkeypatch.setenv("OPENLINEAGE_URL", r.url)
    emitter = OpenLineageEmitter()
    lineage.set_lineage_hook(emitter)
    r.emitter = emitter
    yield r
    lineage.set_lineage_hook(None)
    r.close()


def test_flyte_workflow_emits_an_openlineage_run_tree(receiver: MarquezReceiver) -> None:
    fs.small_pipeline.to_flyte_workflow()(n=3)
    with pytest.raises(Exception, match="boom"):
        fs.failing_pipeline.to_flyte_workflow()(n=1)
    assert receiver.emitter.flush(20) and receiver.emitter.failed == 0
    events = receiver.received()
    for event in events:
        schemas.validate_event(event)
    runs = {r["pipeline"]: r["id"] for r in defaults.metadata_store().list_runs(orchestrator="flyte")}
    by_run: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_run.setdefault(e["run"]["runId"], []).append(e)
    assert [e["eventType"] for e in by_run[runs["small_pipeline"]]] == ["START", "COMPLETE"]
    assert [e["eventType"] for e in by_run[runs["failing_pipeline"]]] == ["START", "FAIL"]
    pipeline_start = by_run[runs["small_pipeline"]][0]
    assert pipeline_start["job"]["name"] == "small_pipeline"
    assert pipeline_start["run"]["facets"]["processing_engine"]["name"] == "isthmus/flyte"
    steps = [
        e
        for e in events
        if e["eventType"] == "COMPLETE"
        and e["run"]["facets"].get("parent", {}).get("run", {}).get("runId") == runs["small_pipeline"]
    ]
    assert len(steps) == 4
    for e in steps:
        assert e["run"]["facets"]["isthmus_step"]["codeFingerprint"].startswith("blake3:")
        assert e["run"]["facets"]["processing_engine"]["name"] == "isthmus/flyte"
    # every run: START first, then exactly one terminal event
    for run_events in by_run.values():
        kinds = [e["eventType"] for e in run_events]
        assert kinds[0] == "START" and sum(k in ("COMPLETE", "FAIL", "ABORT") for k in kinds) == 1, kinds
    # the failing step sent FAIL with its error and stack trace, under its pipeline run
    fails = [
        e
        for e in events
        if e["eventType"] == "FAIL" and e["run"]["facets"].get("parent", {}).get("run", {}).get("runId")
    ]
    assert fails and fails[0]["run"]["facets"]["parent"]["run"]["runId"] == runs["failing_pipeline"]
    error = fails[0]["run"]["facets"]["errorMessage"]
    assert "boom" in error["message"] and "Traceback" in error["stackTrace"]
