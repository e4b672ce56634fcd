"""Steps as real Slurm jobs, through both backends: results, cache, GPUs, failures, time limits,
cancel and requeue."""

from __future__ import annotations

import asyncio
from pathlib import Path

from isthmus.runner import default_runner
from isthmus.slurm import SlurmExecutor
from tests.slurm import steps


def executor(client, **kw) -> SlurmExecutor:
    kw.setdefault("poll_interval", 0.2)
    return SlurmExecutor(client, default_runner(), **kw)


def test_step_runs_as_job_and_is_a_cache_hit_locally(client, job_home: Path):
    ex = executor(client)
    jobs = []
    result = asyncio.run(ex.arun(steps.square, {"x": 7}, on_submit=jobs.append))
    assert not result.cache_hit and result.value == 49
    assert len(jobs) == 1 and jobs[0].job_id
    record = default_runner().metadata.get_step_run(result.step_run_id)
    assert record["status"] == "COMPLETED"
    assert record["context"]["native"]["slurm_job_id"] == jobs[0].job_id
    # the same step run locally (or submitted again) is a hit: no job
    local = steps.square.run(7)
    assert local.cache_hit and local.source_step_run_id == result.step_run_id
    again = []
    hit = asyncio.run(ex.arun(steps.square, {"x": 7}, on_submit=again.append))
    assert hit.cache_hit and not again
