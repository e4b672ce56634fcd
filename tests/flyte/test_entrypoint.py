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
from isthmus import _defaults
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


def test_pyflyte_execute_runs_a_task_built_in_another_module(isthmus_home: Path, tmp_path: Path) -> None:
    from dags_examples import flyte_ml_pipeline as example

    pyflyte_execute = Path(sys.executable).with_name("pyflyte-execute")
    if not pyflyte_execute.exists():
        skip_or_fail(f"flytekit's pyflyte-execute is not installed next to {sys.executable}")

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
    inputs_pb = tmp_path / "inputs.pb"
    inputs_pb.write_bytes(inputs.to_flyte_idl().SerializeToString())
    out_dir, raw_dir = tmp_path / "outputs", tmp_path / "raw"
    out_dir.mkdir()
    raw_dir.mkdir()

    spec = get_serializable(OrderedDict(), SETTINGS, example.train_task)
    args = list(spec.template.container.args)
    assert args[: args.index("--")][-2:] == ["--resolver", LOCATION]
    loader_args = args[args.index("--") + 1 :]
    assert loader_args[:2] == ["step", "dags_examples.steps:train"]
    assert spec.template.type == "python-task"
    substitutions = {
        "{{.input}}": str(inputs_pb),
        "{{.outputPrefix}}": str(out_dir),
        "{{.rawOutputDataPrefix}}": str(raw_dir),
    }
    command = [str(pyflyte_execute), *[substitutions.get(a, a) for a in args[1:]]]

    env = {
        **os.environ,
        "ISTHMUS_HOME": str(isthmus_home),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "FLYTE_INTERNAL_EXECUTION_PROJECT": "proj",
        "FLYTE_INTERNAL_EXECUTION_DOMAIN": "development",
        "FLYTE_INTERNAL_EXECUTION_ID": "f3a9c2e1b",
        "FLYTE_INTERNAL_EXECUTION_WORKFLOW": "proj:development:dags_examples.flyte_ml_pipeline.hand_written",
        "FLYTE_INTERNAL_TASK_PROJECT": "proj",
        "FLYTE_INTERNAL_TASK_DOMAIN": "development",
        "FLYTE_INTERNAL_TASK_NAME": spec.template.id.name,
        "FLYTE_INTERNAL_TASK_VERSION": "v7",
        "FLYTE_ATTEMPT_NUMBER": "1",
    }
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (out_dir / "error.pb").exists(), proc.stderr[-3000:]

    msg = literals_pb2.LiteralMap()
    msg.ParseFromString((out_dir / "outputs.pb").read_bytes())
    outputs = LiteralMap.from_flyte_idl(msg)
    literal = outputs.literals["output"]
    assert REF_METADATA_KEY in literal.metadata
    ref = TypeEngine.to_python_value(FlyteContextManager.current_context(), literal, ArtifactRef)
    model = _defaults.artifact_store().load(ref)
    assert model.n_estimators == 7

    # What the pod recorded: a step run with the Flyte ids, in the pipeline run of its execution.
    store = _defaults.metadata_store()
    run_id = derived_run_id("flyte", "proj", "development", "f3a9c2e1b")
    run = store.get_run(run_id)
    assert run["pipeline"] == "dags_examples.flyte_ml_pipeline.hand_written"
    assert run["orchestrator"] == "flyte"
    (train_run,) = store.step_runs_of(run_id)
    assert train_run["step_name"] == "train" and not train_run["cache_hit"]
    native = train_run["context"]["native"]
    assert native["execution_id"] == "proj:development:f3a9c2e1b"
    assert native["task_name"] == spec.template.id.name
    assert native["task_version"] == "v7"
    assert train_run["attempt"] == 2  # FLYTE_ATTEMPT_NUMBER counts from 0

    # ... and the other way round: the same step locally is a hit on the pod's result.
    local = runner.run(steps.train, {"features": features, "n_estimators": 7, "seed": 0})
    assert local.cache_hit and local.source_step_run_id == train_run["id"]


def test_resolver_rebuilds_pipeline_tasks_in_process() -> None:
    wf = fs.small_pipeline.to_flyte_workflow(enable_deck=True)
    for original in [*wf.isthmus_tasks.values(), wf.isthmus_finish_task, wf.isthmus_failure_task]:
        loader_args = isthmus_task_resolver.loader_args(SETTINGS, original)
        rebuilt = isthmus_task_resolver.load_task(loader_args)
        assert rebuilt.name == original.name
        assert rebuilt.interface == original.interface
        assert rebuilt.enable_deck == original.enable_deck or loader_args[0] == "pipeline"
        assert type(rebuilt) is type(original)
    node = wf.isthmus_tasks["describe"]
    options = json.loads(isthmus_task_resolver.loader_args(SETTINGS, node)[-1])
    assert options == {"enable_deck": True, "invocation": "describe", "name": node.name, "pipeline": "small_pipeline"}
