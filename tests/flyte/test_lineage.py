"""OpenLineage from Flyte runs: the core's emitter, fed by the plugin (Flyte has no OpenLineage integration)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from isthmus import _defaults, lineage
from tests.flyte import flyte_steps as fs
from tests.lineage import schemas


@pytest.fixture(autouse=True)
def _restore_environ():
    """openlineage-python rewrites OPENLINEAGE_URL into OPENLINEAGE__TRANSPORT__… variables in os.environ."""
    import os

    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def file_events(home: Path) -> list[dict[str, Any]]:
    hook = lineage.get_lineage_hook()
    if not hasattr(hook, "flush"):
        from tests.conftest import skip_or_fail

        skip_or_fail("no OpenLineage emitter here (openlineage-python missing or lineage turned off)")
    hook.flush(10)
    path = home / "lineage" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_flyte_workflow_emits_an_openlineage_run_tree(isthmus_home: Path) -> None:
    fs.small_pipeline.to_flyte_workflow()(n=3)
    with pytest.raises(Exception, match="boom"):
        fs.failing_pipeline.to_flyte_workflow()(n=1)
    events = file_events(isthmus_home)
    if schemas.available():
        for event in events:
            schemas.validate_event(event)
    runs = {r["pipeline"]: r["id"] for r in _defaults.metadata_store().list_runs(orchestrator="flyte")}
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
