"""isthmus ``Resources`` -> flytekit task settings.

- cpu / memory / gpu (and ``extra["ephemeral_storage"]``) -> ``flytekit.Resources`` set as requests AND
  limits, explicitly (a single flytekit value would only set the request);
- ``gpu_type`` -> an accelerator from ``flytekit.extras.accelerators`` (``"A100"``, ``"A100-80GB"``,
  ``"T4"``, ``"A100:1g.5gb"`` for a MIG partition, or a device name such as ``"nvidia-l4"``);
- ``node_selector`` and tolerations -> a ``PodTemplate`` (tolerations from the ``Isthmus`` config or
  ``extra["tolerations"]`` written like kubectl taints: ``"key=value:NoSchedule,gpu:NoExecute"``);
- ``time_limit`` -> the task timeout.

``partition``/``account``/``qos`` have no Flyte equivalent; they stay in the run's metadata.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from isthmus.errors import StepDefinitionError
from isthmus.resources import Resources, format_memory

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


def cpu_quantity(cpu: float) -> str:
    """Kubernetes CPU quantity: '2', '0.5' -> '500m'."""
    if float(cpu).is_integer():
        return str(int(cpu))
    return f"{round(cpu * 1000)}m"


def flyte_resources(res: Resources) -> Any:
    """``flytekit.Resources`` for ``res`` (None if it asks for no cpu, memory, gpu or storage)."""
    from flytekit import Resources as FlyteResources

    kw: dict[str, Any] = {}
    if res.cpu:
        kw["cpu"] = cpu_quantity(res.cpu)
    if res.memory:
        kw["mem"] = format_memory(res.memory)
    if res.gpu:
        kw["gpu"] = str(res.gpu)
    storage = res.extra.get("ephemeral_storage")
    if storage:
        kw["ephemeral_storage"] = str(storage)
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


def parse_tolerations(text: str) -> list[dict[str, str]]:
    """``"key=value:Effect,key2:Effect"`` -> toleration dicts (``Exists`` when no value is given)."""
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        kv, _, effect = item.partition(":")
        key, eq, value = kv.partition("=")
        if not key:
            raise StepDefinitionError(f"toleration {item!r}: write it like 'key=value:NoSchedule' or 'key:NoExecute'")
        tol = {"key": key.strip(), "operator": "Equal" if eq else "Exists"}
        if eq:
            tol["value"] = value.strip()
        if effect:
            tol["effect"] = effect.strip()
        out.append(tol)
    return out


def _toleration(item: Any) -> Any:
    from kubernetes.client import V1Toleration

    if isinstance(item, V1Toleration):
        return item
    if isinstance(item, dict):
        return V1Toleration(**{k: v for k, v in item.items() if v is not None})
    raise StepDefinitionError(f"toleration {item!r} must be a dict (key, operator, value, effect) or V1Toleration")


def pod_template_for(node_selector: dict[str, str], tolerations: list[Any]) -> Any:
    """A PodTemplate with the node selector and tolerations (None if there are neither)."""
    if not node_selector and not tolerations:
        return None
    from flytekit import PodTemplate
    from kubernetes.client import V1PodSpec

    spec = V1PodSpec(
        containers=[],
        node_selector=dict(node_selector) or None,
        tolerations=[_toleration(t) for t in tolerations] or None,
    )
    return PodTemplate(pod_spec=spec, primary_container_name="primary")


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
    tols = list(tolerations)
    extra_tols = res.extra.get("tolerations")
    if extra_tols:
        tols.extend(parse_tolerations(extra_tols))
    if given.get("pod_template") is None and given.get("pod_template_name") is None:
        template = pod_template_for(res.node_selector, tols)
        if template is not None:
            out["pod_template"] = template
    return out


def timeout_for(res: Resources) -> dt.timedelta | None:
    return dt.timedelta(seconds=res.time_limit) if res.time_limit else None
