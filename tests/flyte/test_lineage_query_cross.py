"""``isthmus lineage`` across orchestrators: a result computed locally and consumed by a local Flyte
workflow shows both orchestrators downstream."""

from __future__ import annotations

from isthmus import Client
from tests.flyte import flyte_steps as fs


def test_downstream_of_a_local_result_reaches_the_flyte_run() -> None:
    local = fs.small_pipeline.run(n=5)
    fs.small_pipeline.to_flyte_workflow()(n=5)
    numbers = local.steps["make_numbers"].outputs["output"].content_hash
    client = Client()
    lin = client.lineage(numbers, direction="downstream")
    assert lin.orchestrators() == ["flyte", "local"]
    flyte_run = client.runs(orchestrator="flyte")[0]
    flyte_total = [s for s in lin.step_runs.values() if s.orchestrator == "flyte" and s.step_name == "total"]
    assert flyte_total and flyte_total[0].pipeline_run_id == flyte_run["id"]
    up = client.lineage(f"{flyte_run['id']}:describe", direction="upstream")
    assert up.orchestrators() == ["flyte", "local"]  # the Flyte hits trace back to the local computation
    assert {s.step_name for s in up.step_runs.values()} >= {"describe", "total", "make_numbers"}
