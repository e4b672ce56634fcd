"""What a Job and its pod say, as one state a caller waiting on a step can act on.

Input is the API's JSON form (``ApiClient().sanitize_for_serialization`` of a ``V1Job``/``V1Pod``, or a
recorded object): camelCase keys. Every state is *transient* (keep watching), *success* (only
``SUCCEEDED``: the Job has condition ``Complete``) or *failed*. A failed state may be *retryable* (not the
step's fault: the pod was evicted or its node was lost). Anything this module does not know is never
success: an unknown phase keeps the caller watching, and a Job that vanished is ``LOST``.

=================================  ==================  =============================================
Job / pod                          state               why
=================================  ==================  =============================================
Job condition Complete             SUCCEEDED
Job Failed, DeadlineExceeded       TIMEOUT             ``activeDeadlineSeconds`` (time_limit) passed
container terminated OOMKilled     OUT_OF_MEMORY       the step used more than its memory limit
pod status.reason Evicted          EVICTED (retry)     the node ran short (disk, memory pressure)
pod reason DeadlineExceeded        TIMEOUT
waiting ImagePullBackOff,          IMAGE_PULL          the image cannot be pulled (name, registry
  InvalidImageName, ErrImageNever                      credentials); ``ErrImagePull`` is retried by
                                                       the kubelet first: transient
waiting CreateContainerConfigError CONFIG_ERROR        a Secret or key the pod references is missing
other Job Failed / pod Failed      FAILED              the step's process exited non-zero
Job condition FailureTarget        FAILED              the Job controller decided it failed
Job suspended                      SUSPENDED           transient
pod Pending (unschedulable, ...)   PENDING             transient; the reason is kept
pod Running                        RUNNING             transient
pod phase Unknown / anything else  UNKNOWN             transient, never success
Job not found                      LOST                failed
deleted by isthmus on cancel       CANCELLED           failed
=================================  ==================  =============================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

SUCCESS = frozenset({"SUCCEEDED"})
TRANSIENT = frozenset({"PENDING", "RUNNING", "SUSPENDED", "UNKNOWN"})
FAILED = frozenset({"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "EVICTED", "IMAGE_PULL", "CONFIG_ERROR", "LOST", "CANCELLED"})
RETRYABLE = frozenset({"EVICTED"})
WAITING = frozenset({"PENDING", "SUSPENDED"})  # the step's code is not running (yet): lineage says OTHER
IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_REASONS = frozenset({"CreateContainerConfigError"})
FIXES = {
    "TIMEOUT": "raise Resources(time_limit=...) for this step",
    "OUT_OF_MEMORY": "raise Resources(memory=...) for this step",
    "EVICTED": "the node ran short of resources; retry, or set Resources(extra={'ephemeral_storage': ...})",
    "IMAGE_PULL": "check the image name (ISTHMUS_K8S_IMAGE or extra['image']) and the registry credentials",
    "CONFIG_ERROR": "create the Secret the pod references (store_secret / env_from) in the Job's namespace",
}


def is_terminal(state: str) -> bool:
    return state in SUCCESS or state in FAILED


def is_retryable(state: str) -> bool:
    return state in RETRYABLE


@dataclass(frozen=True)
class PodStatus:
    """The state of a step's Job, with the pod's reason, message, exit code and node."""

    job_name: str
    state: str
    reason: str | None = None
    message: str | None = None
    pod_name: str | None = None
    node: str | None = None
    exit_code: int | None = None

    @property
    def terminal(self) -> bool:
        return is_terminal(self.state)

    @property
    def success(self) -> bool:
        return self.state in SUCCESS

    @property
    def retryable(self) -> bool:
        return is_retryable(self.state)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """True conditions by type."""
    out = {}
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and str(cond.get("status")) == "True" and cond.get("type"):
            out[str(cond["type"])] = cond
    return out


def _container_statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def pod_state(pod: Mapping[str, Any]) -> tuple[str, str | None, str | None, int | None]:
    """(state, reason, message, exit code) of one pod."""
    status = pod.get("status") or {}
    phase = status.get("phase")
    for cs in _container_statuses(pod):
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason")
        if reason in IMAGE_PULL_REASONS:
            return "IMAGE_PULL", reason, waiting.get("message"), None
        if reason in CONFIG_REASONS:
            return "CONFIG_ERROR", reason, waiting.get("message"), None
        term = state.get("terminated") or {}
        if term.get("reason") == "OOMKilled":
            return "OUT_OF_MEMORY", "OOMKilled", term.get("message"), term.get("exitCode")
    if status.get("reason") == "Evicted":
        return "EVICTED", "Evicted", status.get("message"), None
    if status.get("reason") == "DeadlineExceeded":
        return "TIMEOUT", "DeadlineExceeded", status.get("message"), None
    if phase == "Failed":
        code = None
        reason = status.get("reason")
        for cs in _container_statuses(pod):
            term = (cs.get("state") or {}).get("terminated") or {}
            if term.get("exitCode"):
                code, reason = term.get("exitCode"), term.get("reason") or reason
        return "FAILED", reason, status.get("message"), code
    if phase == "Succeeded":
        return "SUCCEEDED", None, None, 0
    if phase == "Running":
        return "RUNNING", None, None, None
    if phase == "Pending":
        reason = None
        message = None
        for cs in _container_statuses(pod):
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason, message = waiting.get("reason") or reason, waiting.get("message") or message
        scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
        if scheduled and str(scheduled.get("status")) == "False":
            reason, message = scheduled.get("reason") or reason, scheduled.get("message") or message
        return "PENDING", reason, message, None
    return "UNKNOWN", phase, status.get("message"), None


def job_state(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]] = (), job_name: str = "") -> PodStatus:
    """The state of a Job (``None``: not found -> LOST) given its pods (newest decides a pod reason)."""
    if job is None:
        return PodStatus(job_name, "LOST", "NotFound", "the Job no longer exists and left no result")
    name = str((job.get("metadata") or {}).get("name") or job_name)
    pods = sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
    pod = pods[-1] if pods else None
    pod_name = str((pod.get("metadata") or {}).get("name")) if pod else None
    node = (pod.get("spec") or {}).get("nodeName") if pod else None
    p_state, p_reason, p_message, p_code = pod_state(pod) if pod else ("PENDING", None, None, None)
    conds = _conditions(job)

    def status(state: str, reason: str | None, message: str | None, code: int | None = None) -> PodStatus:
        return PodStatus(name, state, reason, message, pod_name, node, code)

    if "Complete" in conds:
        return status("SUCCEEDED", None, None, 0)
    failed = conds.get("Failed") or conds.get("FailureTarget")
    if failed is not None:
        reason = failed.get("reason")
        if reason == "DeadlineExceeded":
            return status("TIMEOUT", reason, failed.get("message"))
        if p_state in FAILED:  # the pod says why (OOMKilled, Evicted, ...)
            return status(p_state, p_reason, p_message, p_code)
        return status("FAILED", reason or p_reason, failed.get("message") or p_message, p_code)
    if p_state in FAILED:
        return status(p_state, p_reason, p_message, p_code)
    if "Suspended" in conds or (job.get("spec") or {}).get("suspend"):
        return status("SUSPENDED", "Suspended", None)
    if p_state == "SUCCEEDED":  # the Job is not Complete yet: keep watching
        return status("RUNNING", "PodSucceeded", None, 0)
    return status(p_state, p_reason, p_message, p_code)


__all__ = ["FAILED", "FIXES", "SUCCESS", "TRANSIENT", "WAITING", "PodStatus", "is_terminal", "job_state", "pod_state"]
