"""``SlurmJobTrigger``: wait for a step's Slurm job in the triggerer, polling asynchronously."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from isthmus.lineage.parent import PARENT_KEY
from isthmus.slurm import SlurmClient, SlurmError, SubmittedJob
from isthmus.slurm.executor import wait_for_job
from isthmus.slurm.lineage import emit_waiting
from isthmus.slurm.states import WAITING, JobStatus
from isthmus_airflow.hooks.slurm import SlurmHook
from isthmus_airflow.lineage import openlineage_client

CANCEL_TIMEOUT = 30.0


class SlurmJobTrigger(BaseTrigger):
    """Fires once the job is terminal: ``{"status": "done", "job": ..., "final": JobStatus dict}``, or
    ``{"status": "error", "message": ...}`` when the cluster could not be asked.

    Killing the task (mark failed/success, clear) calls :meth:`on_kill`, which cancels the job; a
    triggerer restart only runs :meth:`cleanup`, which never does. The client is rebuilt from the
    ``slurm`` connection, so no credential is stored with the trigger.
    """

    def __init__(
        self,
        job: dict[str, Any],
        slurm_conn_id: str = "slurm_default",
        poll_interval: float = 5.0,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.job = dict(job)
        self.slurm_conn_id = slurm_conn_id
        self.poll_interval = float(poll_interval)
        self.timeout = timeout
        self._client: SlurmClient | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "isthmus_airflow.triggers.slurm.SlurmJobTrigger",
            {
                "job": self.job,
                "slurm_conn_id": self.slurm_conn_id,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
            },
        )

    async def _get_client(self) -> SlurmClient:
        if self._client is None:
            self._client = await SlurmHook(self.slurm_conn_id).aget_conn()
        return self._client

    async def run(self) -> AsyncIterator[TriggerEvent]:
        job = SubmittedJob.from_dict(self.job)
        pending: set[asyncio.Task[Any]] = set()

        def on_change(status: JobStatus) -> None:
            self.log.info(
                "Slurm job %s: %s%s", job.job_id, status.state, f" ({status.reason})" if status.reason else ""
            )
            if status.state in WAITING and (job.context.get("native") or {}).get(PARENT_KEY):
                # OpenLineage OTHER for the job's run while it waits; sent off the event loop
                task = asyncio.ensure_future(asyncio.to_thread(_emit_waiting, self.job, status.to_dict()))
                pending.add(task)
                task.add_done_callback(pending.discard)

        try:
            client = await self._get_client()
            status = await wait_for_job(
                client, job, poll_interval=self.poll_interval, timeout=self.timeout, on_change=on_change
            )
        except (SlurmError, TimeoutError, OSError) as exc:
            yield TriggerEvent({"status": "error", "job": self.job, "message": f"{type(exc).__name__}: {exc}"})
            return
        finally:
            await self._close()
            if pending:
                await asyncio.wait(pending, timeout=10)
        yield TriggerEvent({"status": "done", "job": self.job, "final": status.to_dict()})

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def on_kill(self) -> None:
        """The task was killed by a user: cancel the job."""
        job_id = self.job.get("job_id")
        if not job_id:
            return
        self.log.info("task killed: cancelling Slurm job %s", job_id)
        try:
            client = await self._get_client()
            await asyncio.wait_for(client.cancel(str(job_id)), timeout=CANCEL_TIMEOUT)
        finally:
            await self._close()

    async def cleanup(self) -> None:
        """Release connections only: a triggerer restart or redistribution must not cancel the job."""
        await self._close()


def _emit_waiting(job: dict[str, Any], status: dict[str, Any]) -> None:
    emit_waiting(job, status, openlineage_client())
