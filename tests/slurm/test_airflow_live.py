"""A deferrable ``SlurmStepOperator`` under the live Airflow deployment (``tests/airflow_live.py``):
the task submits the job, defers to ``SlurmJobTrigger`` in the real triggerer, resumes in a worker when
the job ends, and the next DAG run is a cache hit that submits no job."""

from __future__ import annotations

import json

from isthmus.context import derived_run_id
from tests.airflow_live import LiveAirflow, live_airflow_fixture  # noqa: F401 - the live_airflow fixture
from tests.slurm.cluster import SlurmCluster

SLURM_DAG = """
from airflow.sdk import DAG
from isthmus_airflow.operators.slurm import SlurmStepOperator
from isthmus_airflow.operators.step import StepOperator
from tests.slurm import steps

with DAG(dag_id="isthmus_live_slurm", schedule=None) as dag:
    square = SlurmStepOperator(task_id="square", step=steps.square, op_kwargs={"x": 9},
                               slurm_conn_id="slurm_live", poll_interval=0.5)
    StepOperator(task_id="add", step=steps.add, op_kwargs={"a": square.output, "b": 1})
"""


def _steps(live: LiveAirflow, run_id: str) -> dict[str, dict]:
    store = live.metadata()
    try:
        return {s["invocation"]: s for s in store.step_runs_of(derived_run_id("airflow", "isthmus_live_slurm", run_id))}
    finally:
        store.dispose()


def test_deferrable_slurm_step_through_the_real_triggerer(live_airflow: LiveAirflow, slurm_cluster: SlurmCluster):
    live = live_airflow
    extra = {"backend": "cli", "slurm_conf": str(slurm_cluster.conf)}
    live.api(
        "POST", "/api/v2/connections", {"connection_id": "slurm_live", "conn_type": "slurm", "extra": json.dumps(extra)}
    )
    try:
        live.put_dag("isthmus_live_slurm", SLURM_DAG)
        jobs_before = set(slurm_cluster.jobs())
        run_id, state = live.run_dag("isthmus_live_slurm")
        assert state == "success", live.log_tails(["triggerer", "scheduler"], 60)
        steps = _steps(live, run_id)
        square = steps["square"]
        job_id = square["context"]["native"]["slurm_job_id"]
        assert square["status"] == "COMPLETED" and not square["cache_hit"] and job_id
        assert set(slurm_cluster.jobs()) - jobs_before == {job_id}
        # the task deferred: the triggerer ran SlurmJobTrigger (its log is the task's trigger log), then the
        # task resumed in a worker to read the job's result
        files = [p for p in live.task_log_files("isthmus_live_slurm", run_id) if "task_id=square" in str(p)]
        trigger_log = "".join(p.read_text() for p in files if ".trigger." in p.name)
        assert "Trigger fired event" in trigger_log and f"Slurm job {job_id}: COMPLETED" in trigger_log
        task_log = "".join(p.read_text() for p in files if ".trigger." not in p.name)
        assert f"Slurm job {job_id}" in task_log and "--- Slurm job" in task_log
        assert steps["add"]["status"] == "COMPLETED"
        from isthmus import ArtifactRef
        from isthmus.artifacts.store import ArtifactStore

        store = ArtifactStore(str(live.isthmus_home / "artifacts"))
        assert store.load(ArtifactRef.from_dict(steps["add"]["outputs"]["output"])) == 82
        record = live.wait_pipeline_status(derived_run_id("airflow", "isthmus_live_slurm", run_id), ("COMPLETED",))
        assert record["status"] == "COMPLETED"

        # the second run: a cache hit, no job
        run2, state2 = live.run_dag("isthmus_live_slurm")
        assert state2 == "success"
        assert _steps(live, run2)["square"]["cache_hit"]
        assert set(slurm_cluster.jobs()) - jobs_before == {job_id}
        live.assert_healthy()
        assert not live.problems("triggerer"), live.problems("triggerer")
    finally:
        live.api("DELETE", "/api/v2/connections/slurm_live")
