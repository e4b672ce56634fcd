"""The Airflow side on a real Slurm: SlurmStepOperator deferred under ``dag.test()`` (the trigger runs
inline), the non-deferrable mode, ``@task.isthmus_slurm``, kills, lineage facets, and the hook."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from isthmus.context import RunContext, derived_run_id
from isthmus.runner import default_runner
from tests.airflow.conftest import airflow_db, lineage_events, load_dag, put_dag  # noqa: F401 - fixture
from tests.slurm import steps
from tests.slurm.cluster import SlurmCluster

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def slurm_conns(slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Airflow connections of type ``slurm`` for both backends (as AIRFLOW_CONN_* variables)."""
    conns = {
        "cli": {"conn_type": "slurm", "extra": {"backend": "cli", "slurm_conf": str(slurm_cluster.conf)}},
        "rest": {"conn_type": "slurm", "extra": {"backend": "rest", "socket": str(slurm_cluster.rest_socket)}},
    }
    for name, conn in conns.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_SLURM_{name.upper()}", json.dumps(conn))
    return {name: f"slurm_{name}" for name in conns}


def _steps_of(dag_id: str, run_id: str) -> dict[str, dict]:
    meta = default_runner().metadata
    return {s["invocation"]: s for s in meta.step_runs_of(derived_run_id("airflow", dag_id, run_id))}


DAG_SOURCE = """
from airflow.sdk import DAG, task
from isthmus_airflow.operators.slurm import SlurmStepOperator
from isthmus_airflow.operators.step import StepOperator
from tests.slurm import steps

with DAG(dag_id="{dag_id}", schedule=None) as dag:
    sq = SlurmStepOperator(task_id="square", step=steps.square, op_kwargs={{"x": {x}}},
                           slurm_conn_id="{conn}", poll_interval=0.2)
    total = StepOperator(task_id="add", step=steps.add, op_kwargs={{"a": sq.output, "b": 1}})
    gpu = task.isthmus_slurm(steps.gpu_env, slurm_conn_id="{conn}", poll_interval=0.2, deferrable=False)()
"""


def test_operator_deferred_then_cache_hits_without_a_job(
    backend: str, slurm_conns, slurm_cluster, job_home: Path, capfd: pytest.CaptureFixture
):
    dag_id = f"slurm_square_{backend}"
    path = put_dag(dag_id, DAG_SOURCE.format(dag_id=dag_id, x=6, conn=slurm_conns[backend]))
    dag = load_dag(path, dag_id)
    before = len(lineage_events())
    jobs_before = set(slurm_cluster.jobs())

    dr = dag.test()
    assert dr.state == "success"
    runs = _steps_of(dag_id, dr.run_id)
    # the job's own log is copied into the task log
    out = "".join(capfd.readouterr())
    assert "isthmus: step square in Slurm job" in out and "--- Slurm job" in out, out[-3000:]
    assert set(runs) == {"square", "add", "gpu_env"}
    square = runs["square"]
    assert square["status"] == "COMPLETED" and not square["cache_hit"]
    native = square["context"]["native"]
    assert native["dag_id"] == dag_id and native["task_id"] == "square" and native["slurm_job_id"]
    assert runs["gpu_env"]["context"]["native"]["slurm_job_id"]
    assert default_runner().artifacts.load(_ref(runs["add"])) == 37
    assert default_runner().artifacts.load(_ref(runs["gpu_env"]))["CUDA_VISIBLE_DEVICES"] == "0,1"
    new_jobs = set(slurm_cluster.jobs()) - jobs_before
    assert len(new_jobs) == 2 and native["slurm_job_id"] in new_jobs

    # lineage: the operator's facets carry the Slurm job
    events = [e for e in lineage_events()[before:] if e["eventType"] == "COMPLETE"]
    facets = {e["job"]["name"].split(".")[-1]: e["run"]["facets"] for e in events}
    slurm = facets["square"]["isthmus_slurm"]
    assert slurm["jobId"] == native["slurm_job_id"] and slurm["state"] == "COMPLETED"
    assert slurm["partition"] == "debug" and slurm["nodes"] == "localhost" and slurm["backend"] == backend
    assert slurm["resources"]["job_name"].startswith("isthmus-square-")
    assert facets["gpu_env"]["isthmus_slurm"]["resources"]["gres"] == "gpu:2"
    assert facets["square"]["isthmus_step"]["stepRunId"] == square["id"]

    # a second DAG run: every Slurm step is a cache hit, and no job is submitted
    dr2 = dag.test()
    assert dr2.state == "success"
    runs2 = _steps_of(dag_id, dr2.run_id)
    assert runs2["square"]["cache_hit"] and runs2["square"]["source_step_run_id"] == square["id"]
    assert runs2["gpu_env"]["cache_hit"]
    assert set(slurm_cluster.jobs()) - jobs_before == new_jobs


def _ref(step_run: dict):
    from isthmus.artifacts.refs import ArtifactRef

    return ArtifactRef.from_dict(step_run["outputs"]["output"])


FAIL_SOURCE = """
from airflow.sdk import DAG
from isthmus_airflow.operators.slurm import SlurmStepOperator
from tests.slurm import steps

with DAG(dag_id="{dag_id}", schedule=None) as dag:
    SlurmStepOperator(task_id="explode", step=steps.explode, op_kwargs={{"message": "in airflow"}},
                      slurm_conn_id="{conn}", poll_interval=0.2, deferrable={deferrable}, retries=0)
"""


@pytest.mark.parametrize("deferrable", [True, False])
def test_failing_step_fails_the_task_with_traceback_and_lineage(deferrable: bool, slurm_conns, job_home: Path):
    dag_id = f"slurm_fail_{int(deferrable)}"
    path = put_dag(dag_id, FAIL_SOURCE.format(dag_id=dag_id, conn=slurm_conns["cli"], deferrable=deferrable))
    before = len(lineage_events())
    dr = load_dag(path, dag_id).test()
    assert dr.state == "failed"
    run = _steps_of(dag_id, dr.run_id)["explode"]
    assert run["status"] == "FAILED" and "boom: in airflow" in run["error"]
    assert "raise ValueError" in run["traceback"]
    # the task's own FAIL (sent by Airflow's provider), not the Slurm job's, which may arrive later
    fails = [
        e for e in lineage_events()[before:] if e["eventType"] == "FAIL" and e["job"]["name"] == f"{dag_id}.explode"
    ]
    assert fails and fails[-1]["run"]["facets"]["isthmus_slurm"]["state"] == "FAILED"
    assert fails[-1]["run"]["facets"]["isthmus_step"]["status"] == "FAILED"
    assert default_runner().metadata.get_run(derived_run_id("airflow", dag_id, dr.run_id))["status"] == "FAILED"


def _running_job(client, ctx_name: str):
    from isthmus.slurm import SlurmExecutor

    ex = SlurmExecutor(client, default_runner(), poll_interval=0.2)

    async def go():
        job = await ex.submit(steps.sleepy, {}, {"seconds": 120}, RunContext(orchestrator="slurm", invocation=ctx_name))
        await ex.wait_until(job, {"RUNNING"}, timeout=60)
        return job

    return asyncio.run(go())


def test_operator_and_trigger_on_kill_cancel_but_cleanup_does_not(slurm_conns, slurm_cluster, job_home: Path):
    from isthmus_airflow.operators.slurm import SlurmStepOperator
    from isthmus_airflow.triggers.slurm import SlurmJobTrigger
    from tests.slurm.conftest import make_client

    client = make_client(slurm_cluster, "cli")
    state = lambda job: asyncio.run(client.status(job.job_id)).state  # noqa: E731

    # the worker's task is killed (non-deferrable mode): on_kill cancels the job
    job = _running_job(client, "kill-op")
    op = SlurmStepOperator(task_id="k", step=steps.sleepy, slurm_conn_id=slurm_conns["cli"])
    op._job = job
    op.on_kill()
    assert _eventually(lambda: state(job) == "CANCELLED")

    # the deferred task is killed: the trigger's on_kill cancels; a triggerer restart (cleanup) does not
    job2 = _running_job(client, "kill-trigger")
    trigger = SlurmJobTrigger(job=job2.to_dict(), slurm_conn_id=slurm_conns["rest"], poll_interval=0.2)
    classpath, kwargs = trigger.serialize()
    assert classpath == "isthmus_airflow.triggers.slurm.SlurmJobTrigger" and "token" not in json.dumps(kwargs)
    asyncio.run(trigger.cleanup())
    assert state(job2) == "RUNNING"
    asyncio.run(SlurmJobTrigger(**kwargs).on_kill())
    assert _eventually(lambda: state(job2) == "CANCELLED")


def test_trigger_reports_the_final_state(slurm_conns, slurm_cluster, job_home: Path):
    from isthmus_airflow.triggers.slurm import SlurmJobTrigger
    from tests.slurm.conftest import make_client

    client = make_client(slurm_cluster, "rest")
    job = _running_job(client, "trigger-final")
    asyncio.run(client.cancel(job.job_id))

    async def first_event():
        trigger = SlurmJobTrigger(job=job.to_dict(), slurm_conn_id=slurm_conns["cli"], poll_interval=0.2)
        async for event in trigger.run():
            return event.payload

    payload = asyncio.run(first_event())
    assert payload["status"] == "done" and payload["final"]["state"] == "CANCELLED"


def test_hook_reads_connections_and_tests_them(slurm_conns, slurm_cluster, monkeypatch: pytest.MonkeyPatch):
    from isthmus_airflow.hooks.slurm import SlurmHook

    for backend, conn_id in slurm_conns.items():
        ok, message = SlurmHook(conn_id).test_connection()
        assert ok, message
        assert "debug" in message and backend in message
    # JWT over HTTP
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLURM_JWT",
        json.dumps(
            {
                "conn_type": "slurm",
                "host": slurm_cluster.rest_url,
                "login": "root",
                "password": slurm_cluster.token(),
                "extra": {"backend": "rest"},
            }
        ),
    )
    ok, message = SlurmHook("slurm_jwt").test_connection()
    assert ok, message
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLURM_BADTOKEN",
        json.dumps(
            {"conn_type": "slurm", "host": slurm_cluster.rest_url, "password": "x.y.z", "extra": {"backend": "rest"}}
        ),
    )
    ok, message = SlurmHook("slurm_badtoken").test_connection()
    assert not ok and "token" in message
    with pytest.raises(ValueError, match="does not exist"):
        SlurmHook("no_such_conn").settings()


def test_provider_lists_slurm_pieces():
    from isthmus_airflow.get_provider_info import get_provider_info

    info = get_provider_info()
    assert "slurm" in {c["connection-type"] for c in info["connection-types"]}
    assert "isthmus_slurm" in {d["name"] for d in info["task-decorators"]}
    assert info["triggers"][0]["python-modules"] == ["isthmus_airflow.triggers.slurm"]


def _eventually(check, timeout: float = 30) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


TREE_SOURCE = """
from airflow.sdk import DAG, task
from tests.slurm import steps

with DAG(dag_id="{dag_id}", schedule=None) as dag:
    task.isthmus(steps.square, executor="slurm", task_id="square", slurm_conn_id="{conn}", poll_interval=0.2,
                 extra_options=["--begin=now+3"])(x=9)
"""


def test_taskflow_executor_slurm_three_level_lineage(slurm_conns, job_home: Path):
    """DAG run -> task run (the OpenLineage provider) -> the Slurm job's run (isthmus, inside the job):
    the job gets the task's run as OPENLINEAGE_PARENT_ID and the DAG run as its root, and sends its
    events through the provider's transport; the trigger sends OTHER while the job is pending."""
    from tests.lineage import schemas

    dag_id = "slurm_lineage_tree"
    path = put_dag(dag_id, TREE_SOURCE.format(dag_id=dag_id, conn=slurm_conns["cli"]))
    before = len(lineage_events())
    dr = load_dag(path, dag_id).test()
    assert dr.state == "success"
    run = _steps_of(dag_id, dr.run_id)["square"]
    assert run["status"] == "COMPLETED" and run["context"]["native"]["slurm_job_id"]
    assert default_runner().artifacts.load(_ref(run)) == 81

    events = lineage_events()[before:]
    task_events = [e for e in events if e["job"]["name"] == f"{dag_id}.square"]
    task_runs = {e["run"]["runId"] for e in task_events}
    # the provider's task events name their DAG run as parent (its own DAG events may come later)
    dag_runs = {e["run"]["facets"]["parent"]["run"]["runId"] for e in task_events}
    job_events = [e for e in events if e["job"]["name"] == f"{dag_id}.square.slurm"]
    assert len(dag_runs) == 1 and len(task_runs) == 1, [(e["eventType"], e["job"]["name"]) for e in events]
    kinds = [e["eventType"] for e in job_events]
    assert "OTHER" in kinds and kinds[-2:] == ["START", "COMPLETE"], kinds
    assert kinds.index("OTHER") < kinds.index("START")
    assert len({e["run"]["runId"] for e in job_events}) == 1
    for event in job_events:
        assert event["job"]["namespace"] == "isthmus-tests"
        parent = event["run"]["facets"]["parent"]
        assert parent["run"]["runId"] in task_runs and parent["job"]["name"] == f"{dag_id}.square"
        assert parent["root"]["run"]["runId"] in dag_runs and parent["root"]["job"]["name"] == dag_id
    for event in events:  # the provider's events (with the isthmus facets) and the job's
        schemas.validate_event(event)
    assert job_events[-1]["run"]["facets"]["isthmus_step"]["stepRunId"] == run["id"]


def test_taskflow_rejects_an_unknown_executor():
    from airflow.sdk import task

    with pytest.raises(ValueError, match="executor='ray' is not one of 'local', 'slurm', 'kubernetes'"):
        task.isthmus(steps.square, executor="ray")
