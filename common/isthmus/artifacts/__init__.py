"""Artifacts: content-addressed storage of step outputs and the refs that point to them."""

from isthmus.artifacts.errors import ArtifactStoreError, InvalidArtifactRef, UnsafePath
from isthmus.artifacts.materializers import Materializer, register_materializer
from isthmus.artifacts.refs import ArtifactRef
from isthmus.artifacts.store import ArtifactStore

__all__ = [
    "ArtifactRef",
    "ArtifactStore",
    "ArtifactStoreError",
    "InvalidArtifactRef",
    "Materializer",
    "UnsafePath",
    "register_materializer",
]
