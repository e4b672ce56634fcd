"""The portable resource model: one spec that maps to Slurm, Kubernetes, Airflow queues and Flyte."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from isthmus.errors import StepDefinitionError

_MEM_UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "p": 1000**5,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
    "pi": 1024**5,
}
_MEM_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTP]i?|)$", re.IGNORECASE)
_DUR_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DUR_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_memory(value: int | float | str) -> int:
    """Bytes from ``4Gi``, ``512M``, ``2G``, ``1.5Gi`` or an int (bytes). Raises ValueError with the fix."""
    if isinstance(value, bool):
        raise ValueError(f"memory={value!r} is not a size; use bytes (int) or a string like '4Gi' or '512M'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"memory={value!r} is negative; use a positive size like '4Gi'")
        return int(value)
    m = _MEM_RE.match(str(value).strip()) if isinstance(value, str) and value == value.strip() else None
    if not m:
        raise ValueError(
            f"memory={value!r} is not a size; write a number and a unit with no space, "
            "e.g. '4Gi', '512Mi', '2G' or '512M' (units: K M G T P, binary with 'i')"
        )
    unit = m.group(2).lower()
    return int(float(m.group(1)) * _MEM_UNITS[unit])


def parse_duration(value: int | float | str) -> float:
    """Seconds from ``90``, ``"30s"``, ``"1h30m"``, ``"7d"``, ``"2w"`` or ``"HH:MM:SS"`` / ``"D-HH:MM:SS"``."""
    if isinstance(value, bool):
        raise ValueError(f"duration={value!r} is not a duration; use seconds or a string like '1h30m'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration={value!r} is negative; use a positive duration like '2h'")
        return float(value)
    text = str(value).strip().lower()
    if re.fullmatch(r"(\d+-)?\d+(:\d{1,2}){1,2}", text):  # Slurm style [D-]HH:MM[:SS]
        days, _, clock = text.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        while len(parts) < 3:
            parts.append(0)
        h, m, s = parts
        return float((int(days) if days else 0) * 86400 + h * 3600 + m * 60 + s)
    if text and _DUR_RE.sub("", text) == "":
        return float(sum(float(n) * _DUR_UNITS[u] for n, u in _DUR_RE.findall(text)))
    raise ValueError(
        f"duration={value!r} is not a duration; use seconds (int) or a string like '90s', '1h30m', "
        "'7d' or '02:00:00'"
    )


def format_memory(n: int) -> str:
    """Shortest exact binary form, e.g. 4294967296 -> '4Gi'."""
    for unit in ("Pi", "Ti", "Gi", "Mi", "Ki"):
        size = _MEM_UNITS[unit.lower()]
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


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
                raise StepDefinitionError(f"Resources(partition={data['partition']!r}, queue={queue!r}): give one of them")
            data["partition"] = queue
        try:
            super().__init__(**data)
        except Exception as exc:  # pydantic's ValidationError: re-raise as a definition error
            messages = getattr(exc, "errors", None)
            if callable(messages):
                text = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in messages()
                )
            else:
                text = str(exc)
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
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
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
