"""isthmus: portable, cached, recorded steps for Airflow, Flyte, Slurm and plain Python."""

from isthmus.artifacts import ArtifactRef, ArtifactStore, Materializer, register_materializer
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
from isthmus.pipeline import Pipeline, PipelineRun, pipeline
from isthmus.policy import CachePolicy
from isthmus.resources import Resources
from isthmus.runner import StepResult, StepRunner, run_step
from isthmus.step import Step, load_step, step

__version__ = "0.1.0"

__all__ = [
    "ArtifactMissing",
    "ArtifactRef",
    "ArtifactStore",
    "CachePolicy",
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
    "__version__",
    "configure",
    "get_settings",
    "load_step",
    "pipeline",
    "register_materializer",
    "run_step",
    "step",
]
