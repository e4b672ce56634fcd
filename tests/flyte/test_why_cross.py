"""``isthmus why`` across orchestrators: a Flyte task that hits a result computed by a local run names
that local run as its source."""

from __future__ import annotations

from isthmus import Client
from tests.flyte import flyte_steps as fs


def test_why_a_flyte_hit_names_its_local_source() -> None:
    local = fs.small_pipeline.run(n=4)
    fs.small_pipeline.to_flyte_workflow()(n=4)
    client = Client()
    flyte_run = client.runs(orchestrator="flyte")[0]
    e = client.explain(f"{flyte_run['id']}:total")
    assert e.step_run.orchestrator == "flyte" and e.decision == "hit"
    assert e.source is not None and e.source.orchestrator == "local"
    assert e.source.id == local.steps["total"].step_run_id and e.source.pipeline_run_id == local.id
    assert e.reason.startswith(f"hit: from {e.source.id[:8]} (local run {local.id[:8]}")
