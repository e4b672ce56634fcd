"""The portable resource model: one spec that maps to Slurm, Kubernetes, Airflow queues and Flyte."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
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
# Slurm's forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (a bare number string is ambiguous: rejected).
_SLURM_RE = re.compile(r"(?:(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?|(\d+):(\d+)(?::(\d+))?)")
_DUR_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_memory(value: int | float | str) -> int:
    """Bytes from ``4Gi``, ``512M``, ``2G``, ``1.5Gi`` or an int (bytes). Raises ValueError with the fix.

    Fractions of a byte round up; zero, negative and non-finite sizes are rejected.
    """
    if isinstance(value, bool):
        raise ValueError(f"memory={value!r} is not a size; use bytes (int) or a string like '4Gi' or '512M'")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"memory={value!r} must be a positive, finite size; use bytes (int) or a string like '4Gi' "
                "(leave memory unset for no request)"
            )
        return math.ceil(value)
    m = _MEM_RE.fullmatch(value) if isinstance(value, str) else None
    if not m and isinstance(value, str) and re.fullmatch(r"\s*\d+(?:\.\d+)?\s*[KMGTP]i?B\s*", value, re.IGNORECASE):
        raise ValueError(
            f"memory={value!r}: a trailing 'B' is not a unit here; write '4G' (10^9 bytes) or '4Gi' (2^30 bytes), "
            "with no space"
        )
    if not m:
        raise ValueError(
            f"memory={value!r} is not a size; write a number and a unit with no space, "
            "e.g. '4Gi', '512Mi', '2G' or '512M' (units: K M G T P, binary with 'i')"
        )
    unit = m.group(2).lower()
    size = math.ceil(Decimal(m.group(1)) * _MEM_UNITS[unit])  # exact: no float rounding
    if size <= 0:
        raise ValueError(f"memory={value!r} must be a positive size, e.g. '512Mi' (leave memory unset for no request)")
    return size


def parse_duration(value: int | float | str) -> float:
    """Seconds from ``90``, ``"30s"``, ``"1h30m"``, ``"7d"``, ``"2w"`` or a Slurm time.

    Slurm times follow ``sbatch --time``: ``"MM:SS"``, ``"HH:MM:SS"``, ``"D-HH"``, ``"D-HH:MM"`` and
    ``"D-HH:MM:SS"`` (so ``"30:00"`` is thirty minutes, as in Slurm).
    """
    if isinstance(value, bool):
        raise ValueError(f"duration={value!r} is not a duration; use seconds or a string like '1h30m'")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"duration={value!r} must be a finite duration >= 0; use e.g. 7200 or '2h'")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"duration={value!r} is not a duration; use seconds (int) or a string like '1h30m'")
    text = value.strip().lower()
    slurm = _SLURM_RE.fullmatch(text)
    if slurm:
        days, dh, dm, ds, a, b, c = slurm.groups()
        if days is not None:
            seconds = int(days) * 86400 + int(dh) * 3600 + int(dm or 0) * 60 + int(ds or 0)
        elif c is None:  # MM:SS
            seconds = int(a) * 60 + int(b)
        else:  # HH:MM:SS
            seconds = int(a) * 3600 + int(b) * 60 + int(c)
        return float(seconds)
    if text and _DUR_RE.sub("", text) == "":
        return float(sum(float(n) * _DUR_UNITS[u] for n, u in _DUR_RE.findall(text)))
    raise ValueError(
        f"duration={value!r} is not a duration; use seconds (int) or a string like '90s', '1h30m', '7d' or '02:00:00'"
    )


def format_memory(n: int) -> str:
    """Shortest exact binary form, e.g. 4294967296 -> '4Gi'."""
    for unit in ("Pi", "Ti", "Gi", "Mi", "Ki"):
        size = _MEM_UNITS[unit.lower()]
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


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
