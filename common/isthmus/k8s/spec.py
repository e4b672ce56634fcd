"""The one mapping from a step's ``Resources`` to Kubernetes: a pod spec, and the ``batch/v1`` Job and
``v1`` Pod manifests around it, as the JSON the API server takes (camelCase keys).

:func:`pod_spec` is the only place ``Resources`` become Kubernetes fields; the executor, the Airflow
operator and the Flyte pod template all call it:

- ``cpu``/``memory`` (and ``extra["ephemeral_storage"]``) -> container requests AND limits, equal;
- ``gpu`` -> ``options.gpu_resource`` (``nvidia.com/gpu``) in requests and limits; ``gpu_type`` -> a
  required node affinity on ``options.gpu_label`` (``nvidia.com/gpu.product``);
- ``node_selector`` (and ``extra["node_selector"]``, ``"k=v,k2=v2"``) -> ``nodeSelector``;
  ``extra["tolerations"]`` (kubectl taint form ``"key=value:NoSchedule,key:NoExecute"``) -> tolerations;
  ``extra["service_account"]`` -> ``serviceAccountName``; ``extra["image"]`` -> the image;
- ``time_limit`` -> ``activeDeadlineSeconds`` (rounded up to whole seconds).

Credentials never appear as values: the container's environment holds plain settings, and every secret
(the metadata-store URL, the manifest key, secret parameters, artifact-store credentials) is a
``secretKeyRef`` or an ``envFrom`` Secret reference.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from isthmus.context import RunContext
from isthmus.errors import StepDefinitionError
from isthmus.k8s.options import CONTAINER_NAME, K8sJobOptions
from isthmus.resources import Resources, format_memory

MANAGED_BY = {"app.kubernetes.io/managed-by": "isthmus"}
STEP_LABEL = "isthmus.dev/step"
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9_.-]+")
_NAME_BAD = re.compile(r"[^a-z0-9-]+")


def cpu_quantity(cpu: float) -> str:
    """Kubernetes CPU quantity: 2 -> '2', 0.5 -> '500m' (rounded up to a millicore)."""
    if float(cpu).is_integer():
        return str(int(cpu))
    return f"{math.ceil(round(cpu * 1000, 6))}m"


def parse_tolerations(text: str) -> list[dict[str, str]]:
    """``"key=value:Effect,key2:Effect"`` -> toleration dicts (``Exists`` when no value is given)."""
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        kv, _, effect = item.partition(":")
        key, eq, value = kv.partition("=")
        if not key.strip():
            raise StepDefinitionError(f"toleration {item!r}: write it like 'key=value:NoSchedule' or 'key:NoExecute'")
        if effect and effect.strip() not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise StepDefinitionError(
                f"toleration {item!r}: effect {effect.strip()!r} must be NoSchedule, PreferNoSchedule or NoExecute"
            )
        tol = {"key": key.strip(), "operator": "Equal" if eq else "Exists"}
        if eq:
            tol["value"] = value.strip()
        if effect:
            tol["effect"] = effect.strip()
        out.append(tol)
    return out


def parse_node_selector(text: str) -> dict[str, str]:
    """``"pool=gpu,zone=a"`` -> ``{"pool": "gpu", "zone": "a"}``."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise StepDefinitionError(f"node_selector {item!r}: write it like 'pool=gpu,zone=a'")
        out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class SecretRef:
    """One key of a Kubernetes Secret."""

    secret: str
    key: str


@dataclass(frozen=True)
class Entrypoint:
    """The container that runs a step: image, command, plain environment, and Secret references."""

    image: str
    command: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, SecretRef] = field(default_factory=dict)
    env_from: Sequence[str] = ()


def container_resources(res: Resources, options: K8sJobOptions) -> dict[str, dict[str, str]]:
    """``{"requests": ..., "limits": ...}``, equal (empty when the step asks for nothing)."""
    quantities: dict[str, str] = {}
    if res.cpu:
        quantities["cpu"] = cpu_quantity(res.cpu)
    if res.memory:
        quantities["memory"] = format_memory(res.memory)
    storage = res.extra.get("ephemeral_storage")
    if storage:
        quantities["ephemeral-storage"] = str(storage)
    if res.gpu:
        quantities[options.gpu_resource] = str(res.gpu)
    return {"requests": dict(quantities), "limits": dict(quantities)} if quantities else {}


def image_for(res: Resources, options: K8sJobOptions) -> str | None:
    """The step's image: ``Resources(extra={"image": ...})``, else the options' (``$ISTHMUS_K8S_IMAGE``)."""
    return res.extra.get("image") or options.image


def pod_spec(
    resources: Resources | Mapping[str, Any] | None,
    options: K8sJobOptions | None = None,
    *,
    entrypoint: Entrypoint | None = None,
    label: str = "",
) -> dict[str, Any]:
    """The pod spec for a step's ``resources`` (see the module docstring). Without ``entrypoint`` the
    container has only its name and resources (a pod template the orchestrator completes, as Flyte does).
    ``label`` prefixes error messages (``"step 'train': "``)."""
    options = options or K8sJobOptions()
    try:
        res = Resources.coerce(resources)
        extra = res.extra
        node_selector = {**parse_node_selector(extra.get("node_selector", "")), **res.node_selector}
        tolerations = parse_tolerations(extra.get("tolerations", ""))
    except StepDefinitionError as exc:
        raise StepDefinitionError(f"{label}{exc}") from None
    container: dict[str, Any] = {"name": CONTAINER_NAME}
    if entrypoint is not None:
        container["image"] = entrypoint.image
        container["command"] = list(entrypoint.command)
        env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in entrypoint.env.items()]
        env += [
            {"name": k, "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": ref.key}}}
            for k, ref in entrypoint.secret_env.items()
        ]
        if env:
            container["env"] = env
        if entrypoint.env_from:
            container["envFrom"] = [{"secretRef": {"name": name}} for name in entrypoint.env_from]
        if options.image_pull_policy:
            container["imagePullPolicy"] = options.image_pull_policy
    requirements = container_resources(res, options)
    if requirements:
        container["resources"] = requirements
    spec: dict[str, Any] = {"containers": [container], "restartPolicy": "Never"}
    if node_selector:
        spec["nodeSelector"] = node_selector
    if res.gpu_type and options.gpu_label:
        term = {"matchExpressions": [{"key": options.gpu_label, "operator": "In", "values": [res.gpu_type]}]}
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
        }
    if tolerations:
        spec["tolerations"] = tolerations
    account = extra.get("service_account") or options.service_account
    if account:
        spec["serviceAccountName"] = account
    if res.time_limit:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(res.time_limit))
    return spec


def labels_for(step_name: str, options: K8sJobOptions) -> dict[str, str]:
    """The labels of a step's Job and pod: isthmus as manager, the step's name (as a label value)."""
    value = _LABEL_VALUE_BAD.sub("-", step_name)[:63].strip("-_.") or "step"
    return {**options.labels, **MANAGED_BY, STEP_LABEL: value}


def job_manifest(
    name: str, pod: Mapping[str, Any], options: K8sJobOptions, labels: Mapping[str, str]
) -> dict[str, Any]:
    """A ``batch/v1`` Job running ``pod`` once (no Job-level retries: the step's own retries and the
    orchestrator's run inside and around it), with the pod's deadline as the Job's."""
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {"metadata": {"labels": dict(labels)}, "spec": dict(pod)},
    }
    if pod.get("activeDeadlineSeconds"):
        spec["activeDeadlineSeconds"] = pod["activeDeadlineSeconds"]
    if options.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = options.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": options.namespace, "labels": dict(labels)},
        "spec": spec,
    }


def pod_manifest(
    name: str, pod: Mapping[str, Any], options: K8sJobOptions, labels: Mapping[str, str]
) -> dict[str, Any]:
    """A bare ``v1`` Pod (what the Airflow operator starts)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": options.namespace, "labels": dict(labels)},
        "spec": dict(pod),
    }


def secret_manifest(
    name: str, values: Mapping[str, str], options: K8sJobOptions, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The Job's own ``v1`` Secret (sent to the API server only; never recorded or logged)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": options.namespace, "labels": dict(labels)},
        "stringData": dict(values),
    }


def run_step_command(
    step_path: str,
    *,
    inputs: Mapping[str, Any],
    params: Mapping[str, Any],
    context: RunContext,
    record: str,
    manifest: str,
    python: str = "python",
) -> list[str]:
    """``python -m isthmus run-step ...``: the remote entrypoint contract (see :mod:`isthmus.remote`)."""
    return [
        python,
        "-m",
        "isthmus",
        "run-step",
        "--step",
        step_path,
        "--inputs",
        json.dumps(dict(inputs), sort_keys=True),
        "--params",
        json.dumps(dict(params), sort_keys=True),
        "--context",
        json.dumps(context.to_dict(), sort_keys=True, default=str),
        "--record",
        record,
        "--manifest",
        manifest,
    ]


def job_name_for(step_name: str, context: RunContext | None, cache_key: str | None = None, salt: str = "") -> str:
    """A DNS-1123 name (at most 63 characters) derived from the run context and cache key: the same task
    retried derives the same name."""
    ctx = context or RunContext()
    parts = [
        ctx.orchestrator,
        ctx.pipeline_run_id or "",
        ctx.invocation or step_name,
        str((ctx.native or {}).get("map_index", "")),
        cache_key or "",
        salt,
    ]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]
    short = _NAME_BAD.sub("-", step_name.lower()).strip("-")[:40].strip("-") or "step"
    return f"isthmus-{short}-{digest}"


__all__ = [
    "Entrypoint",
    "SecretRef",
    "container_resources",
    "cpu_quantity",
    "image_for",
    "job_manifest",
    "job_name_for",
    "labels_for",
    "parse_node_selector",
    "parse_tolerations",
    "pod_manifest",
    "pod_spec",
    "run_step_command",
    "secret_manifest",
]
