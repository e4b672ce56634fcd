"""The entrypoint contract, taken from the generated manifest: the pod's exact command and environment
(Secret references resolved from Secrets the test supplies, as the kubelet would) run as a fresh process
against the real stores — PostgreSQL and an S3-protocol object store — and produce the same artifact
hashes as a local run. No Kubernetes API server can run here; this is the part of a pod that can."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from isthmus import RunContext, config
from isthmus.artifacts.store import ArtifactStore
from isthmus.k8s import KubernetesJobExecutor
from isthmus.k8s.states import PodStatus
from isthmus.runner import StepRunner
from isthmus.store import MetadataStore
from tests.k8s import steps as ks
from tests.k8s.conftest import PG_PASSWORD, resolve_container_env, validate_manifest

REPO = Path(__file__).resolve().parents[2]
IMAGE = "registry.example/isthmus-project:1.0"
S3_SECRET = "isthmus-s3"


def _run_pod(job: Any, secret: dict[str, Any], extra_secrets: dict[str, dict[str, str]], workdir: Path) -> Any:
    """Run the container of ``job`` as a local process: its command as written, its environment resolved.
    The image would hold the project: here it is the repository on PYTHONPATH and the venv's python."""
    validate_manifest(job.job)
    container = job.container
    env = resolve_container_env(container, {secret["metadata"]["name"]: secret["stringData"], **extra_secrets})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"
    env["PYTHONPATH"] = str(REPO)
    env["HOME"] = str(workdir)
    assert container["command"][0] == "python"
    return subprocess.run(container["command"], env=env, cwd=workdir, capture_output=True, text=True, timeout=180)


def _local_hashes(tmp_path: Path) -> tuple[str, str]:
    """The same two steps run locally, in their own fresh stores (SQLite and a directory)."""
    runner = StepRunner(MetadataStore(f"sqlite:///{tmp_path / 'local.db'}"), ArtifactStore(str(tmp_path / "local-art")))
    first = runner.run(ks.make_numbers, {"n": 7}, RunContext(orchestrator="local"))
    second = runner.run(
        ks.train_on_gpu, {"numbers": first.outputs["output"], "scale": 3}, RunContext(orchestrator="local")
    )
    runner.metadata.dispose()
    return first.outputs["output"].content_hash, second.outputs["output"].content_hash


@pytest.mark.postgres
@pytest.mark.parametrize("record", ["db", "manifest"])
def test_pod_command_and_env_from_the_manifest_reproduce_local_hashes(
    record: str, pg_password_url: str, s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_numbers, local_result = _local_hashes(tmp_path)

    s3_env = s3_server.env()
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.new_bucket()
    monkeypatch.setenv("ISTHMUS_STORE_URL", pg_password_url)
    monkeypatch.setenv("ISTHMUS_ARTIFACT_ROOT", f"s3://{bucket}/isthmus")
    config.reset()
    from isthmus.runner import default_runner

    runner = default_runner()
    ex = KubernetesJobExecutor(runner, image=IMAGE, env_from=[S3_SECRET], record=record)
    secrets = {S3_SECRET: dict(s3_env)}
    hashes = []
    calls: list[dict[str, Any]] = [{"n": 7}]
    for step in (ks.make_numbers, ks.train_on_gpu):
        arguments = calls[-1]
        ctx = RunContext(orchestrator="kubernetes", invocation=step.name)
        inputs, params = ex.split_arguments(step, arguments)
        assert ex.lookup(step, inputs, params, ctx) is None
        job, secret = ex.build(step, inputs, params, ctx, ex.cache_key(step, inputs, params, ctx))
        text = repr(job.to_dict())
        assert PG_PASSWORD not in text and s3_env["AWS_SECRET_ACCESS_KEY"] not in text
        pod = tmp_path / f"pod-{step.name}"
        pod.mkdir()
        proc = _run_pod(job, secret, secrets, pod)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert PG_PASSWORD not in proc.stdout + proc.stderr
        result = ex.collect(job, PodStatus(job.name, "SUCCEEDED"))
        assert not result.cache_hit
        assert result.cache_key == job.cache_key  # the pod computed the key the submitter did
        ref = result.outputs["output"]
        hashes.append(ref.content_hash)
        recorded = runner.metadata.get_step_run(result.step_run_id)
        assert recorded["status"] == "COMPLETED"
        assert recorded["context"]["native"]["k8s_job"] == job.name
        assert PG_PASSWORD not in repr(recorded)
        calls.append({"numbers": ref, "scale": 3})
    assert hashes == [local_numbers, local_result]
    assert runner.artifacts.load(ref) == {"total": 3 * sum(i * i for i in range(7)), "count": 7}

    # the same step again: a cache hit on the submitting side, so no pod would be created
    inputs, params = ex.split_arguments(ks.train_on_gpu, calls[1])
    hit = ex.lookup(ks.train_on_gpu, inputs, params, RunContext(orchestrator="kubernetes"))
    assert hit is not None and hit.outputs["output"].content_hash == local_result
    runner.metadata.dispose()


def test_a_missing_secret_key_is_what_the_kubelet_refuses(runner: StepRunner) -> None:
    ex = KubernetesJobExecutor(runner, image=IMAGE, env_from=[S3_SECRET])
    inputs, params = ex.split_arguments(ks.make_numbers, {"n": 2})
    job, secret = ex.build(ks.make_numbers, inputs, params, RunContext())
    with pytest.raises(KeyError, match=S3_SECRET):
        resolve_container_env(job.container, {secret["metadata"]["name"]: secret["stringData"]})


def test_a_failing_step_in_the_pod_is_a_failed_step_with_its_error(runner: StepRunner, tmp_path: Path) -> None:
    """Local stores (the pod shares the directory): the step raises, the manifest says why."""
    from isthmus.k8s import K8sStepFailed

    ex = KubernetesJobExecutor(runner, image=IMAGE, record="manifest")
    inputs, params = ex.split_arguments(ks.explode, {"message": "in the pod"})
    job, secret = ex.build(ks.explode, inputs, params, RunContext(orchestrator="kubernetes"))
    proc = _run_pod(job, secret, {}, tmp_path)
    assert proc.returncode == 1
    with pytest.raises(
        K8sStepFailed, match=r"Job isthmus-explode-\w+ FAILED: the step failed: .*boom: in the pod"
    ) as info:
        ex.collect(job, PodStatus(job.name, "FAILED", "Error", exit_code=1))
    assert info.value.traceback and "ValueError" in info.value.traceback
