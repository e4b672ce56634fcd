"""isthmus ``Resources`` -> Flyte 2 task settings.

- cpu / memory -> ``flyte.Resources(cpu=, memory=)``, as request and limit (a ``(request, limit)`` pair);
  ``extra["ephemeral_storage"]`` -> ``disk``;
- gpu / gpu_type -> ``flyte.GPU(device, quantity, partition)`` (``"A100"``, ``"A100-80GB"``, ``"T4"``,
  ``"A100:1g.5gb"`` for a MIG partition), or a GPU count when no type is given;
- ``node_selector`` -> a ``flyte.PodTemplate`` (needs the ``kubernetes`` package, extra ``k8s``);
- ``time_limit`` -> the task timeout.

``partition``/``account``/``qos`` (Slurm) have no Flyte equivalent; they stay in the run's metadata.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from isthmus.errors import StepDefinitionError
from isthmus.resources import Resources, format_memory

_NAMES = {"A10080GB": "A100_80G", "A10080G": "A100_80G", "L40S": "L40s", "RTXPRO6000": "RTX_PRO_6000"}


def _cpu(cpu: float) -> str:
    return str(int(cpu)) if float(cpu).is_integer() else f"{round(cpu * 1000)}m"


def gpu_device(gpu: int, gpu_type: str | None, where: str) -> Any:
    """What ``flyte.Resources(gpu=...)`` takes for ``gpu`` devices of ``gpu_type``."""
    if not gpu_type:
        return gpu
    import flyte

    name, _, partition = gpu_type.partition(":")
    key = re.sub(r"[^A-Z0-9]", "", name.upper()).removeprefix("NVIDIA").removeprefix("TESLA")
    device = _NAMES.get(key, key)
    try:
        spec: dict[str, Any] = {"device": device, "quantity": gpu, "partition": partition.strip() or None}
        return flyte.GPU(**spec)  # flyte checks the device, quantity and partition
    except (ValueError, TypeError) as exc:
        raise StepDefinitionError(f"{where}: gpu_type={gpu_type!r} (gpu={gpu}) is no Flyte 2 GPU: {exc}") from None


def flyte2_resources(res: Resources, where: str = "step") -> Any:
    """``flyte.Resources`` for ``res`` (None when it asks for no cpu, memory, gpu or disk)."""
    import flyte

    kw: dict[str, Any] = {}
    if res.cpu:
        kw["cpu"] = (_cpu(res.cpu), _cpu(res.cpu))
    if res.memory:
        kw["memory"] = (format_memory(res.memory), format_memory(res.memory))
    if res.gpu:
        kw["gpu"] = gpu_device(res.gpu, res.gpu_type, where)
    storage = res.extra.get("ephemeral_storage")
    if storage:
        kw["disk"] = str(storage)
    return flyte.Resources(**kw) if kw else None


def pod_template(res: Resources, where: str = "step") -> Any:
    """A ``flyte.PodTemplate`` with the step's node selector (None without one)."""
    if not res.node_selector:
        return None
    import flyte

    try:
        from kubernetes.client import V1PodSpec
    except ImportError:
        raise StepDefinitionError(
            f"{where}: node_selector={res.node_selector!r} needs the kubernetes package for a Flyte 2 pod "
            "template; install isthmus[flyte2,k8s]"
        ) from None
    spec = V1PodSpec(containers=[], node_selector=dict(res.node_selector))
    return flyte.PodTemplate(pod_spec=spec)


def timeout_for(res: Resources) -> dt.timedelta | None:
    return dt.timedelta(seconds=res.time_limit) if res.time_limit else None
