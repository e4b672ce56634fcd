"""``isthmus k8s render`` and ``isthmus run-step --on k8s``: in fresh processes where no cluster is needed
(rendering, a clear error without a cluster configuration), in-process with the cluster in memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.k8s.conftest import validate_manifest
from tests.k8s.fake_api import FakeCluster

REPO = Path(__file__).resolve().parents[2]
IMAGE = "registry.example/isthmus-project:1.0"


def _isthmus(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args], env=full, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_render_prints_a_valid_job_without_a_cluster(isthmus_home: Path, tmp_path: Path) -> None:
    proc = _isthmus(
        "k8s",
        "render",
        "--step",
        "tests.k8s.steps:train_on_gpu",
        "--params",
        '{"numbers": [1, 2]}',
        "-n",
        "ml",
        env={"ISTHMUS_K8S_IMAGE": IMAGE},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    validate_manifest(job)
    assert job["metadata"]["namespace"] == "ml"
    assert "keys: ISTHMUS_MANIFEST_KEY, ISTHMUS_STORE_URL" in proc.stderr


def test_run_step_on_k8s_without_a_cluster_is_one_line(isthmus_home: Path, tmp_path: Path) -> None:
    proc = _isthmus(
        "run-step",
        "--on",
        "k8s",
        "--step",
        "tests.k8s.steps:make_numbers",
        "--params",
        '{"n": 3}',
        env={"ISTHMUS_K8S_IMAGE": IMAGE, "KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)},
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no Kubernetes configuration") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _isthmus("run-step", "--on", "nomad", "--step", "tests.k8s.steps:make_numbers", env={}, cwd=tmp_path)
    assert proc.returncode == 1 and "--on 'nomad' must be one of local, k8s, kubernetes" in proc.stderr
    proc = _isthmus(
        "k8s", "render", "--step", "tests.k8s.steps:make_numbers", env={"ISTHMUS_K8S_IMAGE": ""}, cwd=tmp_path
    )
    assert proc.returncode == 1 and "no container image" in proc.stderr and "Traceback" not in proc.stderr


def test_run_step_on_k8s_runs_the_job_and_prints_the_summary(
    isthmus_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from isthmus.cli.app import app
    from isthmus.k8s import executor

    cluster = FakeCluster(workdir=tmp_path)
    monkeypatch.setattr(executor, "load_apis", lambda: (cluster, cluster))
    monkeypatch.setenv("ISTHMUS_K8S_IMAGE", IMAGE)
    args = ["run-step", "--on", "k8s", "--step", "tests.k8s.steps:make_numbers", "--params", '{"n": 4}']
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output.strip().splitlines()[-1])
    assert summary["status"] == "COMPLETED" and summary["job"].startswith("isthmus-make-numbers-")
    assert cluster.jobs == {} and [c for c, _ in cluster.calls] == ["create_secret", "create_job"]
    again = json.loads(CliRunner().invoke(app, args).output.strip().splitlines()[-1])
    assert again["cache_hit"] and again["job"] is None and len(cluster.calls) == 2
