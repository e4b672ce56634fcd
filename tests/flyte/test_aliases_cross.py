"""Artifact ids, promote/rollback and invalidate over step runs recorded by a local Flyte workflow and a
local run of the same pipeline."""

from __future__ import annotations

from isthmus import Client
from tests.flyte import flyte_steps as fs


def _hits(client: Client) -> dict[str, bool]:
    run = client.runs(orchestrator="flyte")[0]
    return {sr["invocation"]: bool(sr["cache_hit"]) for sr in client.step_runs(run["id"])}


def test_promote_rollback_and_invalidate_across_local_and_flyte() -> None:
    local = fs.small_pipeline.run(n=4)
    fs.small_pipeline.to_flyte_workflow()(n=5)
    client = Client()
    local_v = local.steps["make_numbers"].outputs["output"].content_hash
    flyte_v = client.artifact("make_numbers.output").content_hash  # the newest version: Flyte's
    assert flyte_v != local_v and client.artifact("make_numbers.output~1").content_hash == local_v

    client.promote("make_numbers.output@production", "make_numbers.output~1", reason="local run checked")
    client.promote("make_numbers.output@production", "make_numbers.output", via="flyte")
    assert client.rollback("make_numbers.output@production").to_hash == local_v
    assert [h.via for h in client.alias_history("make_numbers.output@production")] == ["api", "flyte", "api"]

    # the Flyte execution's dataset was bad: its derived Flyte step runs are dropped, the local ones kept
    result = client.invalidate("make_numbers.output")
    assert {sr.invocation for sr in result.step_runs} == {"total", "stats", "describe"}
    assert {sr.orchestrator for sr in result.step_runs} == {"flyte"}
    fs.small_pipeline.to_flyte_workflow()(n=5)
    assert _hits(client) == {"make_numbers": True, "total": False, "stats": False, "describe": False}
    assert all(fs.small_pipeline.run(n=4).steps[k].cache_hit for k in ("total", "stats", "describe"))
