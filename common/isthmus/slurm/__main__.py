"""The command a Slurm job runs: ``python -m isthmus.slurm run-step ...``.

It is ``python -m isthmus run-step`` (same options, same manifest) with two things a batch job needs:

- the Slurm ids of the job (``SLURM_JOB_ID``, cluster, node, restart count) are added to the run
  context's native ids, so the step run records which job computed it;
- SIGTERM — what Slurm sends on ``scancel``, at the time limit, on preemption and on requeue — is
  turned into :class:`SlurmJobTerminated`, so the runner records the step run ``ABORTED`` and releases
  its cache lease at once (a requeued job need not wait for the lease to expire).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any


class SlurmJobTerminated(BaseException):
    """Slurm asked the job to stop (SIGTERM)."""


def _terminate(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process
    raise SlurmJobTerminated("the Slurm job was sent SIGTERM (cancelled, timed out, preempted or requeued)")


def _with_slurm_ids(argv: list[str]) -> list[str]:
    native = {
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_cluster": os.environ.get("SLURM_CLUSTER_NAME"),
        "slurm_node": os.environ.get("SLURMD_NODENAME"),
        "slurm_partition": os.environ.get("SLURM_JOB_PARTITION"),
        "slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT"),
    }
    native = {k: v for k, v in native.items() if v}
    if not native or "--context" not in argv:
        return argv
    i = argv.index("--context") + 1
    try:
        ctx = json.loads(argv[i])
    except (IndexError, ValueError):
        return argv  # run-step reports the bad JSON itself
    if isinstance(ctx, dict):
        ctx.setdefault("native", {}).update(native)
        argv = [*argv[:i], json.dumps(ctx), *argv[i + 1 :]]
    return argv


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    sys.argv = [sys.argv[0], *_with_slurm_ids(sys.argv[1:])]
    from isthmus.cli import main as cli_main  # after the SIGTERM handler: importing the CLI takes a while

    cli_main()


if __name__ == "__main__":
    main()
