"""isthmus on Slurm: the same steps as batch jobs, with the same recording, caching and lineage.

- :class:`SlurmClient` (``connect("cli" | "rest" | "pyslurm", ...)``): submit, status, cancel, logs;
- :class:`JobSpec`: a job from a step's ``Resources`` (sbatch options or a slurmrestd body);
- :mod:`isthmus.slurm.states`: every Slurm state as transient, success or (retryable) failure;
- :class:`SlurmExecutor`: cache lookup, then a job running ``python -m isthmus.slurm run-step``, then
  its manifest.

Importing the package registers Slurm with :mod:`isthmus.lineage` (:mod:`isthmus.slurm.lineage`).
"""

from isthmus.slurm import lineage  # noqa: F401 - registers Slurm as a lineage backend
from isthmus.slurm.client import (
    SlurmClient,
    SlurmError,
    SlurmParseError,
    SlurmSubmitError,
    SlurmUnavailable,
    connect,
    run_sync,
)
from isthmus.slurm.executor import SlurmExecutor, SlurmStepFailed, SubmittedJob
from isthmus.slurm.spec import JobSpec, job_name_for
from isthmus.slurm.states import JobStatus, normalize_state

__all__ = [
    "JobSpec",
    "JobStatus",
    "SlurmClient",
    "SlurmError",
    "SlurmExecutor",
    "SlurmParseError",
    "SlurmStepFailed",
    "SlurmSubmitError",
    "SlurmUnavailable",
    "SubmittedJob",
    "connect",
    "job_name_for",
    "normalize_state",
    "run_sync",
]
