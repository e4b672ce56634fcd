"""isthmus: portable, cached, recorded steps for Airflow, Flyte, Slurm and plain Python."""

from __future__ import annotations

import importlib
import re
import sys
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the public names, imported on first use (see __getattr__): the CLI starts fast
    from isthmus.artifacts import ArtifactRef, ArtifactStore, Materializer, register_materializer
    from isthmus.client import Client
    from isthmus.config import configure, get_settings
    from isthmus.context import RunContext
    from isthmus.errors import (
        ArtifactMissing,
        IsthmusError,
        MaterializationError,
        NotImportableError,
        RunNotFound,
        StepDefinitionError,
        StepFailed,
    )
    from isthmus.governance.secrets import secret
    from isthmus.metadata_log import log_metadata
    from isthmus.pinned import ArtifactAlias, ArtifactVersion, InvalidPin, UnresolvedPin
    from isthmus.pipeline import Pipeline, PipelineRun, pipeline
    from isthmus.policy import CachePolicy
    from isthmus.resources import Resources
    from isthmus.runner import StepResult, StepRunner, run_step
    from isthmus.step import Step, load_step, step

_PUBLIC = {
    "isthmus.artifacts": ("ArtifactRef", "ArtifactStore", "Materializer", "register_materializer"),
    "isthmus.client": ("Client",),
    "isthmus.config": ("configure", "get_settings"),
    "isthmus.context": ("RunContext",),
    "isthmus.errors": (
        "ArtifactMissing",
        "IsthmusError",
        "MaterializationError",
        "NotImportableError",
        "RunNotFound",
        "StepDefinitionError",
        "StepFailed",
    ),
    "isthmus.governance.secrets": ("secret",),
    "isthmus.metadata_log": ("log_metadata",),
    "isthmus.pinned": ("ArtifactAlias", "ArtifactVersion", "InvalidPin", "UnresolvedPin"),
    "isthmus.pipeline": ("Pipeline", "PipelineRun", "pipeline"),
    "isthmus.policy": ("CachePolicy",),
    "isthmus.resources": ("Resources",),
    "isthmus.runner": ("StepResult", "StepRunner", "run_step"),
    "isthmus.step": ("Step", "load_step", "step"),
}
_HOME = {name: module for module, names in _PUBLIC.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562); ``isthmus.<submodule>`` works as well."""
    if name == "__version__":
        value: Any = _version()
    elif name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
    else:
        try:
            value = importlib.import_module(f"isthmus.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"isthmus.{name}":
                raise
            raise AttributeError(f"module 'isthmus' has no attribute {name!r}") from None
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """The ``isthmus`` package object. ``isthmus.step`` and ``isthmus.pipeline`` are the decorators, as
    they always were, even though the submodules of the same names are imported lazily: when the import
    system binds such a submodule on the package, the decorator it defines is bound instead."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name, value)
        super().__setattr__(name, value)


_SHADOWED = frozenset({"step", "pipeline"})
sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _version() -> str:
    """One version for the three packages, the distribution's (``pyproject.toml`` reads it from here)."""
    from isthmus._version import __version__

    return __version__


_HASH = re.compile(r"blake3:[0-9a-f]{64}")


def load(ref: ArtifactRef | Mapping[str, Any] | str, *, store: ArtifactStore | None = None) -> Any:
    """The value an isthmus output stands for: ``ref`` is an ``ArtifactRef``, its dict (what an
    isthmus task pushes to XCom) or its JSON. Loaded from ``store`` (default: the artifact store of
    ``ISTHMUS_*`` settings) after its bytes are verified against the ref's content hash.

    For a plain Airflow ``@task`` (or any code) that receives an isthmus task's output. A list of refs
    (mapped results) is loaded item by item: ``[isthmus.load(r) for r in refs]``.
    """
    from isthmus.artifacts import ArtifactRef

    try:
        artifact = ArtifactRef.coerce(ref)
    except ValueError as exc:  # shaped like a ref but malformed: keep the error's type, name the call
        raise type(exc)(f"isthmus.load(): {exc}") from None
    if artifact is None:
        what = type(ref).__name__
        hint = " (mapped results: [isthmus.load(r) for r in refs])" if isinstance(ref, (list, tuple)) else ""
        raise ValueError(
            f"isthmus.load(): expected an artifact ref (an isthmus output, its dict or JSON), got a {what}{hint}"
        )
    if not (
        isinstance(artifact.content_hash, str)
        and _HASH.fullmatch(artifact.content_hash)
        and isinstance(artifact.size, int)
        and not isinstance(artifact.size, bool)
        and artifact.size >= 0
        and isinstance(artifact.materializer, str)
        and isinstance(artifact.python_type, str)
    ):
        raise ValueError(
            f"isthmus.load(): not a valid artifact ref (content_hash {artifact.content_hash!r}, size "
            f"{artifact.size!r}); pass the ref exactly as the isthmus task returned it"
        )
    from isthmus import defaults

    return (store or defaults.artifact_store()).load(artifact, verify=True)


__all__ = [
    "ArtifactAlias",
    "ArtifactMissing",
    "ArtifactRef",
    "ArtifactStore",
    "ArtifactVersion",
    "CachePolicy",
    "Client",
    "InvalidPin",
    "IsthmusError",
    "MaterializationError",
    "Materializer",
    "NotImportableError",
    "Pipeline",
    "PipelineRun",
    "Resources",
    "RunContext",
    "RunNotFound",
    "Step",
    "StepDefinitionError",
    "StepFailed",
    "StepResult",
    "StepRunner",
    "UnresolvedPin",
    "__version__",
    "configure",
    "get_settings",
    "load",
    "load_step",
    "log_metadata",
    "pipeline",
    "register_materializer",
    "run_step",
    "secret",
    "step",
]
