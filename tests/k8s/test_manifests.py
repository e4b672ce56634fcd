"""Generated Job, Pod and Secret manifests: valid against the official Kubernetes OpenAPI schemas (offline,
strict), the Resources mapping as documented, and credentials only as Secret references."""

from __future__ import annotations

import json

import pytest

from dags_examples import steps as examples
from isthmus import RunContext
from isthmus.errors import StepDefinitionError
from isthmus.k8s import K8sJobOptions, KubernetesJobExecutor, pod_manifest, pod_spec
from isthmus.k8s.spec import labels_for
from tests.k8s import steps as ks
from tests.k8s.conftest import PG_PASSWORD, validate_manifest

IMAGE = "registry.example/isthmus-project:1.0"


def _build(step, arguments, runner, **options):
    ex = KubernetesJobExecutor(runner, image=IMAGE, **options)
    inputs, params = ex.split_arguments(step, arguments)
    ctx = RunContext(orchestrator="kubernetes", invocation=step.name)
    return ex.build(step, inputs, params, ctx, ex.cache_key(step, inputs, params, ctx))


@pytest.mark.parametrize(
    "step", [examples.ingest, examples.featurize, examples.train, examples.evaluate, ks.make_numbers]
)
def test_cpu_steps_give_valid_job_pod_and_secret_manifests(step, runner) -> None:
    arguments = {name: 1 for name in step.signature.parameters} if hasattr(step, "signature") else {}
    job, secret = _build(step, {k: v for k, v in arguments.items() if k in ("n", "seed", "n_estimators")}, runner)
    validate_manifest(job.job)
    validate_manifest(secret)
    pod = job.job["spec"]["template"]["spec"]
    validate_manifest(pod_manifest(job.name, pod, K8sJobOptions(image=IMAGE), labels_for(step.name, K8sJobOptions())))
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["command"][:6] == ["python", "-m", "isthmus", "run-step", "--step", step.import_path]
    assert pod["restartPolicy"] == "Never" and job.job["spec"]["backoffLimit"] == 0
    res = step.resources
    if res.cpu:
        assert container["resources"]["requests"] == container["resources"]["limits"]
        assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "affinity" not in pod and "tolerations" not in pod


def test_cpu_mapping_values(runner) -> None:
    job, _ = _build(examples.train, {"n_estimators": 10}, runner)
    container = job.container
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    job, _ = _build(ks.make_numbers, {"n": 3}, runner)
    assert job.container["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert job.job["spec"]["activeDeadlineSeconds"] == 600
    assert job.job["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 600


def test_gpu_step_maps_gpus_type_selector_tolerations_and_service_account(runner) -> None:
    job, secret = _build(ks.train_on_gpu, {"numbers": [1, 2], "scale": 3}, runner)
    validate_manifest(job.job)
    validate_manifest(secret)
    pod = job.job["spec"]["template"]["spec"]
    limits = {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "20Gi", "nvidia.com/gpu": "2"}
    assert job.container["resources"] == {"requests": limits, "limits": limits}
    assert pod["nodeSelector"] == {"pool": "gpu"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-A100-SXM4-80GB"]}]}
    ]
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoExecute"},
    ]
    assert pod["serviceAccountName"] == "trainer"
    assert pod["activeDeadlineSeconds"] == job.job["spec"]["activeDeadlineSeconds"] == 7200


def test_gpu_resource_name_and_label_are_configurable(runner) -> None:
    options = K8sJobOptions(image=IMAGE, gpu_resource="amd.com/gpu", gpu_label="cloud.example.com/accelerator")
    spec = pod_spec(ks.train_on_gpu.resources, options)
    validate_manifest(pod_manifest("p", spec, options, {}))
    assert spec["containers"][0]["resources"]["limits"]["amd.com/gpu"] == "2"
    expr = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert expr[0]["matchExpressions"][0]["key"] == "cloud.example.com/accelerator"
    assert "affinity" not in pod_spec(ks.train_on_gpu.resources, options.replace(gpu_label=""))


def test_job_names_are_dns_labels_and_stable(runner) -> None:
    a, _ = _build(ks.train_on_gpu, {"numbers": [1]}, runner)
    b, _ = _build(ks.train_on_gpu, {"numbers": [1]}, runner)
    c, _ = _build(ks.train_on_gpu, {"numbers": [2]}, runner)
    assert a.name == b.name != c.name
    assert len(a.name) <= 63 and a.name.startswith("isthmus-train-on-gpu-")


@pytest.mark.postgres
def test_store_url_with_a_password_and_credentials_appear_only_as_references(pg_password_url, monkeypatch) -> None:
    """The submitter's store URL holds a password; the Job manifest (and the job record) name Secrets only."""
    from isthmus.runner import StepRunner
    from isthmus.store import MetadataStore

    password = PG_PASSWORD
    with_password = pg_password_url
    monkeypatch.setenv("OPENLINEAGE_API_KEY", "ol-api-key-0123456789abcdef0123456789")
    store = MetadataStore(with_password)
    from isthmus import defaults

    runner = StepRunner(store, defaults.artifact_store())
    try:
        job, secret = _build(
            ks.train_on_gpu,
            {"numbers": [1, 2]},
            runner,
            env_from=["isthmus-artifact-credentials"],
        )
        text_job = json.dumps(job.job) + json.dumps(job.to_dict())
        assert password not in text_job
        assert "ol-api-key" not in text_job
        key = secret["stringData"]["ISTHMUS_MANIFEST_KEY"]
        assert key not in text_job
        assert password in secret["stringData"]["ISTHMUS_STORE_URL"]  # only in the Job's own Secret
        env = {e["name"]: e for e in job.container["env"]}
        for name in ("ISTHMUS_STORE_URL", "ISTHMUS_MANIFEST_KEY", "OPENLINEAGE_API_KEY"):
            assert env[name] == {
                "name": name,
                "valueFrom": {"secretKeyRef": {"name": job.secret_name, "key": name}},
            }
        assert job.container["envFrom"] == [{"secretRef": {"name": "isthmus-artifact-credentials"}}]
        plain = {e["name"]: e["value"] for e in job.container["env"] if "value" in e}
        assert plain["ISTHMUS_HOME"] == "/tmp/isthmus" and "ISTHMUS_ARTIFACT_ROOT" in plain
        validate_manifest(job.job)
        validate_manifest(secret)

        # a store Secret the cluster already holds: the submitter's URL goes nowhere
        job2, secret2 = _build(ks.train_on_gpu, {"numbers": [1, 2]}, runner, store_secret="isthmus-store")
        assert password not in json.dumps(secret2) + json.dumps(job2.job)
        env2 = {e["name"]: e for e in job2.container["env"]}
        assert env2["ISTHMUS_STORE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "isthmus-store",
            "key": "ISTHMUS_STORE_URL",
        }
        # record="manifest": the pods need no store URL at all
        job3, secret3 = _build(ks.train_on_gpu, {"numbers": [1, 2]}, runner, record="manifest")
        assert "ISTHMUS_STORE_URL" not in json.dumps(job3.job) + json.dumps(secret3)
        assert "--record" in job3.container["command"] and "manifest" in job3.container["command"]
    finally:
        store.dispose()


def test_secret_parameters_travel_in_the_jobs_secret_only(runner) -> None:
    from pydantic import SecretStr

    from isthmus import step

    job, secret = _build(ks.make_numbers, {"n": 3}, runner)
    assert "ISTHMUS_SECRET_PARAMS" not in secret["stringData"]
    token = "tok-ZZ-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    ex = KubernetesJobExecutor(runner, image=IMAGE)
    s = step(_with_token, name="with_token")
    inputs, params = ex.split_arguments(s, {"token": SecretStr(token), "n": 2})
    job, secret = ex.build(s, inputs, params, RunContext(orchestrator="kubernetes"))
    assert token not in json.dumps(job.job) and "ISTHMUS_SECRET_PARAMS" in secret["stringData"]


def _with_token(token: str, n: int) -> int:
    return n


def test_configuration_mistakes_are_one_line_errors(runner, monkeypatch) -> None:
    monkeypatch.delenv("ISTHMUS_K8S_IMAGE", raising=False)
    ex = KubernetesJobExecutor(runner)
    with pytest.raises(StepDefinitionError, match=r"step 'make_numbers': no container image .*ISTHMUS_K8S_IMAGE"):
        ex.build(ks.make_numbers, {}, {"n": 1}, RunContext())
    with pytest.raises(StepDefinitionError, match="env: DB_PASSWORD looks like a credential.*env_from"):
        K8sJobOptions(env={"DB_PASSWORD": "s3cr3t-value"})
    with pytest.raises(StepDefinitionError, match="namespace='Bad_NS'"):
        K8sJobOptions(namespace="Bad_NS")
    with pytest.raises(StepDefinitionError, match="effect 'Sometimes'"):
        pod_spec({"extra": {"tolerations": "gpu:Sometimes"}})
    monkeypatch.setenv("ISTHMUS_K8S_IMAGE", "from-env:2")
    monkeypatch.setenv("ISTHMUS_K8S_NAMESPACE", "ml")
    opts = K8sJobOptions()
    assert (opts.image, opts.namespace) == ("from-env:2", "ml")
    per_step = pod_spec({"cpu": 1, "extra": {"image": "per-step:3"}}, opts)
    assert "image" not in per_step["containers"][0]  # no entrypoint: a template only
    from isthmus.k8s.spec import image_for
    from isthmus.resources import Resources

    assert image_for(Resources(extra={"image": "per-step:3"}), opts) == "per-step:3"
