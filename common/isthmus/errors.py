"""Exceptions isthmus raises. Each message names the step, the value and the fix."""

from __future__ import annotations

from typing import Any

_SHOWN = 60  # characters of an id quoted in an error


def quoted(text: str) -> str:
    """``text`` quoted for a one-line error, cut when long (ids typed or pasted may be anything)."""
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


class IsthmusError(Exception):
    """Base class of isthmus errors."""


class ConfigurationError(IsthmusError, ValueError):
    """A setting (an ``ISTHMUS_*`` variable, a store URL) is invalid or points at something unusable.

    The message is one line: the setting, its value (credentials hidden) and the fix.
    """


class StepDefinitionError(IsthmusError, ValueError):
    """A step, its resources or its cache policy are invalid (raised at definition time)."""


class PipelineDefinitionError(StepDefinitionError):
    """A pipeline body does something that cannot be traced into a graph (uses a step output's value,
    calls itself)."""


class StepFailed(IsthmusError):
    """A step raised after its retries were used up. ``step_run_id`` points to the recorded run.

    Its cause is a :class:`ScrubbedError`, never the step's own exception: that one may carry secrets
    in its message, arguments or attributes.
    """

    def __init__(self, message: str, *, step_name: str, step_run_id: str | None = None) -> None:
        super().__init__(message)
        self.step_name = step_name
        self.step_run_id = step_run_id

    def __reduce__(self) -> Any:
        # Crosses processes (a local run's process pool) with its scrubbed cause; never the original one.
        cause = self.__cause__ if isinstance(self.__cause__, ScrubbedError) else None
        return (_rebuild_step_failed, (str(self), self.step_name, self.step_run_id, cause), dict(self.__dict__))


class ScrubbedError(IsthmusError):
    """Stands in for the exception a step raised: its type name, message and traceback as text, with
    every secret the run knew about replaced by ``***``. The traceback is attached as a note, so
    ``traceback.print_exc()`` shows where the step failed."""

    def __init__(self, message: str, *, original_type: str, traceback_text: str) -> None:
        super().__init__(message)
        self.original_type = original_type
        self.traceback_text = traceback_text
        if traceback_text:
            self.add_note("step traceback (secrets scrubbed):\n" + traceback_text.rstrip())

    def __reduce__(self) -> Any:
        return (_rebuild_scrubbed, (str(self), self.original_type, self.traceback_text))


def _rebuild_step_failed(message: str, step_name: str, step_run_id: str | None, cause: Any) -> StepFailed:
    exc = StepFailed(message, step_name=step_name, step_run_id=step_run_id)
    exc.__cause__ = cause
    return exc


def _rebuild_scrubbed(message: str, original_type: str, traceback_text: str) -> ScrubbedError:
    return ScrubbedError(message, original_type=original_type, traceback_text=traceback_text)


class SecretValueError(IsthmusError, ValueError):
    """A secret (``pydantic.SecretStr``/``SecretBytes``, a secret-named field) would be written into an
    artifact. isthmus never stores secret values."""


class UnhashableValueError(IsthmusError, TypeError):
    """A value has no canonical hash (and so cannot be part of a cache key)."""


class MaterializationError(IsthmusError, TypeError):
    """An output could not be serialized by any registered materializer."""


class ArtifactMissing(IsthmusError, LookupError):
    """An artifact is gone, or its bytes no longer match its content hash."""


class RunNotFound(IsthmusError, LookupError):
    """No pipeline or step run matches the given id."""


class ReplayError(IsthmusError, ValueError):
    """A recorded run or step run cannot be run again as asked (``isthmus rerun`` / ``reproduce``): its
    pipeline cannot be found, a parameter was recorded as ``***``, a step name is not in the pipeline."""


class NotImportableError(IsthmusError):
    """A step cannot be imported by path, so it cannot run in another process."""
