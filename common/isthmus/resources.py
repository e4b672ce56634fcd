"""The portable resource model: one spec that maps to Slurm, Kubernetes, Airflow queues and Flyte."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from isthmus.errors import StepDefinitionError
from isthmus.units import format_memory, parse_duration, parse_memory

__all__ = ["Resources", "format_memory", "parse_duration", "parse_memory"]


def _describe(error: Mapping[str, Any]) -> str:
    """One pydantic error as ``field: problem (got value); fix``."""
    loc = ".".join(str(p) for p in error.get("loc", ()))
    msg = str(error.get("msg", "")).removeprefix("Value error, ")
    kind = error.get("type")
    if kind == "value_error":  # our validators: the message already names the value and the fix
        return f"{loc}: {msg}" if loc else msg
    if kind == "extra_forbidden":
        known = ", ".join([*Resources.model_fields, "queue"])
        return f"unknown field {loc}={error.get('input')!r}; the fields are: {known}"
    return f"{loc}={error.get('input')!r}: {msg}"


class Resources(BaseModel):
    """What a step needs. ``memory`` accepts '4Gi', '512M', '2G' or bytes; ``time_limit`` '2h' or seconds.

    Scheduler hints (``partition``/``queue``, ``account``, ``qos``, ``node_selector``) pass through to
    the orchestrator where they map and are always kept in the run's metadata.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu: float | None = None
    memory: int | None = None
    gpu: int = 0
    gpu_type: str | None = None
    time_limit: float | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    extra: dict[str, str] = Field(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        if "queue" in data:
            queue = data.pop("queue")
            if data.get("partition") not in (None, queue):
                raise StepDefinitionError(
                    f"Resources(partition={data['partition']!r}, queue={queue!r}): give one of them"
                )
            data["partition"] = queue
        try:
            super().__init__(**data)
        except Exception as exc:  # pydantic's ValidationError: re-raise as a definition error
            messages = getattr(exc, "errors", None)
            text = "; ".join(_describe(e) for e in messages()) if callable(messages) else str(exc)
            raise StepDefinitionError(f"invalid Resources: {text}") from None

    @property
    def queue(self) -> str | None:
        """Alias of ``partition`` (Airflow and Celery say queue)."""
        return self.partition

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, str):
            text = v.strip()
            try:
                v = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
            except ValueError:
                raise ValueError(f"cpu={v!r} is not a number; use e.g. cpu=2, cpu=0.5 or cpu='500m'") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"cpu={v!r} must be a positive number of cores, e.g. cpu=2 or cpu=0.5")
        return float(v)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        return None if v is None else parse_memory(v)

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu(cls, v: Any) -> Any:
        if v is None:
            return 0
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"gpu={v!r} must be a whole number of GPUs >= 0, e.g. gpu=1")
        return v

    @field_validator("time_limit", mode="before")
    @classmethod
    def _time(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)

    @model_validator(mode="after")
    def _gpu_type_needs_gpu(self) -> Resources:
        if self.gpu_type and not self.gpu:
            raise ValueError(f"gpu_type={self.gpu_type!r} given but gpu=0; set gpu=1 (or more) as well")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON form kept in metadata (only what was set)."""
        return self.model_dump(exclude_defaults=True)

    @classmethod
    def coerce(cls, value: Resources | Mapping[str, Any] | None) -> Resources:
        if value is None:
            return cls()
        if isinstance(value, Resources):
            return value
        if isinstance(value, Mapping):
            return cls(**dict(value))
        raise StepDefinitionError(f"resources={value!r} must be Resources(...) or a dict of its fields")
