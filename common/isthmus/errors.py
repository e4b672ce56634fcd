"""Exceptions isthmus raises. Each message names the step, the value and the fix."""

from __future__ import annotations


class IsthmusError(Exception):
    """Base class of isthmus errors."""


class StepDefinitionError(IsthmusError, ValueError):
    """A step, its resources or its cache policy are invalid (raised at definition time)."""


class StepFailed(IsthmusError):
    """A step raised after its retries were used up. ``step_run_id`` points to the recorded run."""

    def __init__(self, message: str, *, step_name: str, step_run_id: str | None = None) -> None:
        super().__init__(message)
        self.step_name = step_name
        self.step_run_id = step_run_id


class MaterializationError(IsthmusError, TypeError):
    """An output could not be serialized by any registered materializer."""


class ArtifactMissing(IsthmusError, LookupError):
    """An artifact is gone, or its bytes no longer match its content hash."""


class RunNotFound(IsthmusError, LookupError):
    """No pipeline or step run matches the given id."""


class NotImportableError(IsthmusError):
    """A step cannot be imported by path, so it cannot run in another process."""
