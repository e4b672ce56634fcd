"""Without slurmdbd ``sacct`` fails: job states then come from scontrol/squeue and, once the controller
has forgotten a job, from its manifest; a forgotten job without one is LOST, never success."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from isthmus.context import RunContext
from isthmus.runner import default_runner
from isthmus.slurm import SlurmExecutor, SubmittedJob
from isthmus.slurm.executor import wait_for_job
from tests.slurm import steps


def test_no_accounting_here_and_forgotten_jobs_settle_by_manifest(client, job_home: Path):
    ex = SlurmExecutor(client, default_runner(), poll_interval=0.2)
    jobs: list[SubmittedJob] = []
    ctx = RunContext(orchestrator="slurm", invocation="fallback")
    asyncio.run(ex.arun(steps.square, {"x": 21}, ctx, on_submit=jobs.append))
    done = jobs[0]
    if client.backend == "cli":
        assert asyncio.run(client.accounting()) is False  # accounting_storage/none: sacct fails

    # a job id the controller does not know (purged after MinJobAge), whose manifest exists
    data = done.to_dict()
    data.update(job_id="999999", manifest=f"{done.work_dir}/manifest-999999.json")
    shutil.copy(done.manifest, data["manifest"])
    forgotten = SubmittedJob.from_dict(data)
    status = asyncio.run(wait_for_job(client, forgotten, poll_interval=0.1, timeout=30))
    assert status.state == "COMPLETED" and status.source == "manifest"
    result = asyncio.run(ex.collect("square", forgotten, status))
    assert result.value == 441

    # no manifest: LOST, a failure
    data.update(job_id="999998", manifest=f"{done.work_dir}/manifest-999998.json")
    lost_job = SubmittedJob.from_dict(data)

    async def lost():
        return await client.wait("999998", poll_interval=0.1, timeout=30, gone_grace=0.5)

    status = asyncio.run(lost())
    assert status.state == "LOST" and not status.success and status.terminal
    import pytest

    from isthmus.slurm import SlurmStepFailed

    with pytest.raises(SlurmStepFailed, match="LOST"):
        asyncio.run(ex.collect("square", lost_job, status))


def test_a_retry_follows_the_job_it_already_submitted(client, job_home: Path):
    """The same task (same run context and inputs; another try number) finds its queued/running job
    instead of submitting a second one."""
    ex = SlurmExecutor(client, default_runner(), poll_interval=0.2)
    args = {"seconds": 60}
    first_try = RunContext(
        orchestrator="airflow", pipeline_run_id="p", invocation="t", attempt=1, native={"try_number": 1}
    )
    retry = RunContext(orchestrator="airflow", pipeline_run_id="p", invocation="t", attempt=2, native={"try_number": 2})

    async def go():
        key = default_runner().cache_key(steps.sleepy, args, first_try)
        job = await ex.submit(steps.sleepy, {}, args, first_try, cache_key=key)
        again = await ex.submit(steps.sleepy, {}, args, retry, cache_key=key)
        await client.cancel(job.job_id)
        await ex.wait(job, timeout=60)
        after_failure = await ex.submit(steps.sleepy, {}, args, retry, cache_key=key)  # a cancelled job is not followed
        await client.cancel(after_failure.job_id)
        await ex.wait(after_failure, timeout=60)
        return job, again, after_failure

    job, again, after_failure = asyncio.run(go())
    assert again.adopted and again.job_id == job.job_id and again.manifest == job.manifest
    assert not after_failure.adopted and after_failure.job_id != job.job_id
