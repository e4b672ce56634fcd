"""``step.run(...)`` outside a pipeline: recorded under a pipeline run of its own, seen by the CLI."""

from __future__ import annotations

import json

import pytest

from isthmus import pipeline, step
from isthmus.errors import StepFailed
from isthmus.runner import default_runner
from tests.helpers import invoke


@step
def scale(n: int, factor: int = 2) -> int:
    return n * factor


@step
def explode(n: int) -> int:
    raise ValueError(f"cannot take {n}")


@pipeline
def flow():
    return scale(1)


def test_a_step_run_alone_is_a_completed_pipeline_run_named_after_the_step() -> None:
    result = scale.run(3)
    meta = default_runner().metadata
    step_run = meta.get_step_run(result.step_run_id)
    run = meta.get_run(step_run["pipeline_run_id"])
    assert run["pipeline"] == "scale" and run["orchestrator"] == "local"
    assert run["status"] == "COMPLETED" and run["ended_at"] is not None
    assert run["params"] == {"n": 3, "factor": 2}
    assert run["outputs"]["output"]["content_hash"] == result.outputs["output"].content_hash
    assert step_run["invocation"] == "scale"
    assert step_run["context"]["pipeline_name"] == "scale"


def test_a_failing_step_run_alone_is_a_failed_pipeline_run() -> None:
    with pytest.raises(StepFailed) as info:
        explode.run(7)
    meta = default_runner().metadata
    run = meta.get_run(info.value.pipeline_run_id)  # type: ignore[attr-defined]
    assert run["pipeline"] == "explode" and run["status"] == "FAILED"
    assert "cannot take 7" in run["error"]
    assert run["params"] == {"n": 7}


def test_runs_list_show_and_diff_see_step_runs_alone() -> None:
    first = scale.run(3)
    second = scale.run(4)
    code, out = invoke("runs", "list", "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert [r["pipeline"] for r in rows[:2]] == ["scale", "scale"]
    assert rows[0]["steps"] == 1
    code, out = invoke("runs", "show", "latest", "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert [s["id"] for s in shown["steps"]] == [second.step_run_id]
    code, out = invoke("diff", "latest~1", "latest", "--json")
    assert code == 0, out
    d = json.loads(out)
    assert d["params"] == {"n": [3, 4]}
    assert d["steps"]["scale"]["outputs"]["output"] == [
        first.outputs["output"].content_hash,
        second.outputs["output"].content_hash,
    ]


def test_steps_inside_a_pipeline_stay_in_the_pipelines_run() -> None:
    run = flow.run()
    meta = default_runner().metadata
    assert meta.get_step_run(run.steps["scale"].step_run_id)["pipeline_run_id"] == run.id
    assert [r["pipeline"] for r in meta.list_runs(limit=5)] == ["flow"]


@step
def call_api(url: str, api_key: str) -> int:
    return len(url)


def test_a_secret_parameter_of_a_step_run_alone_is_never_recorded_in_its_pipeline_run() -> None:
    secret = "sk-live-7f3a9c2e5b1d"
    result = call_api.run("https://example.org", api_key=secret)
    meta = default_runner().metadata
    run = meta.get_run(meta.get_step_run(result.step_run_id)["pipeline_run_id"])
    assert run["params"] == {"url": "https://example.org", "api_key": "***"}
    assert secret not in json.dumps(run, default=str)
