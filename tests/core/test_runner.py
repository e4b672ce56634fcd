"""The StepRunner and local pipelines: caching, invalidation, retries, failures, outputs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

import isthmus
from isthmus import CachePolicy, StepFailed, pipeline, step
from isthmus.runner import default_runner

CALLS: list[str] = []


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


@step
def load(n: int) -> pd.DataFrame:
    CALLS.append("load")
    return pd.DataFrame({"x": np.arange(n, dtype="float64"), "y": np.arange(n, dtype="float64") * 2})


@step
def total(df: pd.DataFrame, column: str = "y") -> float:
    CALLS.append("total")
    return float(df[column].sum())


class Split(NamedTuple):
    train: pd.DataFrame
    test: pd.DataFrame


@step
def split(df: pd.DataFrame, frac: float = 0.5) -> Split:
    CALLS.append("split")
    cut = int(len(df) * frac)
    return Split(df.iloc[:cut], df.iloc[cut:])


@step
def minmax(df: pd.DataFrame) -> tuple[float, float]:
    CALLS.append("minmax")
    return float(df["x"].min()), float(df["x"].max())


@pipeline
def flow(n: int = 10, column: str = "y"):
    df = load(n)
    parts = split(df)
    lo, hi = minmax(parts.test)
    return {"total": total(df, column=column), "lo": lo, "hi": hi}


def test_step_outside_pipeline_is_a_plain_call() -> None:
    assert total(pd.DataFrame({"y": [1.0, 2.0]})) == 3.0
    assert isinstance(load(3), pd.DataFrame)


def test_second_run_is_all_cache_hits() -> None:
    first = flow.run(n=10)
    assert first.status == "COMPLETED"
    assert first.outputs == {"total": 90.0, "lo": 5.0, "hi": 9.0}
    assert not any(s.cache_hit for s in first.steps.values())
    CALLS.clear()
    second = flow.run(n=10)
    assert second.outputs == first.outputs
    assert all(s.cache_hit for s in second.steps.values())
    assert CALLS == []
    for name, s in second.steps.items():
        assert s.source_step_run_id == first.steps[name].step_run_id


def test_changing_a_parameter_reruns_only_downstream_steps() -> None:
    flow.run(n=10)
    CALLS.clear()
    run = flow.run(n=10, column="x")
    assert {k: v.cache_hit for k, v in run.steps.items()} == {
        "load": True,
        "split": True,
        "minmax": True,
        "total": False,
    }
    assert CALLS == ["total"]
    assert run.outputs["total"] == 45.0


def test_multiple_outputs_are_separate_artifacts() -> None:
    run = flow.run(n=10)
    assert set(run.steps["split"].outputs) == {"train", "test"}
    assert set(run.steps["minmax"].outputs) == {"output_0", "output_1"}
    assert run.steps["split"].load("train").shape == (5, 2)
    assert run.steps["minmax"].value == (5.0, 9.0)


def test_cache_disabled_always_recomputes() -> None:
    @step(cache=False)
    def noisy(x: int) -> int:
        CALLS.append("noisy")
        return x

    default_runner().run(noisy, {"x": 1})
    r2 = default_runner().run(noisy, {"x": 1})
    assert CALLS == ["noisy", "noisy"] and not r2.cache_hit and r2.cache_key is None


def test_ignore_inputs_and_version_salt() -> None:
    @step(cache=CachePolicy(ignore_inputs=["verbose"]))
    def f(x: int, verbose: bool = False) -> int:
        CALLS.append("f")
        return x * 2

    @step(cache=CachePolicy(version="2"))
    def g(x: int) -> int:
        CALLS.append("g")
        return x * 2

    runner = default_runner()
    runner.run(f, {"x": 1, "verbose": False})
    assert runner.run(f, {"x": 1, "verbose": True}).cache_hit
    a = runner.run(g, {"x": 1})
    assert a.cache_key != runner.run(f, {"x": 1, "verbose": False}).cache_key


def test_expired_entries_are_recomputed() -> None:
    @step(cache=CachePolicy(expires_after=0.3))
    def short_lived(x: int) -> int:
        CALLS.append("short")
        return x

    runner = default_runner()
    runner.run(short_lived, {"x": 1})
    assert runner.run(short_lived, {"x": 1}).cache_hit
    time.sleep(0.4)
    assert not runner.run(short_lived, {"x": 1}).cache_hit
    assert CALLS == ["short", "short"]


def _object_path(run: isthmus.PipelineRun, step_name: str) -> Path:
    ref = next(iter(run.steps[step_name].outputs.values()))
    return Path(ref.uri.removeprefix("file://"))


def test_deleted_artifact_turns_a_hit_into_a_recompute() -> None:
    first = flow.run(n=10)
    _object_path(first, "load").unlink()
    CALLS.clear()
    second = flow.run(n=10)
    assert not second.steps["load"].cache_hit
    assert "load" in CALLS
    # identical content again: downstream keys are unchanged, so they stay hits
    assert second.steps["total"].cache_hit
    assert second.outputs == first.outputs


def test_corrupt_artifact_bytes_are_detected_and_recomputed() -> None:
    first = flow.run(n=10)
    path = _object_path(first, "load")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    path.write_bytes(bytes(data))
    isthmus.configure()  # a new process would not remember earlier verifications either
    CALLS.clear()
    second = flow.run(n=10)
    assert not second.steps["load"].cache_hit
    assert "load" in CALLS
    assert second.outputs == first.outputs
    assert path.read_bytes() != bytes(data)  # the good bytes are back


def test_retries_record_each_attempt() -> None:
    attempts: list[int] = []

    @step(retries=2)
    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) < 3:
            raise RuntimeError(f"transient failure {len(attempts)}")
        return x

    runner = default_runner()
    result = runner.run(flaky, {"x": 7})
    assert result.status == "COMPLETED" and len(attempts) == 3
    from sqlalchemy import select

    from isthmus.store import schema

    with runner.metadata.engine.connect() as conn:
        rows = conn.execute(
            select(schema.step_runs.c.status, schema.step_runs.c.attempt, schema.step_runs.c.error).order_by(
                schema.step_runs.c.attempt
            )
        ).all()
    assert [(r[0], r[1]) for r in rows] == [("RETRY", 1), ("RETRY", 2), ("COMPLETED", 3)]
    assert "transient failure 1" in rows[0][2]


def test_failing_step_fails_the_pipeline_and_records_the_error() -> None:
    @step
    def boom(df: pd.DataFrame) -> int:
        raise ValueError("bad data in column y")

    @pipeline
    def failing():
        return boom(load(3))

    with pytest.raises(StepFailed, match="bad data in column y") as info:
        failing.run()
    meta = default_runner().metadata
    run = meta.get_run("latest")
    assert run["status"] == "FAILED" and "bad data" in run["error"]
    steps = {s["invocation"]: s for s in meta.step_runs_of(run["id"])}
    assert steps["load"]["status"] == "COMPLETED"
    assert steps["boom"]["status"] == "FAILED"
    assert "ValueError: bad data in column y" in steps["boom"]["error"]
    assert "raise ValueError" in steps["boom"]["traceback"]
    assert info.value.step_run_id == steps["boom"]["id"]
    assert meta.list_cache_entries(step_name="boom") == []


def test_unserializable_output_is_a_clear_error_and_nothing_is_cached() -> None:
    import threading

    @step
    def makes_lock() -> object:
        return threading.Lock()

    with pytest.raises(StepFailed) as info:
        default_runner().run(makes_lock, {})
    msg = str(info.value)
    assert "makes_lock" in msg and "output" in msg and "register_materializer" in msg
    assert default_runner().metadata.list_cache_entries(step_name="makes_lock") == []


def test_records_fingerprints_environment_and_resources() -> None:
    run = flow.run(n=4)
    meta = default_runner().metadata
    sr = meta.get_step_run(run.steps["load"].step_run_id)
    assert sr["code_hash"].startswith("blake3:") and sr["deps_hash"].startswith("blake3:")
    assert "pandas" in sr["deps"] and "numpy" in sr["deps"]
    snap = meta.get_code_snapshot(sr["code_hash"])
    assert 'CALLS.append("load")' in snap["sources"]["load"]
    env = meta.get_environment(sr["environment_hash"])
    assert env["python"]["version"] and env["platform"]["machine"] and env["packages"]["pandas"]
    assert env["host"] and "git" in env
    assert sr["params"] == {"n": 4} and sr["context"]["orchestrator"] == "local"


def test_resources_and_context_are_recorded() -> None:
    from isthmus import Resources, RunContext

    @step(resources=Resources(cpu=2, memory="4Gi", gpu=1, gpu_type="A100", partition="gpu"))
    def gpu_step(x: int) -> int:
        return x

    ctx = RunContext(
        orchestrator="airflow", invocation="t1", attempt=2, native={"dag_id": "d", "run_id": "r", "map_index": 3}
    )
    result = default_runner().run(gpu_step, {"x": 1}, ctx)
    sr = default_runner().metadata.get_step_run(result.step_run_id)
    assert sr["resources"] == {"cpu": 2.0, "memory": 4 * 1024**3, "gpu": 1, "gpu_type": "A100", "partition": "gpu"}
    assert sr["context"]["native"] == {"dag_id": "d", "run_id": "r", "map_index": 3}
    assert sr["attempt"] == 2 and sr["invocation"] == "t1" and sr["orchestrator"] == "airflow"


def test_literal_objects_become_input_artifacts() -> None:
    df = pd.DataFrame({"y": [1.0, 2.0, 3.0]})
    r1 = total.run(df)
    assert r1.value == 6.0
    r2 = total.run(df.copy())
    assert r2.cache_hit
    r3 = total.run(pd.DataFrame({"y": [1.0, 2.0, 4.0]}))
    assert not r3.cache_hit


def test_artifact_store_dedups_identical_outputs() -> None:
    @step
    def const(tag: str) -> list:
        return [1, 2, 3]

    runner = default_runner()
    a = runner.run(const, {"tag": "a"})
    b = runner.run(const, {"tag": "b"})
    assert not b.cache_hit and a.outputs["output"].uri == b.outputs["output"].uri
    objects = [p for p in Path(runner.artifacts.root, "objects").rglob("*") if p.is_file()]
    assert len(objects) == 1
    assert os.listdir(Path(runner.artifacts.root, ".tmp")) == []


def test_nested_handles_and_branching_on_outputs_are_rejected() -> None:
    @pipeline
    def nested():
        df = load(3)
        return total({"df": df})

    with pytest.raises(isthmus.StepDefinitionError, match="nests step outputs"):
        nested.run()

    @pipeline
    def branching():
        df = load(3)
        if df:
            return total(df)
        return None

    with pytest.raises(isthmus.StepDefinitionError, match="no value while the pipeline is being built"):
        branching.run()


def test_interrupted_step_is_recorded_as_aborted_and_not_cached() -> None:
    @step
    def interrupted(x: int) -> int:
        raise KeyboardInterrupt

    @pipeline
    def p():
        return interrupted(1)

    with pytest.raises(KeyboardInterrupt):
        p.run()
    meta = default_runner().metadata
    run = meta.get_run("latest")
    assert run["status"] == "ABORTED"
    (sr,) = meta.step_runs_of(run["id"])
    assert sr["status"] == "ABORTED" and sr["error"] == "KeyboardInterrupt"
    assert meta.list_cache_entries(step_name="interrupted") == []
    assert meta.lease_holder(sr["cache_key"]) is None


def test_wrong_number_of_outputs_is_not_retried() -> None:
    calls = []

    @step(retries=3)
    def two() -> tuple[int, int]:
        calls.append(1)
        return 1  # type: ignore[return-value]

    with pytest.raises(StepFailed, match="declares 2 outputs"):
        default_runner().run(two, {})
    assert len(calls) == 1


def test_pipeline_run_records_its_environment() -> None:
    run = flow.run(n=3)
    meta = default_runner().metadata
    record = meta.get_run(run.id)
    assert record["environment_hash"] == meta.get_step_run(run.steps["load"].step_run_id)["environment_hash"]
    assert meta.get_environment(record["environment_hash"])["python"]["version"]


def test_a_list_of_artifacts_is_one_input_of_several_artifacts() -> None:
    @step
    def part(i: int) -> list:
        return [i] * i

    @step
    def merge(parts: list) -> list:
        CALLS.append("merge")
        return [x for p in parts for x in p]

    runner = default_runner()
    refs = [runner.run(part, {"i": i}).outputs["output"] for i in (1, 2, 3)]
    first = runner.run(merge, {"parts": refs})
    assert first.value == [1, 2, 2, 3, 3, 3]
    assert runner.run(merge, {"parts": [r.to_dict() for r in refs]}).cache_hit  # refs as JSON (XCom) too
    assert not runner.run(merge, {"parts": list(reversed(refs))}).cache_hit  # order matters
    sr = runner.metadata.get_step_run(first.step_run_id)
    assert set(sr["inputs"]) == {"parts[0]", "parts[1]", "parts[2]"}
