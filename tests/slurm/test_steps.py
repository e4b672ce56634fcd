"""Steps as real Slurm jobs, through both backends: results, cache, GPUs, failures, time limits,
cancel and requeue."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from isthmus.context import RunContext
from isthmus.runner import default_runner
from isthmus.slurm import SlurmExecutor, SlurmStepFailed
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


def test_gpu_request_lands_as_cuda_visible_devices(client, job_home: Path, slurm_cluster):
    jobs = []
    result = asyncio.run(executor(client).arun(steps.gpu_env, {}, on_submit=jobs.append))
    seen = result.value
    assert seen["CUDA_VISIBLE_DEVICES"] == "0,1", seen
    assert jobs[0].spec["gres"] == "gpu:2" and jobs[0].spec["partition"] == "gpu"
    info = slurm_cluster.run("scontrol", "show", "job", "-o", jobs[0].job_id).stdout
    assert "gpu:2" in info and "Partition=gpu" in info


def test_failing_step_maps_to_failed_with_its_traceback(client, job_home: Path):
    with pytest.raises(SlurmStepFailed) as err:
        asyncio.run(executor(client).arun(steps.explode, {"message": "on slurm"}))
    exc = err.value
    assert exc.state == "FAILED" and not exc.retryable
    assert "ValueError: boom: on slurm" in str(exc) and "Traceback" in str(exc)
    assert exc.traceback and "raise ValueError" in exc.traceback
    record = default_runner().metadata.get_step_run(exc.step_run_id)
    assert record["status"] == "FAILED" and "boom" in record["error"]


def test_record_manifest_when_the_node_cannot_reach_the_store(client, job_home: Path):
    ex = executor(client, record="manifest")
    jobs = []
    result = asyncio.run(ex.arun(steps.square, {"x": 12}, on_submit=jobs.append))
    assert result.value == 144
    assert "ISTHMUS_STORE_URL" not in Path(jobs[0].stdout).read_text()
    # the job's rows were ingested here: its step run, artifact and cache entry
    record = default_runner().metadata.get_step_run(result.step_run_id)
    assert record["status"] == "COMPLETED" and record["context"]["native"]["slurm_job_id"] == jobs[0].job_id
    assert steps.square.run(12).cache_hit


def _wait_state(client, job_id: str, wanted: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = asyncio.run(client.status(job_id))
        if status is not None and status.state in wanted:
            return status.state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {wanted}")


def test_cancel(client, job_home: Path):
    ex = executor(client)
    jobs = []

    async def scenario():
        task = asyncio.create_task(ex.arun(steps.sleepy, {"seconds": 120}, on_submit=jobs.append))
        while not jobs:
            await asyncio.sleep(0.05)
        status = await ex.wait_until(jobs[0], {"RUNNING"}, timeout=60)
        assert status.state == "RUNNING"
        task.cancel()  # e.g. the Airflow task was killed: the job is cancelled with it
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert _wait_state(client, jobs[0].job_id, {"CANCELLED"}) == "CANCELLED"
    # cancelling directly, and what the caller is told
    job2 = []

    async def direct():
        job = await ex.submit(steps.sleepy, {}, {"seconds": 120}, RuntimeCtx())
        job2.append(job)
        await ex.wait_until(job, {"RUNNING", "PENDING"}, timeout=60)
        await client.cancel(job.job_id)
        status = await ex.wait(job, timeout=60)
        assert status.state == "CANCELLED"
        with pytest.raises(SlurmStepFailed) as err:
            await ex.collect("sleepy", job, status)
        assert err.value.state == "CANCELLED"

    asyncio.run(direct())


def RuntimeCtx() -> RunContext:  # noqa: N802 - a fresh context per call: a distinct job name
    import uuid

    return RunContext(orchestrator="slurm", invocation=f"t-{uuid.uuid4().hex[:8]}")


def test_requeued_job_is_followed_to_its_end(client, job_home: Path, slurm_cluster, tmp_path: Path):
    flag = tmp_path / "go"
    ex = executor(client)
    seen: list[str] = []

    async def scenario():
        job = await ex.submit(steps.wait_for_file, {}, {"path": str(flag), "seconds": 90}, RuntimeCtx())
        await ex.wait_until(job, {"RUNNING"}, timeout=60)
        slurm_cluster.run("scontrol", "requeue", job.job_id)
        waiter = asyncio.create_task(ex.wait(job, timeout=120, on_change=lambda s: seen.append(s.state)))
        # let it start again (Slurm holds a requeued job back for its credential lifetime; start it
        # sooner, but not in the second of the requeue: slurmd would still see its credential as
        # revoked and fail the job), then let the step finish
        deadline = time.monotonic() + 90
        nudged = False
        while True:
            status = await client.status(job.job_id)
            if status.restarts >= 1 and status.state == "RUNNING":
                break
            assert not status.terminal, f"the requeued job ended before running again: {status}"
            assert time.monotonic() < deadline, f"the requeued job did not run again: {status}"
            if not nudged and slurm_cluster_pending_begin(status):
                slurm_cluster.run("scontrol", "update", f"jobid={job.job_id}", "StartTime=now+3", check=False)
                nudged = True
            await asyncio.sleep(0.2)
        flag.write_text("go")
        status = await waiter
        return job, status

    job, status = asyncio.run(scenario())
    assert status.state == "COMPLETED", status
    result = asyncio.run(ex.collect("wait_for_file", job, status))
    assert result.value == "1"  # the second run of the job computed it
    assert any(s in ("REQUEUED", "PENDING") for s in seen), seen


def slurm_cluster_pending_begin(status) -> bool:
    return status is not None and status.state == "PENDING" and (status.reason or "") == "BeginTime"


def test_job_over_its_time_limit_maps_to_timeout(slurm_cluster, job_home: Path):
    """One job per backend, side by side (Slurm checks time limits every 30 s: this takes 1-2 minutes)."""
    from tests.slurm.conftest import make_client

    async def one(backend: str):
        client = make_client(slurm_cluster, backend)
        try:
            with pytest.raises(SlurmStepFailed) as err:
                await executor(client).arun(steps.sleepy, {"seconds": 600}, RuntimeCtx(), timeout=240)
            return err.value
        finally:
            await client.close()

    async def both():
        return await asyncio.gather(one("cli"), one("rest"))

    for exc in asyncio.run(both()):
        assert exc.state == "TIMEOUT", exc
        assert "time_limit" in str(exc)
