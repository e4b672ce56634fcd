"""Pipelines and steps as Flyte workflows and tasks, executed by flytekit's real local executor."""

from __future__ import annotations

import typing

import pandas as pd
import pytest
from flytekit import task

from dags_examples import steps
from flytekitplugins.isthmus import Isthmus, IsthmusTask, isthmus_task
from isthmus import defaults
from isthmus.artifacts.refs import ArtifactRef
from isthmus.diff import diff_runs
from isthmus.errors import StepFailed
from tests.flyte import flyte_steps as fs


def _store():
    return defaults.metadata_store()


def _flyte_runs():
    return _store().list_runs(orchestrator="flyte")


def _final_steps(run_id: str) -> dict[str, dict]:
    return {r["invocation"]: r for r in _store().step_runs_of(run_id)}


def _step_runs(step_name: str) -> list[dict]:
    from sqlalchemy import select

    from isthmus.store import schema as s

    store = _store()
    with store.engine.connect() as conn:
        query = select(s.step_runs).where(s.step_runs.c.step_name == step_name).order_by(s.step_runs.c.started_at)
        return [dict(r) for r in conn.execute(query).mappings()]


@pytest.fixture(scope="module")
def ml_workflow():
    return steps.ml_pipeline.to_flyte_workflow()


@pytest.fixture(scope="module")
def small_workflow():
    return fs.small_pipeline.to_flyte_workflow()


def test_local_workflow_records_pipeline_run_and_step_runs_with_flyte_ids(ml_workflow) -> None:
    assert ml_workflow.name == "dags_examples.steps.ml_pipeline"
    assert set(ml_workflow.python_interface.inputs) == {"n_estimators", "seed", "isthmus_cache"}
    metrics = ml_workflow(n_estimators=10)
    assert set(metrics) == {"r2", "mae", "n_test", "top_feature"}

    (run,) = _flyte_runs()
    assert run["pipeline"] == "ml_pipeline"
    assert run["status"] == "COMPLETED"
    assert run["params"] == {"n_estimators": 10, "seed": 0}
    assert run["context"]["execution_id"] == "local:local:local"
    assert run["context"]["local_execution"]
    out = ArtifactRef.coerce(run["outputs"])  # the dict output travelled with its ref
    assert out is not None and defaults.artifact_store().load(out) == metrics

    first = _final_steps(run["id"])
    assert list(first) == ["ingest", "featurize", "train", "evaluate"]
    for inv, sr in first.items():
        assert sr["orchestrator"] == "flyte"
        assert sr["status"] == "COMPLETED" and not sr["cache_hit"]
        native = sr["context"]["native"]
        assert native["execution_id"] == "local:local:local"
        assert native["local_execution"] == run["context"]["local_execution"]
        assert native["task_name"] == f"dags_examples.steps.ml_pipeline.{inv}"
        assert sr["context"]["pipeline_name"] == "ml_pipeline"
        assert sr["attempt"] == 1
    assert first["train"]["params"] == {"n_estimators": 10, "seed": 0}

    # The second execution is a new pipeline run whose steps are all cache hits.
    assert ml_workflow(n_estimators=10) == metrics
    runs = _flyte_runs()
    assert len(runs) == 2
    second = _final_steps(runs[0]["id"])
    assert all(sr["cache_hit"] for sr in second.values())
    assert {inv: sr["source_step_run_id"] for inv, sr in second.items()} == {inv: sr["id"] for inv, sr in first.items()}
    assert runs[0]["status"] == "COMPLETED"
    diff = diff_runs(_store(), runs[1]["id"], runs[0]["id"])
    assert diff["params"] == {}
    assert all(set(entry) == {"cache_hit"} for entry in diff["steps"].values())


@pytest.mark.parametrize("which", ["ml", "small"])
@pytest.mark.parametrize("first", ["local", "flyte"])
def test_cache_is_shared_between_local_and_flyte_runs(which, first, request) -> None:
    pipe, params = (steps.ml_pipeline, {"n_estimators": 10}) if which == "ml" else (fs.small_pipeline, {"n": 4})
    wf = request.getfixturevalue("ml_workflow" if which == "ml" else "small_workflow")

    def run_local():
        run = pipe.run(**params)
        return run.id, run.outputs

    def run_flyte():
        out = wf(**params)
        return _flyte_runs()[0]["id"], out

    runners = {"local": run_local, "flyte": run_flyte}
    second = "flyte" if first == "local" else "local"
    id_a, out_a = runners[first]()
    id_b, out_b = runners[second]()
    steps_a, steps_b = _final_steps(id_a), _final_steps(id_b)
    assert set(steps_a) == set(steps_b)
    assert not any(sr["cache_hit"] for sr in steps_a.values())
    for inv, sr in steps_b.items():
        assert sr["cache_hit"], f"{inv} recomputed under {second}"
        assert sr["source_step_run_id"] == steps_a[inv]["id"]
        assert sr["orchestrator"] == second
        assert steps_a[inv]["orchestrator"] == first
    if which == "ml":
        assert out_a == out_b
    else:  # the dict output: a NamedTuple-like result under Flyte, a dict locally
        flyte_out = out_a if first == "flyte" else out_b
        local_out = out_b if first == "flyte" else out_a
        assert local_out == {"text": "sum=6", "count": 4}
        assert (flyte_out.text, flyte_out.count) == ("sum=6", 4)


def test_small_values_travel_as_flyte_literals_with_their_refs(small_workflow) -> None:
    stats_task = small_workflow.isthmus_tasks["stats"]
    assert dict(stats_task.python_interface.outputs) == {"count": int, "mean": float}
    assert stats_task.python_interface.output_tuple_name == "Stats"
    assert dict(small_workflow.python_interface.outputs) == {"text": str, "count": int}
    assert small_workflow.isthmus_tasks["total"].python_interface.inputs == {
        "numbers": list[int],
        "isthmus_cache": bool,
    }

    out = small_workflow(n=3, label="total")
    assert (out.text, out.count) == ("total=3", 3)
    (run,) = _flyte_runs()
    recorded = _final_steps(run["id"])
    # 'total' got the list as the artifact make_numbers wrote, not as a re-hashed parameter value
    assert recorded["total"]["params"] == {}
    assert (
        recorded["total"]["inputs"]["numbers"]["content_hash"]
        == (recorded["make_numbers"]["outputs"]["output"]["content_hash"])
    )
    assert recorded["describe"]["params"] == {"label": "total"}
    assert set(run["outputs"]) == {"text", "count"}
    assert (
        ArtifactRef.coerce(run["outputs"]["count"]).content_hash
        == (recorded["stats"]["outputs"]["count"]["content_hash"])
    )


def test_failing_step_marks_the_local_pipeline_run_failed() -> None:
    wf = fs.failing_pipeline.to_flyte_workflow()
    with pytest.raises(Exception, match="boom"):
        wf(n=2)
    (run,) = _flyte_runs()
    assert run["status"] == "FAILED"
    assert "boom" in run["error"]
    recorded = _final_steps(run["id"])
    assert recorded["explode"]["status"] == "FAILED"
    assert recorded["total"]["status"] == "COMPLETED"


def test_hand_written_workflow_of_isthmus_tasks() -> None:
    from dags_examples import flyte_ml_pipeline as example

    assert example.train_task.name == "dags_examples.steps.train"
    metrics = example.hand_written(n_estimators=10)
    (run,) = _flyte_runs()
    assert run["pipeline"] == "dags_examples.flyte_ml_pipeline.hand_written"
    recorded = _final_steps(run["id"])
    assert list(recorded) == ["ingest", "featurize", "train", "evaluate"]
    # the same steps through the generated workflow: all hits
    assert steps.ml_pipeline.to_flyte_workflow()(n_estimators=10) == metrics
    assert all(sr["cache_hit"] for sr in _final_steps(_flyte_runs()[0]["id"]).values())


def test_task_called_on_its_own_and_objects_passed_directly() -> None:
    total_task = isthmus_task(fs.total)
    assert total_task(numbers=[1, 2, 3]) == 6
    assert total_task(numbers=[1, 2, 3]) == 6
    first, second = _step_runs("total")
    assert first["orchestrator"] == "flyte" and not first["cache_hit"]
    assert second["cache_hit"] and second["source_step_run_id"] == first["id"]
    assert first["pipeline_run_id"] is None and _flyte_runs() == []  # no workflow, no pipeline run

    # A DataFrame handed to an ArtifactRef input is stored once and hashed like a local run would.
    raw = steps.ingest.fn()
    featurize_task = isthmus_task(steps.featurize)
    ref = featurize_task(raw=raw)
    assert isinstance(ref, ArtifactRef)
    assert isinstance(defaults.artifact_store().load(ref), pd.DataFrame)
    local = steps.featurize.run(raw)
    assert local.cache_hit
    assert local.outputs["output"].content_hash == ref.content_hash


@task(task_config=Isthmus())
def double(x: int, times: int = 2) -> int:
    """Double it."""
    return x * times


def test_task_decorator_with_isthmus_config() -> None:
    assert isinstance(double, IsthmusTask)
    assert double.task_type == "python-task"
    assert dict(double.python_interface.inputs) == {"x": int, "times": int}
    assert dict(double.python_interface.outputs) == {"output": int}
    assert double(x=4) == 8
    assert double(x=4) == 8
    assert [r["cache_hit"] for r in _step_runs("double")] == [False, True]
    local = double.step.run(4)
    assert local.cache_hit and local.value == 8


def test_step_failure_raises_with_the_step_name() -> None:
    explode_task = isthmus_task(fs.explode)
    with pytest.raises(StepFailed, match="step 'explode' failed"):
        explode_task(n=3)
    (run,) = _step_runs("explode")
    assert run["status"] == "FAILED" and "boom" in run["error"]


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def on_pipeline_start(self, run: dict) -> None:
        self.events.append(("pipeline_start", run))

    def on_pipeline_end(self, run: dict) -> None:
        self.events.append(("pipeline_end", run))

    def on_step_start(self, step_run: dict) -> None:
        self.events.append(("step_start", step_run))

    def on_step_end(self, step_run: dict) -> None:
        self.events.append(("step_end", step_run))


def test_lineage_hook_sees_the_pipeline_and_every_step(small_workflow) -> None:
    from isthmus import lineage

    recorder = _Recorder()
    lineage.set_lineage_hook(recorder)
    try:
        small_workflow(n=2)
        with pytest.raises(Exception, match="boom"):
            fs.failing_pipeline.to_flyte_workflow()(n=1)
    finally:
        lineage.set_lineage_hook(None)
    kinds = [k for k, _ in recorder.events]
    assert kinds[0] == "pipeline_start" and kinds.count("pipeline_start") == 2
    ok_run = recorder.events[0][1]
    assert ok_run["orchestrator"] == "flyte" and ok_run["pipeline"] == "small_pipeline"
    ends = [p for k, p in recorder.events if k == "pipeline_end"]
    assert [(e["id"], e["status"]) for e in ends][0] == (ok_run["id"], "COMPLETED")
    assert ends[1]["status"] == "FAILED" and "boom" in ends[1]["error"]
    step_ends = [p for k, p in recorder.events if k == "step_end" and p["pipeline_run_id"] == ok_run["id"]]
    assert sorted(p["invocation"] for p in step_ends) == ["describe", "make_numbers", "stats", "total"]
    assert all(p["context"]["native"]["execution_id"] == "local:local:local" for p in step_ends)


def test_map_task_over_an_isthmus_task() -> None:
    import functools

    from flytekit import map_task, workflow

    mapped = map_task(functools.partial(isthmus_task(fs.describe), label="n"))

    @workflow
    def fan_out(values: list[int]) -> list[str]:
        return mapped(value=values)

    assert fan_out(values=[1, 2, 3]) == ["n=1", "n=2", "n=3"]
    assert fan_out(values=[1, 2, 3]) == ["n=1", "n=2", "n=3"]
    runs = _step_runs("describe")
    assert [r["cache_hit"] for r in runs] == [False] * 3 + [True] * 3
    assert {r["orchestrator"] for r in runs} == {"flyte"}


def test_optional_artifact_inputs() -> None:
    count_task = isthmus_task(fs.count_rows)
    assert set(typing.get_args(count_task.python_interface.inputs["frame"])) == {ArtifactRef, type(None)}
    assert count_task(extra=2) == 2
    assert count_task(frame=pd.DataFrame({"a": [1, 2, 3]}), extra=1) == 4
    local = fs.count_rows.run(pd.DataFrame({"a": [1, 2, 3]}), extra=1)
    assert local.cache_hit


def test_edges_between_disagreeing_types_travel_as_refs_and_type_check() -> None:
    """An unannotated output feeding an int parameter, an int feeding a float: Flyte's compiler compares
    literal types exactly, so such edges become ArtifactRef on both ends (the runner gets a ref anyway)."""
    local = fs.loosely_typed.run(n=2)
    wf = fs.loosely_typed.to_flyte_workflow()
    assert tuple(wf(n=2)) == tuple(local.outputs) == (3.5, "7", 8)
    (run,) = _flyte_runs()
    assert all(sr["cache_hit"] for sr in _final_steps(run["id"]).values())

    def wire(lt) -> bytes:
        idl = lt.to_flyte_idl()
        for name in ("metadata", "structure", "annotation"):
            idl.ClearField(name)
        return idl.SerializeToString(deterministic=True)

    from isthmus.pipeline import OutputHandle, Param

    graph = fs.loosely_typed.compile(n=Param("n"))
    tasks = wf.isthmus_tasks
    for inv, node in graph.nodes.items():
        for arg, handle in node.arguments.items():
            if isinstance(handle, OutputHandle):
                up = tasks[handle.invocation].interface.outputs[handle.output].type
                down = tasks[inv].interface.inputs[arg].type
                assert wire(up) == wire(down), (handle, inv, arg)
    assert tasks["halve"].python_interface.inputs["x"] is ArtifactRef
    assert tasks["plus_one_2"].python_interface.outputs["output"] is int  # its output feeds nothing else
