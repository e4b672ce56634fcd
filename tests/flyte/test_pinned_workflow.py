"""A promoted artifact as a pipeline parameter's default, run as a Flyte workflow."""

from __future__ import annotations

from isthmus import ArtifactAlias, defaults, pipeline, step


@step
def make(n: int) -> list:
    return list(range(n))


@step
def total(rows: list) -> int:
    return sum(rows)


@pipeline
def produce(n: int = 3):
    return make(n)


@pipeline
def consume(rows=ArtifactAlias("make.output", "prod")):  # noqa: B008 - a pin is an immutable value
    return total(rows)


def test_a_pinned_default_resolves_in_the_flyte_task_and_keys_as_a_local_run() -> None:
    store = defaults.metadata_store()
    v3 = produce.run(n=3).steps["make"].outputs["output"]
    v4 = produce.run(n=4).steps["make"].outputs["output"]
    store.set_alias("make.output", "prod", v3.content_hash)
    local = consume.run()
    assert local.outputs == 3 and not local.steps["total"].cache_hit

    workflow = consume.to_flyte_workflow()
    assert workflow() == 3
    (latest, *_) = store.list_runs(orchestrator="flyte")
    (row,) = store.step_runs_of(latest["id"])
    assert row["cache_hit"] and row["cache_key"] == local.steps["total"].cache_key
    assert row["inputs"]["rows"]["metadata"]["pinned"] == {"alias": "make.output@prod", "version": v3.content_hash}

    store.set_alias("make.output", "prod", v4.content_hash)  # promoted: the next execution reads the new version
    assert workflow() == 6
