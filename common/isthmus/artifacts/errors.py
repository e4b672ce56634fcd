"""Errors of the artifact layer: refs that fail validation, and a store that cannot be read or written."""

from __future__ import annotations

from isthmus.errors import IsthmusError


class InvalidArtifactRef(IsthmusError, ValueError):
    """An artifact ref (from XCom, a Flyte literal, a manifest, the command line) is malformed, names an
    unknown materializer, or does not point into this artifact store. Nothing on disk was touched."""


class UnsafePath(IsthmusError, ValueError):
    """A value that becomes part of a path (an id from a run context, a step name) could leave its root."""


class ArtifactStoreError(IsthmusError, OSError):
    """The artifact store itself cannot be read or written (permissions, a full disk, an unreachable
    bucket): a problem of ``ISTHMUS_ARTIFACT_ROOT``, not of the value or its materializer."""


class HoldsSecret(IsthmusError, ValueError):
    """A value's stored form would hold a secret the call knows: it is not stored. ``content_hash`` is the
    hash that form would have had (what the value is, exactly, to key it with)."""

    def __init__(self, message: str, content_hash: str) -> None:
        super().__init__(message)
        self.content_hash = content_hash
