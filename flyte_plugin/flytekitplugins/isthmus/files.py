"""``FlyteFile`` and ``FlyteDirectory`` step outputs, stored by their contents in the isthmus artifact store.

A step that returns a ``FlyteFile`` or ``FlyteDirectory`` gets what it points at stored the way a
``pathlib.Path`` output is (:mod:`isthmus.artifacts.files`: a deterministic archive, hashed by name and
contents; a remote one is downloaded first), so a cache hit never hands back a dangling path. Loading gives
a ``FlyteFile``/``FlyteDirectory`` on a read-only local copy. Registered with the core by
:func:`flytekitplugins.isthmus.transformer.ensure_registered`; the core never imports flytekit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from isthmus.artifacts.files import PathMaterializer
from isthmus.artifacts.materializers import register_materializer
from isthmus.errors import MaterializationError


def _downloaded(obj: Any) -> Path:
    try:
        return Path(obj.download())
    except Exception as exc:  # a remote file this process cannot reach: say so, never pickle its path
        raise MaterializationError(
            f"{type(obj).__name__} {str(getattr(obj, 'remote_source', None) or obj.path)!r:.300} cannot be "
            f"downloaded to store its contents ({type(exc).__name__}: {exc}); check the task's access to it"
        ) from None


class FlyteFileMaterializer(PathMaterializer):
    """``FlyteFile`` outputs: the file's contents; loads a ``FlyteFile`` on a read-only local copy."""

    name = "flyte-file"
    expect = "file"

    def can_handle(self, obj: Any) -> bool:
        return isinstance(obj, FlyteFile)

    def source(self, obj: Any) -> Path:
        return _downloaded(obj)

    def value(self, copy: Path, python_type: str) -> Any:
        return FlyteFile(path=str(copy))


class FlyteDirectoryMaterializer(PathMaterializer):
    """``FlyteDirectory`` outputs: the directory's contents; loads a ``FlyteDirectory`` on a read-only copy."""

    name = "flyte-directory"
    expect = "directory"

    def can_handle(self, obj: Any) -> bool:
        return isinstance(obj, FlyteDirectory)

    def source(self, obj: Any) -> Path:
        return _downloaded(obj)

    def value(self, copy: Path, python_type: str) -> Any:
        return FlyteDirectory(path=str(copy))


def register() -> None:
    """Register both materializers with the isthmus core (before its built-in ones)."""
    register_materializer(FlyteFileMaterializer())
    register_materializer(FlyteDirectoryMaterializer())
