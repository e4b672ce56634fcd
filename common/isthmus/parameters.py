"""What a step's parameter values become when they cross a process: plain JSON, or artifact refs.

Shared by the StepRunner (which records a list of refs as refs) and the Slurm executor (which passes a
job its parameters as JSON and its ref lists as refs).
"""

from __future__ import annotations

from typing import Any

from isthmus.artifacts.refs import ArtifactRef
from isthmus.fingerprint.arguments import plain_form


def json_param(value: Any) -> Any:
    """A JSON form of a parameter value (paths are not), or raise TypeError if it is not plain data."""
    return plain_form(value, paths=False)


def ref_list(value: Any) -> list[ArtifactRef] | None:
    """The refs of a non-empty list/tuple (or lazy sequence) whose items are all artifact refs, else None."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
        return None
    try:
        items = list(value)
    except Exception:
        return None
    if not items:
        return None
    refs = [ArtifactRef.coerce(item) for item in items]
    return refs if all(r is not None for r in refs) else None  # type: ignore[return-value]
