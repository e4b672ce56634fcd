"""Packaging: a PEP 420 namespace, loaded by ``import flytekit`` through its entry point; ``pyflyte run``."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from flytekit.core.task import TaskPlugins
from flytekit.core.workflow import WorkflowBase

import flytekitplugins.isthmus as plugin
from dags_examples import steps
from flytekitplugins.isthmus import Isthmus, IsthmusTask
from isthmus import defaults
from tests.conftest import skip_or_fail

REPO = Path(__file__).resolve().parents[2]


def test_namespace_package_and_entry_point() -> None:
    assert not (REPO / "flyte_plugin" / "flytekitplugins" / "__init__.py").exists()
    (ep,) = [ep for ep in entry_points(group="flytekit.plugins") if ep.name == "isthmus"]
    assert ep.value == "flytekitplugins.isthmus"
    assert TaskPlugins.find_pythontask_plugin(Isthmus) is IsthmusTask
    (adapter,) = [ep for ep in entry_points(group="isthmus.adapters") if ep.name == "flyte"]
    assert adapter.load() is plugin.pipeline_to_workflow
    assert isinstance(steps.ml_pipeline.to_flyte_workflow(), WorkflowBase)


def test_import_flytekit_loads_the_plugin_without_the_isthmus_core() -> None:
    code = (
        "import sys, flytekit\n"
        "assert 'flytekitplugins.isthmus' in sys.modules, 'plugin not loaded'\n"
        "heavy = sorted(m for m in sys.modules if m == 'isthmus' or m.startswith('isthmus.'))\n"
        "assert not heavy, heavy\n"
        "from flytekit.core.task import TaskPlugins\n"
        "from flytekitplugins.isthmus import Isthmus, IsthmusTask\n"
        "assert TaskPlugins.find_pythontask_plugin(Isthmus) is IsthmusTask\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_import_flytekit_registers_a_slurm_connector_that_loads_the_real_one_on_first_use() -> None:
    code = (
        "import sys, asyncio, flytekit\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('flytekitplugins.isthmus'))\n"
        "assert loaded == ['flytekitplugins.isthmus', 'flytekitplugins.isthmus.registration'], loaded\n"
        "from flytekit.extend.backend.base_connector import ConnectorRegistry\n"
        "from flytekitplugins.isthmus.registration import DeferredSlurmConnector, SlurmStepMeta\n"
        "stand_in = ConnectorRegistry.get_connector('isthmus_slurm')\n"
        "assert isinstance(stand_in, DeferredSlurmConnector) and stand_in.metadata_type is SlurmStepMeta\n"
        "meta = SlurmStepMeta(step='s:f', step_name='f', task_name='t')\n"
        "asyncio.run(stand_in.delete(meta))  # no job: nothing to cancel, but the real connector is loaded\n"
        "from flytekitplugins.isthmus.slurm import IsthmusSlurmConnector\n"
        "assert isinstance(ConnectorRegistry.get_connector('isthmus_slurm'), IsthmusSlurmConnector)\n"
        "types = list(ConnectorRegistry.get_connector_metadata('Isthmus Slurm Connector').supported_task_types)\n"
        "assert types == ['isthmus_slurm'], types\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_pyflyte_run_executes_the_example_workflow_locally(isthmus_home: Path) -> None:
    pyflyte = Path(sys.executable).with_name("pyflyte")
    if not pyflyte.exists():
        skip_or_fail(f"flytekit's pyflyte is not installed next to {sys.executable}")
    env = {**os.environ, "ISTHMUS_HOME": str(isthmus_home)}
    proc = subprocess.run(
        [str(pyflyte), "run", "dags_examples/flyte_ml_pipeline.py", "ml_pipeline", "--n_estimators", "5"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "'top_feature'" in proc.stdout
    store = defaults.metadata_store()
    (run,) = store.list_runs(orchestrator="flyte")
    assert run["status"] == "COMPLETED" and run["pipeline"] == "ml_pipeline" and run["steps"] == 4
    local = steps.ml_pipeline.run(n_estimators=5)
    assert local.cache_hits == 4
