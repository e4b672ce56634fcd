"""isthmus on Slurm: the same steps as batch jobs, with the same recording, caching and lineage.

- :class:`SlurmClient` (``connect(kind, ...)``, a backend of :data:`BACKENDS`): submit, status, cancel, logs;
- :class:`JobSpec`: a job from a step's ``Resources`` (sbatch options or a slurmrestd body);
- :mod:`isthmus.slurm.states`: every Slurm state as transient, success or (retryable) failure;
- :class:`SlurmJobOptions`: partition, account, environment, interpreter, ... of a step's job;
- :class:`SlurmExecutor`: cache lookup, then a job running ``python -m isthmus.slurm run-step``, then
  its manifest.

Importing the package registers Slurm with :mod:`isthmus.lineage` (:mod:`isthmus.slurm.lineage`).
"""

from isthmus.slurm import lineage  # noqa: F401 - registers Slurm as a lineage backend
from isthmus.slurm.backends import BACKENDS, connect
from isthmus.slurm.backends.base import SlurmClient, run_sync
from isthmus.slurm.errors import (
    SlurmError,
    SlurmJobRecordError,
    SlurmParseError,
    SlurmStepFailed,
    SlurmSubmitError,
    SlurmUnavailable,
)
from isthmus.slurm.executor import SlurmExecutor, SubmittedJob
from isthmus.slurm.options import SlurmJobOptions, merge_options
from isthmus.slurm.spec import JobSpec, job_name_for
from isthmus.slurm.states import JobStatus, normalize_state

__all__ = [
    "BACKENDS",
    "JobSpec",
    "JobStatus",
    "SlurmClient",
    "SlurmError",
    "SlurmExecutor",
    "SlurmJobOptions",
    "SlurmJobRecordError",
    "SlurmParseError",
    "SlurmStepFailed",
    "SlurmSubmitError",
    "SlurmUnavailable",
    "SubmittedJob",
    "connect",
    "job_name_for",
    "merge_options",
    "normalize_state",
    "run_sync",
]
