"""isthmus ``Resources`` -> flytekit task settings.

- cpu / memory / gpu (and ``extra["ephemeral_storage"]``) -> ``flytekit.Resources`` set as requests AND
  limits, explicitly (a single flytekit value would only set the request);
- ``gpu_type`` -> an accelerator from ``flytekit.extras.accelerators`` (``"A100"``, ``"A100-80GB"``,
  ``"T4"``, ``"A100:1g.5gb"`` for a MIG partition, or a device name such as ``"nvidia-l4"``);
- ``node_selector``, tolerations and ``extra["service_account"]`` -> a ``PodTemplate`` built by
  :func:`isthmus.k8s.spec.pod_spec`, the one mapping the Kubernetes executor and the Airflow operator use
  (tolerations from the ``Isthmus`` config, then ``extra["tolerations"]`` written like kubectl taints:
  ``"key=value:NoSchedule,gpu:NoExecute"``); GPUs are placed by Flyte's accelerator, not a node affinity;
- ``time_limit`` -> the task timeout.

``partition``/``account``/``qos`` have no Flyte equivalent; they stay in the run's metadata.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from isthmus.errors import StepDefinitionError
from isthmus.k8s.executor import api_model
from isthmus.k8s.options import CONTAINER_NAME, K8sJobOptions
from isthmus.k8s.spec import container_resources, parse_tolerations, pod_spec
from isthmus.resources import Resources

__all__ = [
    "accelerator_for",
    "flyte_pod_spec",
    "flyte_resources",
    "parse_tolerations",
    "pod_template_for",
    "task_settings",
]
# Pod fields that need a pod template (flytekit expresses resources, accelerator and timeout itself).
_TEMPLATE_FIELDS = ("nodeSelector", "affinity", "tolerations", "serviceAccountName")

_ACCELERATORS = {
    "A10G": "A10G",
    "L4": "L4",
    "L4VWS": "L4_VWS",
    "L40S": "L40S",
    "K80": "K80",
    "M60": "M60",
    "P4": "P4",
    "P100": "P100",
    "T4": "T4",
    "V100": "V100",
    "H100": "H100",
    "H200": "H200",
    "RTXPRO6000": "RTX_PRO_6000",
    "A100": "A100",
    "A10080GB": "A100_80GB",
    "V5E": "V5E",
    "V5P": "V5P",
    "V6E": "V6E",
}


# flytekit's names for the quantities of the one mapping (flytepropeller maps "gpu" to the GPU resource)
_FLYTEKIT_NAMES = {"cpu": "cpu", "memory": "mem", "ephemeral-storage": "ephemeral_storage"}


def flyte_resources(res: Resources) -> Any:
    """``flytekit.Resources`` for ``res`` (None if it asks for no cpu, memory, gpu or storage): the
    quantities of :func:`isthmus.k8s.spec.container_resources`, under flytekit's names."""
    from flytekit import Resources as FlyteResources

    options = flyte_options()
    quantities = container_resources(res, options).get("requests", {})
    kw = {_FLYTEKIT_NAMES.get(k, "gpu" if k == options.gpu_resource else k): v for k, v in quantities.items()}
    return FlyteResources(**kw) if kw else None


def accelerator_for(gpu_type: str) -> Any:
    """The flytekit accelerator for a GPU type name."""
    from flytekit.extras import accelerators

    name, _, partition = gpu_type.partition(":")
    key = re.sub(r"[^A-Z0-9]", "", name.upper().removeprefix("NVIDIA").removeprefix("TESLA"))
    key = key.removeprefix("NVIDIA").removeprefix("TESLA")
    attr = _ACCELERATORS.get(key)
    if attr is None:
        if partition:
            raise StepDefinitionError(f"gpu_type={gpu_type!r}: MIG partitions are known for A100, A100-80GB and TPUs")
        return accelerators.GPUAccelerator(name.strip())
    acc = getattr(accelerators, attr)
    if partition:
        if not isinstance(acc, accelerators.MultiInstanceGPUAccelerator):
            raise StepDefinitionError(f"gpu_type={gpu_type!r}: {name} has no MIG partitions")
        return type(acc).partitioned(partition.strip())
    return acc


def _toleration(item: Any) -> dict[str, Any]:
    """A toleration from the ``Isthmus`` config as the API's JSON (a dict, or a ``V1Toleration``)."""
    from kubernetes.client import ApiClient, V1Toleration

    if isinstance(item, V1Toleration):
        return dict(ApiClient().sanitize_for_serialization(item))
    if isinstance(item, dict):
        model = V1Toleration(**{k: v for k, v in item.items() if v is not None})
        return dict(ApiClient().sanitize_for_serialization(model))
    raise StepDefinitionError(f"toleration {item!r} must be a dict (key, operator, value, effect) or V1Toleration")


def flyte_options() -> K8sJobOptions:
    """The pod options of Flyte tasks: the defaults, with no ``gpu_type`` node affinity."""
    return K8sJobOptions(gpu_label="")


def flyte_pod_spec(res: Resources, tolerations: list[Any]) -> dict[str, Any]:
    """The step's pod spec from :func:`isthmus.k8s.spec.pod_spec`, the ``Isthmus`` config's tolerations
    before the step's own. Flyte places GPUs through the task's accelerator (flytepropeller adds its node
    affinity), so the spec asks for no ``gpu_type`` affinity of its own (``gpu_label=""``)."""
    spec = pod_spec(res, flyte_options())
    tols = [_toleration(t) for t in tolerations] + list(spec.get("tolerations") or [])
    if tols:
        spec["tolerations"] = tols
    return spec


def pod_template_for(res: Resources, tolerations: list[Any]) -> Any:
    """A flytekit ``PodTemplate`` holding :func:`flyte_pod_spec` (None when the step needs no pod-level
    setting: then flytekit's own resources, accelerator and timeout say everything)."""
    spec = flyte_pod_spec(res, tolerations)
    if not any(spec.get(f) for f in _TEMPLATE_FIELDS):
        return None
    from flytekit import PodTemplate

    return PodTemplate(pod_spec=api_model(spec, "V1PodSpec"), primary_container_name=CONTAINER_NAME)


def task_settings(res: Resources, tolerations: list[Any], given: dict[str, Any]) -> dict[str, Any]:
    """flytekit task keyword arguments derived from ``res``; what the caller ``given`` explicitly wins."""
    out: dict[str, Any] = {}
    if given.get("requests") is None and given.get("limits") is None and given.get("resources") is None:
        spec = flyte_resources(res)
        if spec is not None:
            out["requests"] = spec
            out["limits"] = flyte_resources(res)  # a distinct object: limits equal requests, explicitly
    if given.get("accelerator") is None and res.gpu_type:
        out["accelerator"] = accelerator_for(res.gpu_type)
    if given.get("pod_template") is None and given.get("pod_template_name") is None:
        template = pod_template_for(res, list(tolerations))
        if template is not None:
            out["pod_template"] = template
    return out


def timeout_for(res: Resources) -> dt.timedelta | None:
    return dt.timedelta(seconds=res.time_limit) if res.time_limit else None
