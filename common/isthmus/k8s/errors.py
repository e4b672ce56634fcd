"""The Kubernetes exceptions: one tree under :class:`isthmus.errors.IsthmusError`.

- :class:`K8sError`: an API call failed (``K8sUnavailable``: no cluster configuration or the API server
  cannot be reached; ``K8sSubmitError``: the API server refused the Job);
- :class:`K8sStepFailed`: a step's Job did not complete (its state, reason, the step's error and the pod log).
"""

from __future__ import annotations

from isthmus.errors import IsthmusError
from isthmus.k8s.states import is_retryable


class K8sError(IsthmusError):
    """A Kubernetes API call failed. The message names the call, what the API server said and the fix."""


class K8sUnavailable(K8sError, ConnectionError):
    """No in-cluster configuration or kubeconfig, or the API server cannot be reached."""


class K8sSubmitError(K8sError):
    """The API server refused the Job or its Secret (quota, admission, RBAC, ...). No Job exists."""


class K8sStepFailed(K8sError):
    """The Job of a step did not complete: its ``state`` (FAILED, OUT_OF_MEMORY, TIMEOUT, EVICTED,
    IMAGE_PULL, CONFIG_ERROR, LOST, CANCELLED), the pod's reason, the step's error and traceback when it
    raised, and the tail of the pod log."""

    def __init__(
        self,
        message: str,
        *,
        step_name: str,
        job_name: str,
        state: str,
        reason: str | None = None,
        error: str | None = None,
        traceback: str | None = None,
        log: str = "",
        step_run_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.step_name = step_name
        self.job_name = job_name
        self.state = state
        self.reason = reason
        self.error = error
        self.traceback = traceback
        self.log = log
        self.step_run_id = step_run_id

    @property
    def retryable(self) -> bool:
        """True when the pod failed for a reason that is not the step's (eviction, a lost node)."""
        return is_retryable(self.state)
