"""A cluster in memory behind the same methods as ``kubernetes.client.BatchV1Api``/``CoreV1Api``.

``FakeCluster(kubelet=...)``: what happens to a created Job. ``"run"`` runs the pod's container as a local
process (its command as written, its environment resolved from the Secrets created through this API plus
``secrets``), then reports the Job Complete or Failed with the pod's exit code, as the API server would;
a list of recorded cases (tests/k8s/api_objects) is played back one read at a time instead. Objects are
returned as the client's models (``V1Job``, ``V1PodList``), errors as its ``ApiException``.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from isthmus.k8s.executor import api_model
from tests.k8s.conftest import resolve_container_env

REPO = Path(__file__).resolve().parents[2]
OBJECTS = Path(__file__).parent / "api_objects"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((OBJECTS / f"{name}.json").read_text())


def _model(data: Any, kind: str) -> Any:
    return api_model(data, kind)


class FakeCluster:
    def __init__(
        self,
        kubelet: str | list[str] = "run",
        secrets: dict[str, dict[str, str]] | None = None,
        workdir: Path | None = None,
        image_paths: tuple[str, ...] = (),
    ) -> None:
        self.kubelet = kubelet
        self.external_secrets = dict(secrets or {})
        self.workdir = workdir
        self.pythonpath = os.pathsep.join([*image_paths, str(REPO)])  # what the image would hold
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.calls: list[tuple[str, str]] = []
        self.deleted: list[tuple[str, str]] = []
        self.reads = 0
        self.interrupt_after: int | None = None
        self.finished: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        self.logs: dict[str, str] = {}

    # -- CoreV1Api --------------------------------------------------------------------------------
    def create_namespaced_secret(self, namespace: str, body: Any, **kwargs: Any) -> Any:
        name = body["metadata"]["name"]
        self.calls.append(("create_secret", name))
        if (namespace, name) in self.secrets:
            raise ApiException(status=409, reason="AlreadyExists")
        self.secrets[(namespace, name)] = dict(body.get("stringData") or {})
        return _model(body, "V1Secret")

    def delete_namespaced_secret(self, name: str, namespace: str, **kwargs: Any) -> Any:
        self.deleted.append(("secret", name))
        if self.secrets.pop((namespace, name), None) is None:
            raise ApiException(status=404, reason="Not Found")

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any:
        job = kwargs["label_selector"].removeprefix("job-name=")
        _, pods = self._state(namespace, job)
        return _model({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}, "V1PodList")

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> str:
        assert kwargs.get("container") == "primary"
        return self.logs.get(name, "")

    # -- BatchV1Api -------------------------------------------------------------------------------
    def create_namespaced_job(self, namespace: str, body: Any, **kwargs: Any) -> Any:
        name = body["metadata"]["name"]
        self.calls.append(("create_job", name))
        if (namespace, name) in self.jobs:
            raise ApiException(status=409, reason="AlreadyExists")
        self.jobs[(namespace, name)] = copy.deepcopy(body)
        return _model(body, "V1Job")

    def read_namespaced_job_status(self, name: str, namespace: str, **kwargs: Any) -> Any:
        self.reads += 1
        if self.interrupt_after is not None and self.reads > self.interrupt_after:
            raise KeyboardInterrupt
        job, _ = self._state(namespace, name)
        return _model(job, "V1Job")

    def delete_namespaced_job(self, name: str, namespace: str, **kwargs: Any) -> Any:
        self.deleted.append(("job", name))
        assert kwargs.get("propagation_policy") in ("Background", "Foreground")
        if self.jobs.pop((namespace, name), None) is None:
            raise ApiException(status=404, reason="Not Found")

    # -- the kubelet ------------------------------------------------------------------------------
    def _state(self, namespace: str, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        body = self.jobs.get((namespace, name))
        if body is None:
            raise ApiException(status=404, reason="Not Found")
        if isinstance(self.kubelet, list):
            case = recorded(self.kubelet[min(self.reads, len(self.kubelet)) - 1] if self.reads else self.kubelet[0])
            job = {**case["job"], "metadata": {**case["job"]["metadata"], "name": name}}
            return job, case["pods"]
        if name not in self.finished:
            self.finished[name] = self._run(namespace, body)
        return self.finished[name]

    def _run(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        name = body["metadata"]["name"]
        container = body["spec"]["template"]["spec"]["containers"][0]
        secrets = {**self.external_secrets, **{n: v for (ns, n), v in self.secrets.items() if ns == namespace}}
        env = resolve_container_env(container, secrets)
        env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin", PYTHONPATH=self.pythonpath)
        workdir = self.workdir or Path.cwd()
        proc = subprocess.run(container["command"], env=env, cwd=workdir, capture_output=True, text=True, timeout=180)
        pod_name = f"{name}-abcde"
        self.logs[pod_name] = proc.stdout + proc.stderr
        ok = proc.returncode == 0
        case = recorded("succeeded" if ok else "failed_error")
        job = {**case["job"], "metadata": {**case["job"]["metadata"], "name": name, "namespace": namespace}}
        pod = copy.deepcopy(case["pods"][0])
        pod["metadata"]["name"] = pod_name
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] = proc.returncode
        return job, [pod]


class FakePodCluster(FakeCluster):
    """Pods too (what ``KubernetesPodOperator``'s pod manager calls): a created pod runs at once as a local
    process, then reads back as Succeeded or Failed with its container terminated, as the API reports it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.api_client = ApiClient()

    def create_namespaced_pod(self, namespace: str, body: Any, **kwargs: Any) -> Any:
        body = copy.deepcopy(body)
        name = body["metadata"]["name"]
        self.calls.append(("create_pod", name))
        container = body["spec"]["containers"][0]
        secrets = {**self.external_secrets, **{n: v for (ns, n), v in self.secrets.items() if ns == namespace}}
        env = resolve_container_env(container, secrets)
        env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin", PYTHONPATH=self.pythonpath)
        proc = subprocess.run(
            container["command"], env=env, cwd=self.workdir or Path.cwd(), capture_output=True, text=True, timeout=180
        )
        self.logs[name] = proc.stdout + proc.stderr
        case = recorded("succeeded" if proc.returncode == 0 else "failed_error")["pods"][0]
        status = copy.deepcopy(case["status"])
        status["containerStatuses"][0]["state"]["terminated"]["exitCode"] = proc.returncode
        body["status"] = status
        self.pods[(namespace, name)] = body
        return _model(body, "V1Pod")

    def read_namespaced_pod(self, name: str, namespace: str, **kwargs: Any) -> Any:
        body = self.pods.get((namespace, name))
        if body is None:
            raise ApiException(status=404, reason="Not Found")
        return _model(body, "V1Pod")

    def delete_namespaced_pod(self, name: str, namespace: str, **kwargs: Any) -> Any:
        self.deleted.append(("pod", name))
        if self.pods.pop((namespace, name), None) is None:
            raise ApiException(status=404, reason="Not Found")

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any:
        selector = kwargs.get("label_selector") or ""
        if selector.startswith("job-name="):
            return super().list_namespaced_pod(namespace, **kwargs)
        wanted = dict(p.split("=", 1) for p in selector.split(",") if "=" in p and "!=" not in p)
        items = [
            b
            for (ns, _), b in self.pods.items()
            if ns == namespace and all((b["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]
        return _model({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}, "V1PodList")


class FakeKubernetesHook:
    """What ``KubernetesPodOperator`` asks its ``KubernetesHook`` for, answered by ``cluster``."""

    def __init__(self, cluster: FakePodCluster) -> None:
        self.core_v1_client = cluster
        self.is_in_cluster = False

    def get_namespace(self) -> str | None:
        return None

    def get_pod(self, name: str, namespace: str) -> Any:
        return self.core_v1_client.read_namespaced_pod(name, namespace)
