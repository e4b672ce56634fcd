"""A task built in another module from a step resolves inside a container.

The task is serialized as for registration, and the command line of its container — ``pyflyte-execute
… --resolver flytekitplugins.isthmus.resolver.isthmus_task_resolver -- step …`` — runs as a subprocess
with the environment a Flyte pod gets, against inputs written as ``inputs.pb``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

from flyteidl.core import literals_pb2
from flytekit.configuration import Image, ImageConfig, SerializationSettings
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.type_engine import TypeEngine
from flytekit.models.literals import LiteralMap
from flytekit.tools.translator import get_serializable

from dags_examples import steps
from flytekitplugins.isthmus import isthmus_task_resolver
from flytekitplugins.isthmus.resolver import LOCATION
from flytekitplugins.isthmus.transformer import REF_METADATA_KEY
from isthmus import defaults
from isthmus.artifacts.refs import ArtifactRef
from isthmus.context import derived_run_id
from isthmus.runner import default_runner
from tests.conftest import skip_or_fail
from tests.flyte import flyte_steps as fs

REPO = Path(__file__).resolve().parents[2]
SETTINGS = SerializationSettings(
    project="proj",
    domain="development",
    version="v7",
    image_config=ImageConfig(default_image=Image(name="default", fqn="isthmus-example", tag="1")),
    env={},
)


def _literal(value, tp):
    ctx = FlyteContextManager.current_context()
    return TypeEngine.to_literal(ctx, value, tp, TypeEngine.to_literal_type(tp))


EXECUTION = {
    "FLYTE_INTERNAL_EXECUTION_PROJECT": "proj",
    "FLYTE_INTERNAL_EXECUTION_DOMAIN": "development",
    "FLYTE_INTERNAL_EXECUTION_ID": "f3a9c2e1b",
    "FLYTE_INTERNAL_EXECUTION_WORKFLOW": "proj:development:dags_examples.flyte_ml_pipeline.hand_written",
    "FLYTE_INTERNAL_TASK_PROJECT": "proj",
    "FLYTE_INTERNAL_TASK_DOMAIN": "development",
    "FLYTE_INTERNAL_TASK_VERSION": "v7",
}


def _pyflyte_execute(
    task, inputs: LiteralMap, workdir: Path, home: Path, **env_extra: str
) -> tuple[list[str], LiteralMap]:
    """Serialize ``task`` and run its container command line as a Flyte pod would; returns (args, outputs)."""
    pyflyte_execute = Path(sys.executable).with_name("pyflyte-execute")
    if not pyflyte_execute.exists():
        skip_or_fail(f"flytekit's pyflyte-execute is not installed next to {sys.executable}")
    workdir.mkdir()
    inputs_pb, out_dir, raw_dir = workdir / "inputs.pb", workdir / "outputs", workdir / "raw"
    inputs_pb.write_bytes(inputs.to_flyte_idl().SerializeToString())
    out_dir.mkdir()
    raw_dir.mkdir()
    spec = get_serializable(OrderedDict(), SETTINGS, task)
    assert spec.template.type == "python-task"
    args = list(spec.template.container.args)
    assert args[: args.index("--")][-2:] == ["--resolver", LOCATION]
    substitutions = {
        "{{.input}}": str(inputs_pb),
        "{{.outputPrefix}}": str(out_dir),
        "{{.rawOutputDataPrefix}}": str(raw_dir),
    }
    env = {
        **os.environ,
        **EXECUTION,
        "ISTHMUS_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "FLYTE_INTERNAL_TASK_NAME": spec.template.id.name,
        **env_extra,
    }
    command = [str(pyflyte_execute), *[substitutions.get(a, a) for a in args[1:]]]
    proc = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (out_dir / "error.pb").exists(), proc.stderr[-3000:]
    msg = literals_pb2.LiteralMap()
    if (out_dir / "outputs.pb").exists():
        msg.ParseFromString((out_dir / "outputs.pb").read_bytes())
    return args[args.index("--") + 1 :], LiteralMap.from_flyte_idl(msg)


def test_pyflyte_execute_runs_a_task_built_in_another_module(isthmus_home: Path, tmp_path: Path) -> None:
    from dags_examples import flyte_ml_pipeline as example

    # Inputs as an upstream task would have produced them: features from a local run, ints as literals.
    runner = default_runner()
    raw = runner.run(steps.ingest, {})
    features = runner.run(steps.featurize, {"raw": raw.outputs["output"]}).outputs["output"]
    inputs = LiteralMap(
        {
            "features": _literal(features, ArtifactRef),
            "n_estimators": _literal(7, int),
            "seed": _literal(0, int),
        }
    )
    loader_args, outputs = _pyflyte_execute(
        example.train_task, inputs, tmp_path / "train", isthmus_home, FLYTE_ATTEMPT_NUMBER="1"
    )
    assert loader_args[:2] == ["step", "dags_examples.steps:train"]
    literal = outputs.literals["output"]
    assert REF_METADATA_KEY in literal.metadata
    ref = TypeEngine.to_python_value(FlyteContextManager.current_context(), literal, ArtifactRef)
    model = defaults.artifact_store().load(ref)
    assert model.n_estimators == 7

    # What the pod recorded: a step run with the Flyte ids, in the pipeline run of its execution.
    store = defaults.metadata_store()
    run_id = derived_run_id("flyte", "proj", "development", "f3a9c2e1b")
    run = store.get_run(run_id)
    assert run["pipeline"] == "dags_examples.flyte_ml_pipeline.hand_written"
    # its one task ended: the run is settled from its step runs (isthmus.run_closing)
    assert run["orchestrator"] == "flyte" and run["status"] == "COMPLETED"
    (train_run,) = store.step_runs_of(run_id)
    assert train_run["step_name"] == "train" and not train_run["cache_hit"]
    native = train_run["context"]["native"]
    assert native["execution_id"] == "proj:development:f3a9c2e1b"
    assert native["task_name"] == "dags_examples.steps.train"
    assert native["task_version"] == "v7"
    assert train_run["attempt"] == 2  # FLYTE_ATTEMPT_NUMBER counts from 0

    # ... and the other way round: the same step locally is a hit on the pod's result.
    local = runner.run(steps.train, {"features": features, "n_estimators": 7, "seed": 0})
    assert local.cache_hit and local.source_step_run_id == train_run["id"]

    # The pipeline workflow's last node, rebuilt from the pipeline's import path, completes the run.
    metrics = runner.run(steps.evaluate, {"model": ref, "features": features, "seed": 0}).outputs["output"]
    metrics_literal = _literal(defaults.artifact_store().load(metrics), dict)
    metrics_literal.set_metadata({REF_METADATA_KEY: metrics.to_json()})
    finish = example.ml_pipeline.isthmus_finish_task
    loader_args, _ = _pyflyte_execute(
        finish,
        LiteralMap({"n_estimators": _literal(7, int), "seed": _literal(0, int), "out_0": metrics_literal}),
        tmp_path / "finish",
        isthmus_home,
    )
    assert loader_args[:4] == ["pipeline", "dags_examples.steps:ml_pipeline", "role", "finish"]
    run = store.get_run(run_id)
    assert run["status"] == "COMPLETED"
    assert run["params"] == {"n_estimators": 7, "seed": 0}
    assert ArtifactRef.coerce(run["outputs"]) == metrics

    # Each pod sent its OpenLineage events through the core's emitter (default file transport here).
    events_file = isthmus_home / "lineage" / "events.jsonl"
    if events_file.exists():  # absent only without openlineage-python
        events = [json.loads(line) for line in events_file.read_text().splitlines()]
        pipeline_events = [e["eventType"] for e in events if e["run"]["runId"] == run_id]
        # the train task settled the run as it ended (COMPLETE), then the finish node completed it
        # with the pipeline's outputs (COMPLETE again: the last terminal event wins)
        assert pipeline_events == ["START", "COMPLETE", "COMPLETE"]
        (train_complete,) = [
            e
            for e in events
            if e["eventType"] == "COMPLETE"
            and e["run"]["facets"].get("parent", {}).get("run", {}).get("runId") == run_id
        ]
        assert train_complete["job"]["name"].endswith(".train")
        assert train_complete["run"]["facets"]["processing_engine"]["name"] == "isthmus/flyte"


def test_resolver_rebuilds_pipeline_tasks_in_process() -> None:
    wf = fs.small_pipeline.to_flyte_workflow(enable_deck=True)
    loose = fs.loosely_typed.to_flyte_workflow()
    for original in [
        *wf.isthmus_tasks.values(),
        wf.isthmus_finish_task,
        wf.isthmus_failure_task,
        *loose.isthmus_tasks.values(),
    ]:
        loader_args = isthmus_task_resolver.loader_args(SETTINGS, original)
        rebuilt = isthmus_task_resolver.load_task(loader_args)
        assert rebuilt.name == original.name
        assert rebuilt.interface == original.interface
        assert rebuilt.enable_deck == original.enable_deck or loader_args[0] == "pipeline"
        assert type(rebuilt) is type(original)
    node = wf.isthmus_tasks["describe"]
    options = json.loads(isthmus_task_resolver.loader_args(SETTINGS, node)[-1])
    assert options == {
        "cache_input": True,
        "enable_deck": True,
        "invocation": "describe",
        "name": node.name,
        "pipeline": "small_pipeline",
    }


def test_failure_handler_marks_the_execution_failed(monkeypatch, tmp_path: Path) -> None:
    """The workflow's on_failure node, executed the way pyflyte-execute sets a pod up (TASK_EXECUTION)."""
    import typing

    from flytekit.bin.entrypoint import setup_execution
    from flytekit.types.error import FlyteError

    for key, value in {**EXECUTION, "FLYTE_INTERNAL_EXECUTION_ID": "e-failed"}.items():
        monkeypatch.setenv(key, value)
    failure = fs.failing_pipeline.to_flyte_workflow().isthmus_failure_task
    err = FlyteError(message="boom <b>2</b>", failed_node_id="n2")
    inputs = LiteralMap({"n": _literal(2, int), "err": _literal(err, typing.Optional[FlyteError])})  # noqa: UP045
    with setup_execution(raw_output_data_prefix=str(tmp_path / "raw")) as ctx:
        failure.dispatch_execute(ctx, inputs)
    run = defaults.metadata_store().get_run(derived_run_id("flyte", "proj", "development", "e-failed"))
    assert run["status"] == "FAILED" and run["pipeline"] == "failing_pipeline"
    assert "n2" in run["error"] and "boom" in run["error"]
    assert run["params"] == {"n": 2}
