"""``K8sJobOptions``: how isthmus shapes a step's pod beyond the step's own ``Resources``.

One value object for the executor, the Airflow operator and the Flyte plugin. Unset fields fall back to
the environment: ``ISTHMUS_K8S_IMAGE``, ``ISTHMUS_K8S_NAMESPACE``, ``ISTHMUS_K8S_SERVICE_ACCOUNT``,
``ISTHMUS_K8S_STORE_SECRET`` and ``ISTHMUS_K8S_ENV_FROM`` (comma-separated Secret names).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from isthmus.errors import StepDefinitionError
from isthmus.redaction import is_secret_env

RECORD_MODES = ("db", "manifest")
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPU_LABEL = "nvidia.com/gpu.product"
CONTAINER_NAME = "primary"  # Flyte's primary container name; the Airflow operator's base container name
STORE_URL_KEY = "ISTHMUS_STORE_URL"  # the key of the store Secret (and of the per-job Secret) holding it
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_QUALIFIED = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


@dataclass(frozen=True)
class K8sJobOptions:
    """Options of a step's pod (all optional).

    - ``image``: the container image (with the project and isthmus installed); a step's
      ``Resources(extra={"image": ...})`` wins; default ``$ISTHMUS_K8S_IMAGE``;
    - ``namespace`` (default ``$ISTHMUS_K8S_NAMESPACE`` or ``default``), ``service_account`` (a step's
      ``extra["service_account"]`` wins);
    - ``gpu_resource``: the extended resource a GPU is requested as (``nvidia.com/gpu``, ``amd.com/gpu``);
      ``gpu_label``: the node label ``gpu_type`` must match (``nvidia.com/gpu.product``; ``""``: no
      affinity, e.g. where Flyte places GPUs through its accelerator);
    - ``store_secret``: an existing Secret whose key ``ISTHMUS_STORE_URL`` is the metadata store the pods
      use (default: the submitter's URL, put in the Job's own Secret); ``env_from``: Secrets whose keys
      all become environment variables (artifact-store credentials, ...);
    - ``env``: plain variables (a value that looks like a credential is refused: use a Secret);
    - ``python``: the interpreter in the image; ``record``: ``db`` or ``manifest`` (pods that cannot
      reach the metadata database); ``labels``, ``image_pull_policy``, ``ttl_seconds_after_finished``.
    """

    image: str | None = None
    namespace: str | None = None
    service_account: str | None = None
    gpu_resource: str = DEFAULT_GPU_RESOURCE
    gpu_label: str = DEFAULT_GPU_LABEL
    store_secret: str | None = None
    env_from: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    python: str = "python"
    record: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    image_pull_policy: str | None = None
    ttl_seconds_after_finished: int | None = 3600

    def __post_init__(self) -> None:
        env = os.environ
        defaults = {
            "image": env.get("ISTHMUS_K8S_IMAGE"),
            "namespace": env.get("ISTHMUS_K8S_NAMESPACE") or "default",
            "service_account": env.get("ISTHMUS_K8S_SERVICE_ACCOUNT"),
            "store_secret": env.get("ISTHMUS_K8S_STORE_SECRET"),
        }
        for name, fallback in defaults.items():
            value = getattr(self, name)
            object.__setattr__(self, name, str(value) if value not in (None, "") else (fallback or None))
        env_from = self.env_from or [s for s in env.get("ISTHMUS_K8S_ENV_FROM", "").split(",") if s.strip()]
        if isinstance(env_from, str) or not isinstance(env_from, Sequence):
            raise StepDefinitionError(f"env_from={env_from!r} must be a list of Secret names")
        object.__setattr__(self, "env_from", tuple(str(s).strip() for s in env_from))
        for attr in ("env", "labels"):
            value = getattr(self, attr) or {}
            if not isinstance(value, Mapping):
                raise StepDefinitionError(f"{attr}={value!r} must be a dict of strings")
            object.__setattr__(self, attr, {str(k): str(v) for k, v in value.items()})
        self.validate()

    def validate(self) -> None:
        """Reject what the API server would refuse, naming the value and the fix."""
        if self.record not in (None, *RECORD_MODES):
            raise StepDefinitionError(f"record={self.record!r} must be 'db' or 'manifest'")
        if not _DNS_LABEL.fullmatch(self.namespace or ""):
            raise StepDefinitionError(f"namespace={self.namespace!r} is not a Kubernetes namespace name (e.g. 'ml')")
        for attr in ("service_account", "store_secret"):
            value = getattr(self, attr)
            if value is not None and not _DNS_SUBDOMAIN.fullmatch(value):
                raise StepDefinitionError(f"{attr}={value!r} is not a Kubernetes object name (lowercase, '-', '.')")
        for name in self.env_from:
            if not _DNS_SUBDOMAIN.fullmatch(name):
                raise StepDefinitionError(f"env_from: {name!r} is not a Secret name (lowercase letters, digits, '-')")
        if not _QUALIFIED.fullmatch(self.gpu_resource):
            raise StepDefinitionError(
                f"gpu_resource={self.gpu_resource!r} is not a resource name (e.g. nvidia.com/gpu)"
            )
        if self.gpu_label and not _QUALIFIED.fullmatch(self.gpu_label):
            raise StepDefinitionError(f"gpu_label={self.gpu_label!r} is not a label key (e.g. nvidia.com/gpu.product)")
        if self.image_pull_policy not in (None, "Always", "IfNotPresent", "Never"):
            raise StepDefinitionError(
                f"image_pull_policy={self.image_pull_policy!r} must be 'Always', 'IfNotPresent' or 'Never'"
            )
        for key, value in self.env.items():
            if not _ENV_NAME.fullmatch(key):
                raise StepDefinitionError(f"env: {key!r} is not an environment variable name")
            if is_secret_env(key, value):
                raise StepDefinitionError(
                    f"env: {key} looks like a credential; put it in a Kubernetes Secret and name the Secret in "
                    "env_from= (its value never goes into a pod manifest)"
                )
        for key, value in self.labels.items():
            if not _QUALIFIED.fullmatch(key) or (value and not _QUALIFIED.fullmatch(value)) or len(value) > 63:
                raise StepDefinitionError(f"labels: {key}={value!r} is not a valid Kubernetes label")

    @property
    def record_mode(self) -> str:
        """``record``, or ``"db"`` when unset."""
        return self.record or RECORD_MODES[0]

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> K8sJobOptions:
        """The options among ``data``'s keys (others ignored; empty values unset)."""
        data = data or {}
        return cls(**{k: data[k] for k in cls.names() if data.get(k) not in (None, "", [], (), {})})

    def replace(self, **changes: Any) -> K8sJobOptions:
        return dataclasses.replace(self, **changes)


__all__ = ["CONTAINER_NAME", "DEFAULT_GPU_LABEL", "DEFAULT_GPU_RESOURCE", "K8sJobOptions", "RECORD_MODES"]
