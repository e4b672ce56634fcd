"""Sizes and durations as people write them (``4Gi``, ``512M``, ``1h30m``, Slurm's ``D-HH:MM:SS``), parsed
exactly. Kept apart from :mod:`isthmus.resources` so that steps and cache policies read them without
importing pydantic."""

from __future__ import annotations

import math
import re
from decimal import Decimal

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
# the longest age (seconds back from now) taken as a cutoff: one before year 1 has no date
MAX_AGE = 100 * 365 * 86400.0


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
