"""isthmus steps as Flyte 2 tasks, run by Flyte 2's real local executor (``flyte.run`` / ``flyte run
--local``): recorded, closed, cached across orchestrators (local, flytekit, Flyte 2), resources mapped."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import flyte
import pytest

from isthmus import Resources, defaults, step
from isthmus.errors import StepDefinitionError
from isthmus_flyte2 import flyte2_resources, isthmus_task
from isthmus_flyte2.resolver import IsthmusResolver
from tests.conftest import skip_or_fail
from tests.flyte import flyte_steps as fs
from tests.flyte2 import f2_steps

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = "dags_examples/flyte2_ml_pipeline.py"


@pytest.fixture(scope="module", autouse=True)
def _flyte_init() -> None:
    flyte.init()


def _store():
    return defaults.metadata_store()


def _runs(orchestrator: str = "flyte2") -> list[dict]:
    return _store().list_runs(orchestrator=orchestrator)


def _steps(run_id: str) -> dict[str, dict]:
    return {sr["invocation"]: sr for sr in _store().step_runs_of(run_id)}


# -- in process ------------------------------------------------------------------------------------
def test_a_flyte2_run_records_and_closes_its_run(caplog: pytest.LogCaptureFixture) -> None:
    assert flyte.run(f2_steps.summed, n=4).outputs()[0] == 6
    (run,) = _runs()
    assert run["pipeline"] == "tests_f2" and run["status"] == "COMPLETED" and run["steps"] == 2
    native = _steps(run["id"])["total"]["context"]["native"]
    assert native["mode"] == "local" and native["task_name"] == "tests_f2.total" and native["run_name"]
    lines = [r.getMessage() for r in caplog.records if r.name == "isthmus_flyte2.summary"]
    assert lines == [
        f"isthmus make_numbers: computed in {lines[0].split('computed in ')[1].split(' s')[0]} s "
        f"(step run {_steps(run['id'])['make_numbers']['id'][:8]}); run {run['id']}",
        lines[1],
    ]
    assert lines[1].startswith("isthmus total: computed in ") and lines[1].endswith(f"; run {run['id']}")

    # an async driver calling the tasks with .aio; a step with several outputs
    assert tuple(flyte.run(f2_steps.async_summed, n=4).outputs()) == (4, 1.5)
    latest = _runs()[0]
    assert latest["status"] == "COMPLETED" and latest["hits"] == 1  # make_numbers(4): a hit


def test_a_failing_step_marks_the_flyte2_run_failed() -> None:
    with pytest.raises(Exception, match="boom"):
        flyte.run(f2_steps.failing, n=2)
    (run,) = _runs()
    assert run["status"] == "FAILED"
    assert run["error"].startswith("step 'explode' failed: RuntimeError: boom")


def test_resources_map_to_flyte2_resources() -> None:
    task = isthmus_task(fs.plain_gpu_step, env=flyte.TaskEnvironment(name="res1"))
    res = task.resources
    assert res.cpu == ("2", "2") and res.memory == ("512Mi", "512Mi")
    assert res.gpu.device == "T4" and res.gpu.quantity == 1 and res.gpu.partition is None

    gpu = isthmus_task(fs.gpu_step, env=flyte.TaskEnvironment(name="res2"))
    assert gpu.resources.cpu == ("500m", "500m") and gpu.resources.memory == ("3Gi", "3Gi")
    assert gpu.resources.gpu.device == "A100" and gpu.resources.gpu.quantity == 2
    assert gpu.timeout == dt.timedelta(hours=2)
    assert gpu.pod_template.pod_spec.node_selector == {"pool": "gpu"}
    env = flyte.TaskEnvironment(name="res3")
    assert env.tasks == {}
    mig = flyte2_resources(Resources(gpu=1, gpu_type="A100:1g.5gb"))
    assert (mig.gpu.device, mig.gpu.partition) == ("A100", "1g.5gb")
    assert flyte2_resources(Resources(gpu=1, gpu_type="nvidia-a100-80gb")).gpu.device == "A100_80G"
    assert flyte2_resources(Resources()) is None
    with pytest.raises(StepDefinitionError, match=r"^step: gpu_type='Z80' \(gpu=1\) is no Flyte 2 GPU: "):
        flyte2_resources(Resources(gpu=1, gpu_type="Z80"))


def test_the_resolver_rebuilds_the_task() -> None:
    resolver = IsthmusResolver()
    args = resolver.loader_args(f2_steps.total, REPO)
    assert args == ["step", "tests.flyte.flyte_steps:total", "env", "tests_f2", "pipeline", "tests_f2"]
    rebuilt = resolver.load_task(args)
    assert rebuilt.name == f2_steps.total.name and rebuilt.interface == f2_steps.total.interface
    with pytest.raises(ValueError, match="unexpected loader args"):
        resolver.load_task(["mod", "os", "instance", "system"])


def test_definition_errors_name_the_step() -> None:
    env = flyte.TaskEnvironment(name="dup")
    isthmus_task(fs.total, env=env)
    with pytest.raises(StepDefinitionError, match="environment 'dup' already has a task 'dup.total'"):
        isthmus_task(fs.total, env=env)
    with pytest.raises(TypeError, match=r"must be a flyte.TaskEnvironment"):
        isthmus_task(fs.total, env="dup")

    @step
    def star(*numbers: int) -> int:
        return sum(numbers)

    with pytest.raises(StepDefinitionError, match="step 'star': \\*args/\\*\\*kwargs"):
        isthmus_task(star, env=env)


def test_a_forged_ref_input_is_refused_before_the_step_runs() -> None:
    from isthmus.artifacts.refs import ArtifactRef

    with pytest.raises(Exception, match="artifact ref"):
        forged = ArtifactRef(
            uri="file:///etc/passwd", content_hash="md5:x", size=1, materializer="json@1", python_type="builtins:int"
        )
        flyte.run(f2_steps.total, numbers=forged)
    assert not _runs()


# -- fresh processes: the example twice, and hits across orchestrators ------------------------------
def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ISTHMUS_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


def _flyte_run_local(home: Path, n_estimators: int) -> str:
    cli = Path(sys.executable).with_name("flyte")
    if not cli.exists():
        skip_or_fail(f"the flyte CLI is not installed next to {sys.executable}")
    proc = subprocess.run(
        [str(cli), "run", "--local", EXAMPLE, "ml_pipeline", "--n_estimators", str(n_estimators)],
        cwd=REPO,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _python(home: Path, code: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _pyflyte_run(home: Path, n_estimators: int) -> None:
    cli = Path(sys.executable).with_name("pyflyte")
    if not cli.exists():
        skip_or_fail(f"flytekit's pyflyte is not installed next to {sys.executable}")
    proc = subprocess.run(
        [str(cli), "run", "dags_examples/flyte_ml_pipeline.py", "ml_pipeline", "--n_estimators", str(n_estimators)],
        cwd=REPO,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


EXAMPLE_STEPS = ["ingest", "featurize", "train", "evaluate"]


def test_the_example_twice_second_all_hits(isthmus_home: Path) -> None:
    first = _flyte_run_local(isthmus_home, 10)
    (run,) = _runs()
    assert run["status"] == "COMPLETED" and run["hits"] == 0 and run["steps"] == 4
    for name in EXAMPLE_STEPS:
        assert f"isthmus {name}: computed in " in first
    second = _flyte_run_local(isthmus_home, 10)
    latest = _runs()[0]
    assert latest["status"] == "COMPLETED" and latest["hits"] == 4
    for name in EXAMPLE_STEPS:
        assert f"isthmus {name}: cache hit from step run " in second
    assert second.count(f"of run {run['id'][:8]} (flyte2); run {latest['id']}") == 4


def _sources(run_id: str) -> dict[str, str]:
    """invocation -> the orchestrator of the step run its hit came from."""
    out = {}
    for name, sr in _steps(run_id).items():
        assert sr["cache_hit"], name
        out[name] = _store().get_step_run(sr["source_step_run_id"])["orchestrator"]
    return out


def test_hits_across_local_flytekit_and_flyte2(isthmus_home: Path) -> None:
    # computed locally -> hits in Flyte 2
    _python(isthmus_home, "from dags_examples import steps; steps.ml_pipeline.run(n_estimators=10)")
    _flyte_run_local(isthmus_home, 10)
    assert _sources(_runs()[0]["id"]) == dict.fromkeys(EXAMPLE_STEPS, "local")

    # computed by flytekit (pyflyte run) -> hits in Flyte 2
    _pyflyte_run(isthmus_home, 11)
    _flyte_run_local(isthmus_home, 11)
    assert _sources(_runs()[0]["id"]) == {
        "ingest": "local",
        "featurize": "local",
        "train": "flyte",
        "evaluate": "flyte",
    }

    # computed in Flyte 2 -> hits locally and in flytekit
    _flyte_run_local(isthmus_home, 12)
    _python(isthmus_home, "from dags_examples import steps; steps.ml_pipeline.run(n_estimators=12)")
    assert _sources(_runs("local")[0]["id"])["train"] == "flyte2"
    _pyflyte_run(isthmus_home, 12)
    assert _sources(_runs("flyte")[0]["id"])["evaluate"] == "flyte2"
