"""``KubernetesJobExecutor`` against a cluster in memory with the client's own methods (tests/k8s/fake_api.py):
the pod really runs (its command and environment from the Job, as a local process); what the API server
reports is recorded real API objects. A cache hit creates nothing; every Job and Secret is deleted."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from isthmus import RunContext
from isthmus.artifacts.store import ArtifactStore
from isthmus.k8s import K8sStepFailed, KubernetesJobExecutor
from isthmus.runner import StepRunner
from isthmus.store import MetadataStore
from tests.k8s import steps as ks
from tests.k8s.fake_api import FakeCluster, recorded

IMAGE = "registry.example/isthmus-project:1.0"


def _executor(runner: StepRunner, cluster: FakeCluster, **options) -> KubernetesJobExecutor:
    return KubernetesJobExecutor(
        runner, image=IMAGE, batch_api=cluster, core_api=cluster, poll_interval=0.01, **options
    )


def test_the_fake_has_the_real_clients_methods_and_parameters() -> None:
    from kubernetes.client import BatchV1Api, CoreV1Api

    for api, names in (
        (BatchV1Api, ["create_namespaced_job", "read_namespaced_job_status", "delete_namespaced_job"]),
        (
            CoreV1Api,
            ["create_namespaced_secret", "delete_namespaced_secret", "list_namespaced_pod", "read_namespaced_pod_log"],
        ),
    ):
        for name in names:
            real = list(inspect.signature(getattr(api, name)).parameters)
            fake = [p for p in inspect.signature(getattr(FakeCluster, name)).parameters if p != "kwargs"]
            assert real[: len(fake)] == fake, name  # the same positional parameters
    # and every keyword argument the executor passes is one the real methods take
    for api, name, keyword in (
        (BatchV1Api, "delete_namespaced_job", "propagation_policy"),
        (CoreV1Api, "list_namespaced_pod", "label_selector"),
        (CoreV1Api, "read_namespaced_pod_log", "container"),
        (CoreV1Api, "read_namespaced_pod_log", "tail_lines"),
    ):
        # (client 37 names them in the signature; 36 takes **kwargs and checks them against its all_params)
        accepted = inspect.signature(getattr(api, name)).parameters
        source = inspect.getsource(getattr(api, f"{name}_with_http_info"))
        assert keyword in accepted or f"'{keyword}'" in source, (name, keyword)


@pytest.mark.parametrize("record", ["db", "manifest"])
def test_run_creates_watches_collects_and_deletes(record: str, runner: StepRunner, tmp_path: Path) -> None:
    local = StepRunner(MetadataStore(f"sqlite:///{tmp_path / 'l.db'}"), ArtifactStore(str(tmp_path / "l")))
    expected = local.run(ks.make_numbers, {"n": 6}).outputs["output"].content_hash

    cluster = FakeCluster(workdir=tmp_path)
    ex = _executor(runner, cluster, record=record)
    submitted = []
    result = ex.run(ks.make_numbers, {"n": 6}, RunContext(orchestrator="kubernetes"), on_submit=submitted.append)
    assert result.outputs["output"].content_hash == expected and not result.cache_hit
    (job,) = submitted
    assert cluster.calls == [("create_secret", job.secret_name), ("create_job", job.name)]
    assert cluster.jobs == {} and cluster.secrets == {}  # deleted what it created
    assert set(cluster.deleted) == {("job", job.name), ("secret", job.secret_name)}
    recorded = runner.metadata.get_step_run(result.step_run_id)
    assert recorded["context"]["native"]["k8s_job"] == job.name and recorded["status"] == "COMPLETED"

    # the same call again: a cache hit on this side, no Secret and no Job created
    cluster.calls.clear()
    again = ex.run(ks.make_numbers, {"n": 6}, RunContext(orchestrator="kubernetes"))
    assert again.cache_hit and again.outputs["output"].content_hash == expected
    assert cluster.calls == []


def test_a_failing_step_raises_with_the_steps_error_and_cleans_up(runner: StepRunner, tmp_path: Path) -> None:
    cluster = FakeCluster(workdir=tmp_path)
    ex = _executor(runner, cluster)
    with pytest.raises(K8sStepFailed, match="the step failed: .*boom: here") as info:
        ex.run(ks.explode, {"message": "here"})
    assert info.value.state == "FAILED" and "ValueError" in (info.value.traceback or "")
    assert cluster.jobs == {} and cluster.secrets == {}


@pytest.mark.parametrize(
    ("cases", "state", "fix"),
    [
        (["pending_unschedulable", "running", "oom_killed"], "OUT_OF_MEMORY", "raise Resources\\(memory"),
        (["pending_container_creating", "err_image_pull", "image_pull_backoff"], "IMAGE_PULL", "check the image name"),
        (["create_container_config_error"], "CONFIG_ERROR", "create the Secret"),
        (["running", "deadline_exceeded"], "TIMEOUT", "raise Resources\\(time_limit"),
        (["evicted"], "EVICTED", "node ran short"),
        (["pod_phase_unknown", "failure_target_only"], "FAILED", None),
    ],
)
def test_cluster_states_end_the_step_with_the_reason_and_fix(
    cases: list[str], state: str, fix: str | None, runner: StepRunner
) -> None:
    cluster = FakeCluster(kubelet=cases)
    cluster.logs = {"isthmus-train-on-gpu-3f2a9c1d7e4b-x7k2p": "loading 16 GiB of features\n"}
    ex = _executor(runner, cluster)
    with pytest.raises(K8sStepFailed) as info:
        ex.run(ks.make_numbers, {"n": 3})
    err = info.value
    assert err.state == state and not err.step_run_id
    assert f" {state}: Kubernetes ended the Job {state}" in str(err)
    if fix:
        assert re.search(fix, str(err))
    if recorded(cases[-1])["pods"]:  # the pod's log tail is part of the message
        assert "--- pod log (tail) ---\nloading 16 GiB of features" in str(err)
    assert cluster.reads == len(cases)  # watched until the state that ends it, not longer
    assert cluster.jobs == {} and cluster.secrets == {}


def test_a_job_still_succeeding_is_not_yet_success_and_a_vanished_job_is_lost(runner: StepRunner) -> None:
    cluster = FakeCluster(kubelet=["success_criteria_met_only", "succeeded"])
    ex = _executor(runner, cluster)
    with pytest.raises(K8sStepFailed, match="LOST: the Job completed but its pod wrote no manifest"):
        ex.run(ks.make_numbers, {"n": 3})  # Complete, but nothing ran the entrypoint: never a success
    assert cluster.reads == 2

    class Vanishing(FakeCluster):
        def read_namespaced_job_status(self, name, namespace, **kwargs):
            self.jobs.clear()
            return super().read_namespaced_job_status(name, namespace, **kwargs)

    gone = Vanishing(kubelet=["running"])
    with pytest.raises(K8sStepFailed, match="LOST") as info:
        _executor(runner, gone).run(ks.make_numbers, {"n": 4})
    assert info.value.state == "LOST"


def test_an_interrupt_while_waiting_deletes_the_job_and_its_secret(runner: StepRunner) -> None:
    cluster = FakeCluster(kubelet=["pending_unschedulable", "running", "running", "running"])
    cluster.interrupt_after = 2
    ex = _executor(runner, cluster)
    with pytest.raises(KeyboardInterrupt):
        ex.run(ks.make_numbers, {"n": 5})
    assert cluster.jobs == {} and cluster.secrets == {}
    assert {kind for kind, _ in cluster.deleted} == {"job", "secret"}


def test_a_job_created_by_an_earlier_try_is_followed_not_duplicated(runner: StepRunner, tmp_path: Path) -> None:
    cluster = FakeCluster(workdir=tmp_path)
    ex = _executor(runner, cluster)
    inputs, params = ex.split_arguments(ks.make_numbers, {"n": 2})
    ctx = RunContext(orchestrator="kubernetes", invocation="make_numbers")
    job, secret = ex.build(ks.make_numbers, inputs, params, ctx, ex.cache_key(ks.make_numbers, inputs, params, ctx))
    ex.submit(job, secret)
    again, secret_again = ex.build(ks.make_numbers, inputs, params, ctx, job.cache_key)
    assert again.name == job.name
    ex.submit(again, secret_again)  # 409s: followed
    assert len(cluster.jobs) == 1
    result = ex.collect(again, ex.wait(again))
    assert result.outputs["output"].content_hash
    ex.delete(again)
    assert cluster.jobs == {} and cluster.secrets == {}


def test_a_pipeline_runs_its_steps_as_jobs_and_a_second_run_creates_no_pod(runner: StepRunner, tmp_path: Path) -> None:
    from isthmus import pipeline

    @pipeline
    def squares_on_k8s(n: int = 5):
        return ks.train_on_gpu(ks.make_numbers(n), scale=2)

    cluster = FakeCluster(workdir=tmp_path)
    ex = _executor(runner, cluster, record="manifest")
    run = squares_on_k8s.run(runner=runner, executor=ex, max_workers=1)
    assert run.status == "COMPLETED"
    assert [c for c, _ in cluster.calls] == ["create_secret", "create_job", "create_secret", "create_job"]
    assert cluster.jobs == {} and cluster.secrets == {}
    for result in run.steps.values():
        recorded = runner.metadata.get_step_run(result.step_run_id)
        assert recorded["pipeline_run_id"] == run.id and recorded["context"]["native"]["k8s_job"].startswith("isthmus-")
        assert recorded["orchestrator"] == "kubernetes"
    local = squares_on_k8s.run(
        runner=StepRunner(MetadataStore(f"sqlite:///{tmp_path / 'l.db'}"), ArtifactStore(str(tmp_path / "l")))
    )
    assert _hashes(run) == _hashes(local)
    cluster.calls.clear()
    again = squares_on_k8s.run(runner=runner, executor=ex)
    assert cluster.calls == [] and all(r.cache_hit for r in again.steps.values())


def _hashes(run) -> list[str]:
    return sorted(r.outputs["output"].content_hash for r in run.steps.values())


def test_executor_by_name_needs_a_cluster_configuration(runner: StepRunner, monkeypatch, tmp_path: Path) -> None:
    from isthmus import pipeline
    from isthmus.errors import PipelineDefinitionError
    from isthmus.k8s import K8sUnavailable

    @pipeline
    def one_step(n: int = 2):
        return ks.make_numbers(n)

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ISTHMUS_K8S_IMAGE", IMAGE)
    with pytest.raises(K8sUnavailable, match="no Kubernetes configuration"):
        one_step.run(runner=runner, executor="kubernetes")
    with pytest.raises(
        PipelineDefinitionError, match=re.escape("run(executor='nomad') must be one of 'local', 'kubernetes'")
    ):
        one_step.run(runner=runner, executor="nomad")


def test_a_manifest_the_pod_did_not_sign_is_refused(runner: StepRunner, tmp_path: Path) -> None:
    """Someone who can write the artifact store writes the Job's manifest: its outputs are not used and
    nothing is recorded (the pod signs with a key only the submitter and the Job's Secret hold)."""
    import json

    from isthmus.k8s.states import PodStatus

    real = runner.run(ks.make_numbers, {"n": 9})  # a genuine artifact to point the forgery at
    cluster = FakeCluster(workdir=tmp_path)
    ex = _executor(runner, cluster)
    inputs, params = ex.split_arguments(ks.make_numbers, {"n": 3})
    job, _ = ex.build(ks.make_numbers, inputs, params, RunContext(orchestrator="kubernetes"))
    forged = {
        "version": 1,
        "step": job.step_path,
        "context": job.context,
        "record": "db",
        "status": "COMPLETED",
        "step_run_id": real.step_run_id,
        "outputs": {"output": real.outputs["output"].to_dict()},
    }
    Path(job.manifest).parent.mkdir(parents=True, exist_ok=True)
    Path(job.manifest).write_text(json.dumps(forged))
    before = _step_run_count(runner)
    with pytest.raises(K8sStepFailed, match="is not signed with this Job's key"):
        ex.collect(job, PodStatus(job.name, "SUCCEEDED"))
    assert _step_run_count(runner) == before


def _step_run_count(runner: StepRunner) -> int:
    from sqlalchemy import func, select

    from isthmus.store import schema

    with runner.metadata.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(schema.metadata.tables["step_runs"])).scalar() or 0)


@pytest.mark.parametrize("name", ["Ünïcode step ☃", "a" * 300, "--", "UPPER_case.dots", "x" * 40 + "-" * 10 + "y"])
def test_job_names_from_any_step_name_are_dns_labels(name: str) -> None:
    from isthmus.k8s.options import K8sJobOptions
    from isthmus.k8s.spec import job_name_for, labels_for
    from tests.k8s.conftest import validate_manifest

    job = job_name_for(name, RunContext(invocation=name), "blake3:" + "0" * 64)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", job), job
    labels = labels_for(name, K8sJobOptions())
    validate_manifest(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": job, "labels": labels},
            "spec": {"containers": [{"name": "primary", "image": "i"}]},
        }
    )
    assert re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", labels["isthmus.dev/step"])
