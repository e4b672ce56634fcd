"""The async flytekit connector of ``isthmus_slurm`` tasks, built on the same
:class:`~isthmus.slurm.SlurmClient` and :class:`~isthmus.slurm.SlurmExecutor` the Airflow operator uses.

- ``create``: the isthmus cache first (a hit is recorded and returns at once — no job); otherwise a
  batch job running ``python -m isthmus.slurm run-step`` (the StepRunner runs the step in the job).
  The job name derives from the run context, so a retried Flyte task follows the job it already
  submitted instead of submitting twice;
- ``get``: the job's Slurm state as a Flyte phase (:mod:`.phases`); ``COMPLETED`` is success only when
  the job's result manifest says so; a failure names the step, the job, its state and the traceback or
  log tail; NODE_FAIL / BOOT_FAIL / PREEMPTED are retryable;
- ``delete``: ``scancel``.

Locally, flytekit runs the connector in-process (``AsyncConnectorExecutorMixin``); on a Flyte cluster,
the connector service does (``import flytekit`` registers a stand-in through the ``flytekit.plugins``
entry point that loads this module on its first call: :mod:`flytekitplugins.isthmus.registration`). Nothing secret goes into the connector's resource metadata.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.extend.backend.base_connector import AsyncConnectorBase, ConnectorRegistry, Resource, TaskCategory
from flytekit.models.literals import LiteralMap

from flytekitplugins.isthmus.context import ensure_pipeline_run, reopen_run, settle_run
from flytekitplugins.isthmus.registration import CONNECTOR_NAME, SlurmStepMeta
from flytekitplugins.isthmus.slurm.phases import RUNNING_STATES, flyte_phase
from flytekitplugins.isthmus.slurm.task import LOCAL_RUN, TASK_TYPE, SlurmJob
from flytekitplugins.isthmus.slurm.values import output_literals, run_from_metadata, step_arguments
from isthmus.artifacts.refs import ArtifactRef
from isthmus.records import RunStatus
from isthmus.redaction import secrets_in
from isthmus.runner import default_runner
from isthmus.slurm import SubmittedJob
from isthmus.slurm.backends.base import cancel_quietly
from isthmus.slurm.errors import SlurmStepFailed, SlurmUnavailable
from isthmus.slurm.executor import read_manifest
from isthmus.slurm.lineage import emit_waiting
from isthmus.slurm.states import UNSATISFIABLE_REASONS, JobStatus
from isthmus.step import load_step

if TYPE_CHECKING:
    from flytekit.models.task import TaskExecutionMetadata, TaskTemplate

    from isthmus.slurm import SlurmClient, SubmittedJob
    from isthmus.slurm.states import JobStatus

log = logging.getLogger("flytekitplugins.isthmus")
_ENDED = (TaskExecution.SUCCEEDED, TaskExecution.FAILED, TaskExecution.RETRYABLE_FAILED)


# -- the connector ---------------------------------------------------------------------------------
class IsthmusSlurmConnector(AsyncConnectorBase):
    """The async connector of ``isthmus_slurm`` tasks (see the module docstring).

    ``client_factory`` builds the Slurm client of a :class:`SlurmJob` (default :meth:`SlurmJob.connect`;
    a client is built per call, so a rotated token is picked up). ``gone_grace``: seconds a job may be
    missing from the controller (and leave no manifest) before it is ``LOST``. An unreachable controller
    fails the task (retryable, after cancelling the job as far as possible) once it has not answered
    ``max_unreachable`` polls in a row over at least ``unreachable_grace`` seconds.
    """

    name = CONNECTOR_NAME

    def __init__(
        self,
        client_factory: Callable[[SlurmJob], SlurmClient] | None = None,
        *,
        gone_grace: float = 30.0,
        max_unreachable: int = 5,
        unreachable_grace: float = 300.0,
    ) -> None:
        super().__init__(task_type_name=TASK_TYPE, metadata_type=SlurmStepMeta)
        self._client_factory = client_factory or SlurmJob.connect
        self.gone_grace = gone_grace
        self.max_unreachable = max_unreachable
        self.unreachable_grace = unreachable_grace
        self._gone_since: dict[str, float] = {}
        self._unreachable: dict[str, tuple[int, float]] = {}  # job id -> (failed polls, since)
        self._last_state: dict[str, str] = {}

    def _client(self, config: SlurmJob) -> SlurmClient:
        return self._client_factory(config)

    # -- create ----------------------------------------------------------------------------------
    async def create(
        self,
        task_template: TaskTemplate,
        output_prefix: str = "",
        inputs: LiteralMap | None = None,
        task_execution_metadata: TaskExecutionMetadata | None = None,
        **kwargs: Any,
    ) -> SlurmStepMeta:

        custom = dict(task_template.custom or {})
        if not custom.get("step"):
            raise ValueError(
                f"task {task_template.id.name!r} is not an isthmus Slurm task (its template names no step)"
            )
        step = load_step(custom["step"])
        options = {
            k: custom[k]
            for k in ("pipeline", "invocation", "ref_inputs", "ref_outputs", "secret_inputs")
            if custom.get(k)
        }
        config = SlurmJob.from_dict(custom.get("slurm") or {})
        task_name = custom.get("task_name") or task_template.id.name
        invocation = options.get("invocation") or step.name
        run = LOCAL_RUN.get() or run_from_metadata(
            task_name, options.get("pipeline"), invocation, task_execution_metadata
        )
        ctx = run.context
        arguments = await step_arguments(step, options, inputs)
        # inputs a secret-named workflow input feeds (``Isthmus.secret_inputs``): their values are secrets
        given = frozenset(
            s for n in options.get("secret_inputs") or () if n in arguments for s in secrets_in(arguments[n])
        )
        runner = default_runner()
        client = self._client(config)
        meta = SlurmStepMeta(
            step=step.import_path, step_name=step.name, task_name=task_name, options=options, slurm=config.to_dict()
        )
        # a run no finish node closes (any workflow but to_flyte_workflow's): settled by its tasks
        meta.pipeline_run_id = None if options.get("cache_input") else run.pipeline_run_id
        try:
            executor = config.executor(client, runner)

            def prepare() -> tuple[Any, ...]:
                ensure_pipeline_run(runner, run, step.fn)
                if meta.pipeline_run_id:
                    reopen_run(runner, meta.pipeline_run_id)
                inputs_, params = executor.split_arguments(step, arguments, given)
                hit = executor.lookup(step, inputs_, params, ctx)
                if hit is not None:
                    return hit, inputs_, params, None
                key = executor.cache_key(step, inputs_, params, ctx)
                return None, inputs_, params, key

            hit, step_inputs, params, key = await asyncio.to_thread(prepare)
            if hit is not None:
                log.info(
                    "isthmus cache hit for step %r: outputs of step run %s; no Slurm job",
                    step.name,
                    hit.source_step_run_id,
                )
                meta.outputs = {name: ref.to_dict() for name, ref in hit.outputs.items()}
                meta.step_run_id = hit.step_run_id
                meta.source_step_run_id = hit.source_step_run_id
                return meta
            # A retried task derives the same job name: it follows its job instead of submitting twice.
            # Locally there are no Flyte retries, and a task called on its own has no pipeline run to
            # tell two calls apart: always submit.
            job = await executor.submit(step, step_inputs, params, ctx, cache_key=key, adopt=not run.local)
        finally:
            await client.close()
        log.info(
            "isthmus step %r: %s Slurm job %s (%s) via %s; logs: %s",
            step.name,
            "following" if job.adopted else "submitted",
            job.job_id,
            job.job_name,
            config.backend,
            job.stdout,
        )
        meta.job = job.to_dict()
        return meta

    # -- get -------------------------------------------------------------------------------------
    async def get(self, resource_meta: SlurmStepMeta, **kwargs: Any) -> Resource:
        """The job's phase: polled while it runs, collected (its manifest) once it ended; an ended task
        settles the pipeline run it belongs to."""
        resource = await self._get(resource_meta)
        if resource_meta.pipeline_run_id and resource.phase in _ENDED:
            await asyncio.to_thread(settle_run, default_runner(), resource_meta.pipeline_run_id)
        return resource

    async def _get(self, resource_meta: SlurmStepMeta) -> Resource:
        meta = resource_meta
        if not meta.job_id:  # a cache hit at create()
            return await self._cache_hit(meta)
        job = SubmittedJob.from_dict(meta.job)
        config = SlurmJob.from_dict(meta.slurm)
        client = self._client(config)
        try:
            polled = await self._poll(config, client, job, _label(meta, job))
            if isinstance(polled, Resource):
                return polled
            return await self._collect(meta, config, client, job, polled)
        finally:
            await client.close()

    async def _cache_hit(self, meta: SlurmStepMeta) -> Resource:
        step = load_step(meta.step)
        refs = {k: ArtifactRef.from_dict(v) for k, v in meta.outputs.items()}
        outputs = await output_literals(step, meta.options, refs, default_runner())
        return Resource(
            phase=TaskExecution.SUCCEEDED,
            message=f"step {meta.step_name!r}: isthmus cache hit (outputs of step run "
            f"{meta.source_step_run_id}); no Slurm job",
            outputs=outputs,
            custom_info={"cache_hit": True, "step_run_id": meta.step_run_id},
        )

    async def _poll(self, config: SlurmJob, client: SlurmClient, job: SubmittedJob, label: str) -> JobStatus | Resource:
        """The job's final status once it ended; until then the Resource to report (in progress, or a
        failure when it can never start or the controller stopped answering)."""
        try:
            status = await client.status(job.job_id)
        except SlurmUnavailable as exc:
            return await self._unreachable_poll(config, client, job, label, exc)
        self._unreachable.pop(job.job_id, None)
        if status is None:
            status = await self._settle_gone(client, job)
            if status is None:
                return Resource(
                    phase=TaskExecution.RUNNING,
                    message=f"{label}: not listed by the controller; waiting for its result",
                    custom_info=_info(job, None),
                )
        else:
            self._gone_since.pop(job.job_id, None)
        if status.terminal:
            self._gone_since.pop(job.job_id, None)
            self._last_state.pop(job.job_id, None)
            return status
        hint = UNSATISFIABLE_REASONS.get(status.reason or "") if status.state == "PENDING" else None
        if hint:
            return await self._fail(
                config,
                client,
                job,
                TaskExecution.FAILED,
                f"{label} can never start ({status.reason}): {hint}; the job was cancelled",
                status,
            )
        await self._state_changed(job, status)
        detail = f" ({status.reason})" if status.reason and status.reason != "None" else ""
        where = f" on {status.nodes}" if status.nodes and status.state in RUNNING_STATES else ""
        return Resource(
            phase=flyte_phase(status.state),
            message=f"{label} {status.state}{detail}{where}",
            custom_info=_info(job, status),
        )

    async def _unreachable_poll(
        self, config: SlurmJob, client: SlurmClient, job: SubmittedJob, label: str, exc: Exception
    ) -> Resource:
        """A poll the controller did not answer: still running, until it has not answered
        ``max_unreachable`` polls over ``unreachable_grace`` seconds."""
        errors, since = self._unreachable.get(job.job_id, (0, time.monotonic()))
        errors += 1
        self._unreachable[job.job_id] = (errors, since)
        waited = time.monotonic() - since
        if errors < self.max_unreachable or waited < self.unreachable_grace:
            return Resource(
                phase=TaskExecution.RUNNING,
                message=f"{label}: the Slurm controller did not answer ({errors}/{self.max_unreachable}): {exc}",
                custom_info=_info(job, None),
            )
        self._unreachable.pop(job.job_id, None)
        return await self._fail(
            config,
            client,
            job,
            TaskExecution.RETRYABLE_FAILED,
            f"{label}: the Slurm controller did not answer {errors} times in a row over "
            f"{waited:.0f}s ({exc}); cancelling the job was attempted (check with squeue -j {job.job_id})",
            None,
        )

    async def _fail(
        self,
        config: SlurmJob,
        client: SlurmClient,
        job: SubmittedJob,
        phase: int,
        message: str,
        status: JobStatus | None,
    ) -> Resource:
        """Fail the task while its job may still exist: Flyte calls no delete() after a failure, so the job
        is cancelled (as far as possible) and its credentials file removed here."""
        await cancel_quietly(client, job.job_id)
        await self._forget_secrets(config, client, job)
        return Resource(phase=phase, message=message, custom_info=_info(job, status))

    async def _collect(
        self, meta: SlurmStepMeta, config: SlurmJob, client: SlurmClient, job: SubmittedJob, status: JobStatus
    ) -> Resource:
        """The ended job's result from its manifest: the outputs, or the failure with its log tail."""
        runner = default_runner()
        try:
            result = await config.executor(client, runner).collect(meta.step_name, job, status)
        except SlurmStepFailed as exc:
            return Resource(
                phase=TaskExecution.RETRYABLE_FAILED if exc.retryable else TaskExecution.FAILED,
                message=_failure_message(exc, job),
                custom_info=_info(job, status, state=exc.state),
            )
        outputs = await output_literals(load_step(meta.step), meta.options, dict(result.outputs), runner)
        hit = " (a cache hit inside the job)" if result.cache_hit else ""
        return Resource(
            phase=TaskExecution.SUCCEEDED,
            message=f"{_label(meta, job)} COMPLETED{hit}; step run {result.step_run_id}",
            outputs=outputs,
            custom_info={**_info(job, status), "step_run_id": result.step_run_id, "cache_hit": result.cache_hit},
        )

    @staticmethod
    async def _forget_secrets(config: SlurmJob, client: SlurmClient, job: Any) -> None:
        """Remove the job's credentials file (when it has one) on a path where no collect() follows."""
        try:
            await config.executor(client).forget_secrets(job)
        except Exception as exc:  # a cleanup path: never hide the real outcome
            log.warning("Slurm job %s: removing its credentials file failed: %s", job.job_id, exc)

    async def _state_changed(self, job: Any, status: JobStatus) -> None:
        """Log a new state; while the job waits (queued, held, suspended) lineage hears OTHER, as
        from :meth:`SlurmExecutor.arun` (never fails the poll)."""
        if self._last_state.get(job.job_id) == status.state:
            return
        if len(self._last_state) > 10000:
            self._last_state.clear()
        self._last_state[job.job_id] = status.state
        log.info("Slurm job %s: %s%s", job.job_id, status.state, f" ({status.reason})" if status.reason else "")
        try:
            await asyncio.to_thread(emit_waiting, job.to_dict(), status.to_dict())
        except Exception as exc:
            log.debug("lineage for waiting Slurm job %s: %s", job.job_id, exc)

    async def _settle_gone(self, client: SlurmClient, job: Any) -> JobStatus | None:
        """A job the controller no longer lists: its manifest decides; without one, after
        ``gone_grace`` seconds it is ``LOST`` (never success); before that, None (keep polling)."""
        manifest = await read_manifest(client, job)
        if manifest is not None:
            state = "COMPLETED" if manifest.get("status") == RunStatus.COMPLETED else "FAILED"  # Slurm job states
            return JobStatus(job_id=job.job_id, state=state, stdout=job.stdout, stderr=job.stderr, source="manifest")
        since = self._gone_since.setdefault(job.job_id, time.monotonic())
        if time.monotonic() - since < self.gone_grace:
            return None
        self._gone_since.pop(job.job_id, None)
        return JobStatus(
            job_id=job.job_id,
            state="LOST",
            reason="the controller no longer knows the job and it left no result",
            stdout=job.stdout,
            stderr=job.stderr,
            source="connector",
        )

    # -- delete ----------------------------------------------------------------------------------
    async def delete(self, resource_meta: SlurmStepMeta, **kwargs: Any) -> None:
        """Cancel the job (``scancel``); nothing to do for a cache hit or a job that already ended."""
        job_id = resource_meta.job_id
        if not job_id:
            return

        config = SlurmJob.from_dict(resource_meta.slurm)
        client = self._client(config)
        try:
            await client.cancel(job_id)
            log.info("step %r: cancelled Slurm job %s", resource_meta.step_name, job_id)
            # no get() follows an abort: remove the job's credentials file (if any) now
            await self._forget_secrets(config, client, SubmittedJob.from_dict(resource_meta.job))
        finally:
            await client.close()


def _info(job: Any, status: JobStatus | None, state: str | None = None) -> dict[str, Any]:
    """What the Flyte UI shows of the job (custom_info): ids, state, where it ran, its log files."""
    out: dict[str, Any] = {
        "slurm_job_id": job.job_id,
        "job_name": job.job_name,
        "stdout": job.stdout,
        "stderr": job.stderr,
        "backend": (job.backend or {}).get("backend"),
    }
    if status is not None:
        out.update(state=state or status.state, partition=status.partition, nodes=status.nodes)
        if status.exit_code:
            out["exit_code"] = status.exit_code
    return {k: v for k, v in out.items() if v is not None}


def _failure_message(exc: Any, job: Any, lines: int = 20) -> str:
    """The executor's message (step, job id, state, error and traceback), plus the job's log tail when
    the message does not have it yet, and where the full logs are."""
    message = str(exc)
    tail = ((exc.logs or {}).get("stderr") or (exc.logs or {}).get("stdout") or "").strip()
    if tail and "--- job log (tail) ---" not in message:
        message += f"\n--- job log (last {lines} lines) ---\n" + "\n".join(tail.splitlines()[-lines:])
    return message + f"\nlogs: {job.stdout}" + (f", {job.stderr}" if job.stderr and job.stderr != job.stdout else "")


def _label(meta: SlurmStepMeta, job: SubmittedJob) -> str:
    return f"step {meta.step_name!r}: Slurm job {job.job_id}"


def register() -> IsthmusSlurmConnector:
    """Register the connector with flytekit (once; importing :mod:`flytekitplugins.isthmus.slurm` does,
    replacing the stand-in ``import flytekit`` registers: :mod:`flytekitplugins.isthmus.registration`)."""
    current = ConnectorRegistry._REGISTRY.get(TaskCategory(TASK_TYPE))
    if isinstance(current, IsthmusSlurmConnector):
        return current
    if current is not None:  # the stand-in: its metadata entry would list the task type twice
        ConnectorRegistry._METADATA.pop(CONNECTOR_NAME, None)
    connector = IsthmusSlurmConnector()
    ConnectorRegistry.register(connector, override=True)
    return connector


__all__ = ["IsthmusSlurmConnector", "SlurmStepMeta", "register"]
