"""``KubernetesStepOperator`` through ``KubernetesPodOperator``'s own execution path, deferrable: the
operator creates the Job's Secret, the pod operator's pod manager creates the pod (an in-memory API whose
pods run as local processes), the task defers with the Secret in place; resumed in a fresh operator, the
pod operator's completion runs (await, cleanup: the pod is deleted), the Secret is deleted, and the pod's
manifest gives the outputs — with the same artifact hash as a local run."""

from __future__ import annotations

# isort: off
# Airflow's settings (AIRFLOW_HOME, its metadata DB) must be in place before airflow is first imported.
import tests.airflow.conftest  # noqa: F401

# isort: on

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from isthmus.artifacts.store import ArtifactStore
from isthmus.runner import StepRunner
from isthmus.store import MetadataStore
from isthmus_airflow.operators.kubernetes import KubernetesStepOperator
from tests.k8s import steps as ks
from tests.k8s.fake_api import FakeKubernetesHook, FakePodCluster

IMAGE = "registry.example/isthmus-project:1.0"


class FakeTI:
    dag_id = "k8s_dag"
    run_id = "manual__2026-11-30"
    task_id = "numbers"
    try_number = 1
    map_index = -1
    start_date = dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def _operator(cluster: FakePodCluster, **kwargs: Any) -> KubernetesStepOperator:
    op = KubernetesStepOperator(
        task_id="numbers",
        step=ks.make_numbers,
        op_kwargs={"n": 6},
        image=IMAGE,
        namespace="ml",
        kubernetes_conn_id=None,
        get_logs=False,
        **kwargs,
    )
    op.__dict__["hook"] = FakeKubernetesHook(cluster)  # the pod operator's cached properties
    op.__dict__["client"] = cluster
    return op


def _context(ti: FakeTI) -> dict[str, Any]:
    return {"ti": ti, "run_id": ti.run_id, "dag": None, "params": {}, "logical_date": None, "task_state_store": None}


@pytest.mark.parametrize("record", ["db", "manifest"])
def test_deferred_pod_round_trip(record: str, runner: StepRunner, tmp_path: Path) -> None:
    cluster = FakePodCluster(workdir=tmp_path)
    ti = FakeTI()
    op = _operator(cluster, record=record)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(_context(ti))
    assert deferred.value.method_name == "trigger_reentry"
    assert [c for c, _ in cluster.calls] == ["create_secret", "create_pod"]
    (secret_name,) = [n for _, n in cluster.secrets]  # kept while the task is deferred: the pod needs it
    ((namespace, pod_name),) = cluster.pods
    pod = cluster.pods[(namespace, pod_name)]
    assert namespace == "ml" and ti.xcom["pod_name"] == pod_name
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "isthmus"
    assert pod["spec"]["containers"][0]["command"][:4] == ["python", "-m", "isthmus", "run-step"]

    resumed = _operator(cluster, record=record)  # a fresh operator, as after the triggerer's event
    event = {
        "status": "success",
        "name": pod_name,
        "namespace": namespace,
        "message": "All containers inside pod have started successfully.",
    }
    value = resumed.trigger_reentry(_context(ti), event)
    assert cluster.pods == {} and cluster.secrets == {}  # the pod operator deleted the pod, isthmus its Secret
    assert ("secret", secret_name) in cluster.deleted
    local = StepRunner(MetadataStore(f"sqlite:///{tmp_path / 'l.db'}"), ArtifactStore(str(tmp_path / "l")))
    assert value["content_hash"] == local.run(ks.make_numbers, {"n": 6}).outputs["output"].content_hash
    recorded = runner.metadata.get_step_run(resumed._isthmus_record["id"])
    assert recorded["context"]["native"]["k8s_job"] == pod_name.rsplit("-", 1)[0]
    assert recorded["context"]["native"]["dag_id"] == "k8s_dag"

    # the next try of the same task: a cache hit, no Secret and no pod
    cluster.calls.clear()
    again = _operator(cluster, record=record).execute(_context(ti))
    assert again["content_hash"] == value["content_hash"] and cluster.calls == []


def test_a_failing_step_fails_the_task_with_its_error(runner: StepRunner, tmp_path: Path) -> None:
    from isthmus.k8s import K8sStepFailed

    cluster = FakePodCluster(workdir=tmp_path)
    ti = FakeTI()
    op = KubernetesStepOperator(
        task_id="explode",
        step=ks.explode,
        op_kwargs={"message": "in a pod"},
        image=IMAGE,
        kubernetes_conn_id=None,
        get_logs=False,
    )
    op.__dict__["hook"] = FakeKubernetesHook(cluster)
    op.__dict__["client"] = cluster
    with pytest.raises(TaskDeferred):
        op.execute(_context(ti))
    ((namespace, pod_name),) = cluster.pods
    event = {"status": "failed", "name": pod_name, "namespace": namespace, "message": "Container failed"}
    with pytest.raises(K8sStepFailed, match="the step failed: .*boom: in a pod"):
        op.trigger_reentry(_context(ti), event)
    assert cluster.secrets == {}


def test_killing_the_task_deletes_the_pod_and_the_jobs_secret(runner: StepRunner, tmp_path: Path) -> None:
    cluster = FakePodCluster(workdir=tmp_path)
    op = _operator(cluster)
    with pytest.raises(TaskDeferred):
        op.execute(_context(FakeTI()))
    assert cluster.pods and cluster.secrets
    op.on_kill()
    assert cluster.pods == {} and cluster.secrets == {}
