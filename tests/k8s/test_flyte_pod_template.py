"""Flyte's pod template comes from the one mapping: the serialized task's pod spec is
:func:`isthmus.k8s.spec.pod_spec`'s, with only what flytekit owns in the primary container (image,
command, args, environment; its resource names for the same quantities)."""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

from flytekit.configuration import Image, ImageConfig, SerializationSettings
from flytekit.tools.translator import get_serializable

from flytekitplugins.isthmus import Isthmus, isthmus_task
from flytekitplugins.isthmus.resources import flyte_options, flyte_pod_spec
from isthmus import RunContext
from isthmus.k8s import KubernetesJobExecutor, pod_manifest, pod_spec
from tests.k8s import steps as ks
from tests.k8s.conftest import validate_manifest

SETTINGS = SerializationSettings(
    project="proj",
    domain="development",
    version="v1",
    image_config=ImageConfig(default_image=Image(name="default", fqn="registry.example/isthmus-project", tag="1.0")),
    env={},
)
# flytekit's names for the same quantities (flytepropeller maps "gpu" to the cluster's GPU resource)
FLYTEKIT_NAMES = {"gpu": "nvidia.com/gpu", "ephemeral_storage": "ephemeral-storage"}
FLYTEKIT_OWNED = ("image", "command", "args", "env")


def _without_flytekit_fields(spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    container = spec["containers"][0]
    for key in FLYTEKIT_OWNED:
        container.pop(key, None)
    for side in ("requests", "limits"):
        values = container.get("resources", {}).get(side, {})
        container["resources"][side] = {FLYTEKIT_NAMES.get(k, k): v for k, v in values.items()}
    return spec


def test_the_serialized_flyte_pod_template_is_the_one_mapping() -> None:
    tolerations = [{"key": "spot", "operator": "Exists"}]
    task = isthmus_task(ks.train_on_gpu, task_config=Isthmus(tolerations=tolerations))
    template = get_serializable(OrderedDict(), SETTINGS, task).template
    serialized = template.k8s_pod.pod_spec
    expected = flyte_pod_spec(ks.train_on_gpu.resources, tolerations)
    assert _without_flytekit_fields(serialized) == expected
    assert template.config == {"primary_container_name": "primary"}
    assert serialized["containers"][0]["args"][0] == "pyflyte-execute"  # flytekit's own entrypoint
    # it is pod_spec() itself (plus the task config's tolerations first) ...
    direct = pod_spec(ks.train_on_gpu.resources, flyte_options())
    assert {**direct, "tolerations": [tolerations[0], *direct["tolerations"]]} == expected
    # ... and a valid pod for the Kubernetes API
    validate_manifest(pod_manifest("flyte-task", serialized, flyte_options(), {}))


def test_the_cli_job_and_the_flyte_template_share_every_pod_field(runner) -> None:
    """Same step, same options: the Job's pod spec (CLI / executor path) and Flyte's pod template differ
    only in what each orchestrator's entrypoint owns."""
    options = flyte_options()
    ex = KubernetesJobExecutor(runner, options=options.replace(image="registry.example/isthmus-project:1.0"))
    inputs, params = ex.split_arguments(ks.train_on_gpu, {"numbers": [1, 2]})
    job, _ = ex.build(ks.train_on_gpu, inputs, params, RunContext(orchestrator="kubernetes"))
    job_pod = _without_flytekit_fields(job.job["spec"]["template"]["spec"])
    template = get_serializable(OrderedDict(), SETTINGS, isthmus_task(ks.train_on_gpu)).template
    assert job_pod == _without_flytekit_fields(template.k8s_pod.pod_spec)


def test_steps_without_pod_level_settings_keep_flytekits_own_fields() -> None:
    template = get_serializable(OrderedDict(), SETTINGS, isthmus_task(ks.make_numbers)).template
    assert template.k8s_pod is None  # cpu/memory/timeout: flytekit's resources and metadata say it all
    assert template.metadata.timeout.total_seconds() == 600
