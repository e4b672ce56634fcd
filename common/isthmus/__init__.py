"""isthmus: portable, cached, recorded steps for Airflow, Flyte, Slurm and plain Python."""

import importlib.metadata
import re
from collections.abc import Mapping
from typing import Any

from isthmus import defaults
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
from isthmus.metadata_log import log_metadata
from isthmus.pinned import ArtifactAlias, ArtifactVersion, InvalidPin, UnresolvedPin
from isthmus.pipeline import Pipeline, PipelineRun, pipeline
from isthmus.policy import CachePolicy
from isthmus.resources import Resources
from isthmus.runner import StepResult, StepRunner, run_step
from isthmus.step import Step, load_step, step

try:  # one version for the three packages: the one of the distribution that ships them (pyproject.toml)
    __version__ = importlib.metadata.version("isthmus")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_HASH = re.compile(r"blake3:[0-9a-f]{64}")


def load(ref: ArtifactRef | Mapping[str, Any] | str, *, store: ArtifactStore | None = None) -> Any:
    """The value an isthmus output stands for: ``ref`` is an ``ArtifactRef``, its dict (what an
    isthmus task pushes to XCom) or its JSON. Loaded from ``store`` (default: the artifact store of
    ``ISTHMUS_*`` settings) after its bytes are verified against the ref's content hash.

    For a plain Airflow ``@task`` (or any code) that receives an isthmus task's output. A list of refs
    (mapped results) is loaded item by item: ``[isthmus.load(r) for r in refs]``.
    """
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
    "step",
]
