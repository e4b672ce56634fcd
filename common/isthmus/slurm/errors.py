"""The Slurm exceptions: one tree under :class:`isthmus.errors.IsthmusError`.

- :class:`SlurmError`: a Slurm command or API call failed (``SlurmUnavailable``: the controller,
  slurmrestd or the login node cannot be reached; ``SlurmSubmitError``: the cluster refused a job;
  ``SlurmParseError``: a command printed something unreadable; ``SlurmStepFailed``: a step's job did
  not complete; ``SlurmConfigError``: a setting names no backend);
- :class:`SlurmJobRecordError`: a job record handed in from outside names a file outside its job
  directory.
"""

from __future__ import annotations

from isthmus.errors import IsthmusError
from isthmus.slurm.states import is_retryable


class SlurmError(IsthmusError):
    """A Slurm command or API call failed. The message names the command, what it said and the fix."""


class SlurmUnavailable(SlurmError, ConnectionError):
    """The controller (or slurmrestd, or the SSH login node) cannot be reached."""


class SlurmSubmitError(SlurmError):
    """The cluster refused the job (unknown partition, resources it cannot satisfy, ...). No job exists."""


class SlurmParseError(SlurmError):
    """A Slurm command printed something this client cannot read."""


class SlurmConfigError(SlurmError, ValueError):
    """A Slurm setting names something that does not exist (an unknown backend, ...)."""


class SlurmJobRecordError(IsthmusError, ValueError):
    """A job record (from trigger kwargs or connector metadata) names a file outside its job directory."""


class SlurmStepFailed(SlurmError):
    """The job of a step did not complete: its Slurm ``state`` (FAILED, TIMEOUT, CANCELLED, ...),
    the step's error and traceback when it raised, and the tail of the job's log."""

    def __init__(
        self,
        message: str,
        *,
        step_name: str,
        job_id: str | None,
        state: str,
        error: str | None = None,
        traceback: str | None = None,
        logs: dict[str, str] | None = None,
        step_run_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.step_name = step_name
        self.job_id = job_id
        self.state = state
        self.error = error
        self.traceback = traceback
        self.logs = logs or {}
        self.step_run_id = step_run_id

    @property
    def retryable(self) -> bool:
        """True when the job failed for a reason that is not the step's (a node died, preemption)."""
        return is_retryable(self.state)
