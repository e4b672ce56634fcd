"""The Airflow path: ``KubernetesStepOperator`` (on the cncf provider's ``KubernetesPodOperator``) and
``@task.isthmus(executor="kubernetes")`` render their pod with the pod operator's own
``build_pod_request_obj(dry_run=True)``/``dry_run()``; the pod is the one mapping's, identical to the
CLI/executor path's and to Flyte's pod template for the same step. No API server runs here, so the pod
operator's execution (its pod manager) is not exercised."""

from __future__ import annotations

# isort: off
# Airflow's settings (AIRFLOW_HOME, its metadata DB) must be in place before airflow is first imported.
import tests.airflow.conftest  # noqa: F401

# isort: on

import copy
from collections import OrderedDict
from typing import Any

import pytest
import yaml

from isthmus import RunContext
from isthmus.errors import StepDefinitionError
from isthmus.k8s import K8sJobOptions, KubernetesJobExecutor
from isthmus_airflow.operators.kubernetes import KubernetesStepOperator
from tests.k8s import steps as ks
from tests.k8s.conftest import validate_manifest

IMAGE = "registry.example/isthmus-project:1.0"
CTX = RunContext(orchestrator="airflow", pipeline_run_id="run-1", invocation="train")
# What KubernetesPodOperator always writes into a pod (Kubernetes' own defaults for these fields).
KPO_DEFAULTS = {"hostNetwork": False}
KPO_CONTAINER_DEFAULTS = {"terminationMessagePolicy": "File"}


def _pruned(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _kpo_spec(pod: dict[str, Any]) -> dict[str, Any]:
    spec = _pruned(copy.deepcopy(pod["spec"]))
    for key, value in KPO_DEFAULTS.items():
        assert spec.pop(key) == value
    for key, value in KPO_CONTAINER_DEFAULTS.items():
        assert spec["containers"][0].pop(key) == value
    return spec


def _job_spec(runner, step, arguments, **options) -> dict[str, Any]:
    ex = KubernetesJobExecutor(runner, options=K8sJobOptions(image=IMAGE, **options))
    inputs, params = ex.split_arguments(step, arguments)
    job, _ = ex.build(step, inputs, params, CTX, ex.cache_key(step, inputs, params, CTX))
    return job.job["spec"]["template"]["spec"]


def test_dry_run_renders_the_pod_of_the_one_mapping(runner, capsys: pytest.CaptureFixture[str]) -> None:
    op = KubernetesStepOperator(task_id="train", step=ks.train_on_gpu, image=IMAGE, namespace="ml")
    pod = op.dry_run_pod({"numbers": [1, 2]}, CTX)
    validate_manifest(pod)
    assert pod["metadata"]["namespace"] == "ml" and pod["metadata"]["name"].startswith("isthmus-train-on-gpu-")
    assert _kpo_spec(pod) == _job_spec(runner, ks.train_on_gpu, {"numbers": [1, 2]}, namespace="ml")
    op.dry_run()  # the pod operator's own dry run prints the same pod as YAML
    out = capsys.readouterr().out
    printed = yaml.safe_load(out[out.index("api_version: v1") :])  # after the operator's log line
    container = printed["spec"]["containers"][0]
    assert container["command"][:6] == ["python", "-m", "isthmus", "run-step", "--step", "tests.k8s.steps:train_on_gpu"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    refs = [e for e in container["env"] if "value_from" in e]
    assert {e["name"] for e in refs} == {"ISTHMUS_STORE_URL", "ISTHMUS_MANIFEST_KEY"}


def test_cli_airflow_and_flyte_give_the_same_pod(runner) -> None:
    """The same step with the same options: the Job's pod (CLI, executor), the Airflow operator's pod and
    Flyte's serialized pod template agree on every field but what each entrypoint owns (Flyte's image,
    command, args and environment; its own names for the same resource quantities)."""
    from flytekit.tools.translator import get_serializable

    from flytekitplugins.isthmus import isthmus_task
    from tests.k8s.test_flyte_pod_template import SETTINGS, _without_flytekit_fields

    arguments = {"numbers": [3, 4]}
    job = _job_spec(runner, ks.train_on_gpu, arguments, gpu_label="")
    op = KubernetesStepOperator(task_id="train", step=ks.train_on_gpu, image=IMAGE, gpu_label="")
    airflow = _kpo_spec(op.dry_run_pod(arguments, CTX))
    assert airflow == job  # identical, command and environment included
    flyte = get_serializable(OrderedDict(), SETTINGS, isthmus_task(ks.train_on_gpu)).template.k8s_pod.pod_spec
    assert _without_flytekit_fields(flyte) == _without_flytekit_fields(airflow) == _without_flytekit_fields(job)


def test_a_cache_hit_starts_no_pod(runner) -> None:
    runner.run(ks.make_numbers, {"n": 4}, RunContext(orchestrator="local"))
    op = KubernetesStepOperator(task_id="numbers", step=ks.make_numbers, image=IMAGE)
    ctx = RunContext(orchestrator="airflow", invocation="numbers")
    _, job, secret, hit = op.prepare_pod(runner, {"n": 4}, ctx)
    assert hit is not None and hit.cache_hit and job is None and secret is None
    assert op.full_pod_spec is None
    with pytest.raises(StepDefinitionError, match="a cache hit, no pod"):
        op.dry_run_pod({"n": 4}, ctx)


def test_pod_fields_the_step_owns_are_refused_and_options_checked() -> None:
    with pytest.raises(StepDefinitionError, match="sets cmds, container_resources from the step's Resources"):
        KubernetesStepOperator(task_id="t", step=ks.make_numbers, cmds=["sh"], container_resources=object())
    with pytest.raises(StepDefinitionError, match="step 'make_numbers': env: API_TOKEN looks like a credential"):
        KubernetesStepOperator(task_id="t", step=ks.make_numbers, env={"API_TOKEN": "abc123def456ghi789"})


def test_taskflow_executor_kubernetes(runner) -> None:
    from airflow.sdk import DAG, task

    with DAG(dag_id="k8s_taskflow", schedule=None):
        out = task.isthmus(ks.train_on_gpu, executor="kubernetes", image=IMAGE, task_id="train")(numbers=[1, 2])
    op = out.operator
    assert isinstance(op, KubernetesStepOperator) and op.deferrable
    assert _kpo_spec(op.dry_run_pod({"numbers": [1, 2]}, CTX)) == _job_spec(
        runner, ks.train_on_gpu, {"numbers": [1, 2]}
    )


def test_lineage_names_pod_namespace_and_resources(runner) -> None:
    from isthmus.lineage.facets import backend_run_facets, resources_facet

    op = KubernetesStepOperator(task_id="train", step=ks.train_on_gpu, image=IMAGE, namespace="ml")
    op.dry_run_pod({"numbers": [1]}, CTX)
    lineage = op._lineage({"context": {"native": {}}, "inputs": {}, "outputs": {}})
    facet = lineage.run_facets["isthmus_k8s"]
    assert (facet.namespace, facet.job) == ("ml", op._k8s_job.name)
    assert facet.resources["gpu"] == 2 and facet.resources["gpu_type"] == "NVIDIA-A100-SXM4-80GB"
    # a step run the pod recorded names its Job through the registered lineage backend
    record = {"context": {"native": {"k8s_job": op._k8s_job.name, "k8s_namespace": "ml"}}, "resources": {"cpu": 4.0}}
    step_run = {**_minimal_record(), **record}
    assert backend_run_facets(step_run)["isthmus_k8s"].job == op._k8s_job.name
    assert resources_facet(step_run).k8sJobId == f"ml/{op._k8s_job.name}"


def _minimal_record() -> dict[str, Any]:
    return {
        "id": "sr-1",
        "step_name": "train_on_gpu",
        "step_path": "tests.k8s.steps:train_on_gpu",
        "invocation": "train_on_gpu",
        "orchestrator": "airflow",
        "status": "COMPLETED",
        "attempt": 1,
        "inputs": {},
        "outputs": {},
        "params": {},
    }


def test_job_options_come_from_the_isthmus_connection_and_the_operator_wins(
    runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``extra.k8s`` of the isthmus connection gives the image, namespace and service account (read when
    the task runs); the operator's own option wins; a bad key is one line naming the connection."""
    import json

    k8s = {"image": "registry.example/team-a:2.0", "namespace": "team-a", "service_account": "runner"}
    conn = {"conn_type": "isthmus", "extra": {"k8s": k8s}}
    monkeypatch.setenv("AIRFLOW_CONN_ISTHMUS_K8S", json.dumps(conn))
    monkeypatch.setenv("ISTHMUS_K8S_IMAGE", "registry.example/from-env:0")
    op = KubernetesStepOperator(task_id="numbers", step=ks.make_numbers, isthmus_conn_id="isthmus_k8s")
    pod = op.dry_run_pod({"n": 7}, CTX)
    validate_manifest(pod)
    assert pod["metadata"]["namespace"] == "team-a" and op.namespace == "team-a"
    assert pod["spec"]["serviceAccountName"] == "runner"
    assert pod["spec"]["containers"][0]["image"] == "registry.example/team-a:2.0"

    own = KubernetesStepOperator(
        task_id="numbers", step=ks.make_numbers, isthmus_conn_id="isthmus_k8s", image="registry.example/own:3"
    )
    pod = own.dry_run_pod({"n": 7}, CTX)
    assert pod["spec"]["containers"][0]["image"] == "registry.example/own:3"
    assert pod["metadata"]["namespace"] == "team-a"

    bad = {"conn_type": "isthmus", "extra": {"k8s": {"imgae": "x"}}}
    monkeypatch.setenv("AIRFLOW_CONN_ISTHMUS_K8S", json.dumps(bad))
    op = KubernetesStepOperator(task_id="numbers", step=ks.make_numbers, isthmus_conn_id="isthmus_k8s")
    with pytest.raises(
        ValueError, match=r"isthmus connection 'isthmus_k8s': extra.k8s has unknown option\(s\) 'imgae'"
    ):
        op.dry_run_pod({"n": 7}, CTX)
