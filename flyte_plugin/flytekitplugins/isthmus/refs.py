"""The value behind an isthmus artifact ref, for plain Flyte tasks that receive one."""

from __future__ import annotations

from typing import Any

from isthmus import defaults
from isthmus.artifacts.refs import ArtifactRef


def load(ref: Any) -> Any:
    """The value behind an isthmus ``ArtifactRef`` (or its dict/JSON), from the configured artifact store."""
    coerced = ArtifactRef.coerce(ref)
    if coerced is None:
        raise TypeError(f"{ref!r} is not an isthmus ArtifactRef")
    return defaults.artifact_store().load(coerced)
