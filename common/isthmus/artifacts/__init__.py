"""Artifacts: content-addressed storage of step outputs and the refs that point to them.

The names below are loaded on first use (PEP 562), so that reading a ref (``isthmus.artifacts.refs``)
does not import the store, fsspec and every materializer: the command line's queries start faster.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from isthmus.artifacts.errors import ArtifactStoreError, InvalidArtifactRef, UnsafePath
    from isthmus.artifacts.materializers import Materializer, register_materializer
    from isthmus.artifacts.refs import ArtifactRef
    from isthmus.artifacts.store import ArtifactStore

_WHERE = {
    "ArtifactRef": "isthmus.artifacts.refs",
    "ArtifactStore": "isthmus.artifacts.store",
    "ArtifactStoreError": "isthmus.artifacts.errors",
    "InvalidArtifactRef": "isthmus.artifacts.errors",
    "Materializer": "isthmus.artifacts.materializers",
    "UnsafePath": "isthmus.artifacts.errors",
    "register_materializer": "isthmus.artifacts.materializers",
}
__all__ = [
    "ArtifactRef",
    "ArtifactStore",
    "ArtifactStoreError",
    "InvalidArtifactRef",
    "Materializer",
    "UnsafePath",
    "register_materializer",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'isthmus.artifacts' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
