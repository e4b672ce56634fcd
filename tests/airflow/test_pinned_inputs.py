"""A promoted artifact as a ``@task.isthmus`` argument under Airflow's ``dag.test()``: the DAG serializes, the
alias resolves when the task runs, the step run records it, and a local run in a fresh process fed the same
version by hash is a cache hit on what Airflow computed."""

from __future__ import annotations

from pathlib import Path

import pytest

from isthmus.context import derived_run_id
from tests.airflow.conftest import load_dag, put_dag
from tests.helpers import REPO, run_python

pytestmark = pytest.mark.usefixtures("airflow_db")

PINNED_DAG = """
from airflow.sdk import dag, task
from isthmus import ArtifactAlias
from tests.airflow.steps import shout


@dag(dag_id="isthmus_pinned", schedule=None)
def isthmus_pinned():
    task.isthmus(shout, task_id="by_alias")(name=ArtifactAlias("greeting", "production"))
    task.isthmus(shout, task_id="by_json")({"isthmus_pinned": "greeting@production"})


isthmus_pinned()
"""

UNKNOWN_DAG = """
from airflow.sdk import dag, task
from isthmus import ArtifactAlias
from tests.airflow.steps import shout


@dag(dag_id="isthmus_pinned_unknown", schedule=None)
def isthmus_pinned_unknown():
    task.isthmus(shout, task_id="unknown", retries=0)(name=ArtifactAlias("greeting", "nope"))


isthmus_pinned_unknown()
"""


def _test_run(dag) -> tuple[object, dict[str, dict]]:
    from isthmus import defaults
    from isthmus_airflow.plugins.run_closer import flush

    dr = dag.test()
    flush(30)
    run_id = derived_run_id("airflow", dag.dag_id, dr.run_id)
    return dr, {s["invocation"]: s for s in defaults.metadata_store().step_runs_of(run_id)}


def test_an_alias_op_kwarg_survives_serialization_resolves_and_hits_locally(isthmus_home: Path) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    from isthmus.runner import default_runner
    from tests.airflow.steps import shout

    runner = default_runner()
    version = runner.run(shout, {"name": "ada"}).outputs["output"]  # "ADA!"
    runner.metadata.set_alias("greeting", "production", version.content_hash)

    dag = load_dag(put_dag("isthmus_pinned", PINNED_DAG), "isthmus_pinned")
    serialized = DagSerialization.serialize_dag(dag)  # what the scheduler and the UI keep
    assert "greeting" in str(serialized)
    DagSerialization.deserialize_dag(serialized)

    dr, steps = _test_run(dag)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == "success", states
    for task_id in ("by_alias", "by_json"):
        recorded = steps[task_id]["inputs"]["name"]
        assert recorded["content_hash"] == version.content_hash
        assert recorded["metadata"]["pinned"] == {"alias": "greeting@production", "version": version.content_hash}
        assert runner.artifacts.load(_out(steps[task_id])) == "ADA!!"
    assert steps["by_alias"]["cache_key"] == steps["by_json"]["cache_key"]

    # a local run in a fresh process, fed the same version by its hash: a hit on what Airflow computed
    local = run_python(
        f"""
        import json
        from isthmus import ArtifactVersion
        from isthmus.runner import default_runner
        from tests.airflow.steps import shout
        res = default_runner().run(shout, {{"name": ArtifactVersion({version.content_hash!r})}})
        print(json.dumps([res.cache_hit, res.cache_key, res.value]))
        """,
        env={"ISTHMUS_HOME": str(isthmus_home)},
        cwd=REPO,
    )
    assert local == [True, steps["by_alias"]["cache_key"], "ADA!!"]


def _out(step_run: dict):
    from isthmus import ArtifactRef

    return ArtifactRef.from_dict(step_run["outputs"]["output"])


def test_an_unknown_alias_fails_the_task_in_one_line_before_the_step_runs(
    isthmus_home: Path, capfd: pytest.CaptureFixture
) -> None:
    dag = load_dag(put_dag("isthmus_pinned_unknown", UNKNOWN_DAG), "isthmus_pinned_unknown")
    dr, steps = _test_run(dag)
    assert dr.state == "failed"
    assert steps == {}  # refused before a step run existed
    out = "".join(capfd.readouterr())
    assert (
        "step 'shout': input 'name': no alias 'greeting@nope' in this store; point the alias at a version with "
        "'isthmus artifacts alias greeting@nope HASH'" in out
    )
