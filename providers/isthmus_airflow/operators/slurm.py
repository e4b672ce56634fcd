"""``SlurmStepOperator`` and ``@task.isthmus_slurm``: an isthmus step as a Slurm job from Airflow.

The isthmus cache is asked first (a hit means no job at all). On a miss the step is submitted as a
batch job running ``python -m isthmus.slurm run-step``; by default the task then defers to
:class:`~isthmus_airflow.triggers.slurm.SlurmJobTrigger`, and on resume reads the job's manifest
(ingesting it when the job could not reach the metadata store), copies the job's log into the task log
and pushes the outputs' ``ArtifactRef`` to XCom.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from isthmus.errors import StepDefinitionError
from isthmus.records import RunStatus, StepRunRecord
from isthmus.slurm import SlurmClient, SlurmExecutor, SlurmJobOptions, SlurmStepFailed, SubmittedJob, connect, run_sync
from isthmus.slurm.executor import wait_for_job
from isthmus.slurm.lineage import FACET_KEY, emit_waiting, slurm_run_facet
from isthmus.slurm.options import merge_options
from isthmus.slurm.states import JobStatus
from isthmus.step import Step, as_step, load_step
from isthmus_airflow.context import pipeline_run_row, run_context
from isthmus_airflow.hooks.isthmus import IsthmusHook
from isthmus_airflow.hooks.slurm import SlurmHook
from isthmus_airflow.lineage import openlineage_client, openlineage_handoff
from isthmus_airflow.operators.step import StepOperator, dag_param_secrets, mask_secret
from isthmus_airflow.taskflow import StepDecoratedOperator, step_task
from isthmus_airflow.triggers.slurm import SlurmJobTrigger

LOG_LINES = 200


def _default_queue() -> str | None:
    try:
        from airflow.sdk.definitions._internal.abstractoperator import DEFAULT_QUEUE

        return DEFAULT_QUEUE
    except Exception:  # pragma: no cover - other Airflow layouts
        return None


class _JobOption:
    """An operator attribute that reads and writes one field of its ``job_options`` (Airflow renders
    templates into ``partition``, ``env``, ...)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj.job_options, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        obj.job_options = dataclasses.replace(obj.job_options, **{self.name: value})


class SlurmStepOperator(StepOperator):
    """Run ``step`` as a Slurm job. Arguments as for :class:`StepOperator` (``op_args``/``op_kwargs``,
    upstream ``ArtifactRef`` XComs), plus:

    - ``slurm_conn_id``: a ``slurm`` connection (backend, host/SSH or slurmrestd URL/token, defaults);
    - ``partition``/``account``/``qos``/``constraint``: where the step's ``Resources`` set none
      (these win over the connection's defaults); ``extra_options``: more sbatch options; ``env``:
      exported in the job; ``python``, ``pythonpath``, ``work_root``, ``record`` (``db``/``manifest``):
      the fields of :class:`~isthmus.slurm.SlurmJobOptions`, kept as ``job_options``;
    - ``deferrable`` (default True): wait in the triggerer; False polls in the worker;
    - ``poll_interval`` seconds between polls; ``job_timeout`` seconds before giving up (the job is
      cancelled).

    The step's ``Resources.partition`` is the Slurm partition here, not the Airflow queue.
    """

    template_fields: Sequence[str] = (*StepOperator.template_fields, "partition", "account", "qos", "env")
    ui_color = "#e3e0f5"
    custom_operator_name = "SlurmStepOperator"

    def __init__(
        self,
        *,
        step: Step[Any, Any] | Callable[..., Any] | str,
        slurm_conn_id: str = SlurmHook.default_conn_name,
        deferrable: bool = True,
        poll_interval: float = 5.0,
        job_timeout: float | None = None,
        partition: str | None = None,
        account: str | None = None,
        qos: str | None = None,
        constraint: str | None = None,
        extra_options: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        python: str | None = None,
        pythonpath: Sequence[str] | None = None,
        work_root: str | None = None,
        record: str | None = None,
        **kwargs: Any,
    ) -> None:
        resolved = load_step(step) if isinstance(step, str) else as_step(step)
        resolved.check_importable()  # a job imports it by path: fail when the DAG is parsed
        try:
            job_options = SlurmJobOptions(
                partition=partition,
                account=account,
                qos=qos,
                constraint=constraint,
                extra_options=extra_options or (),
                env=env or {},
                python=python,
                pythonpath=pythonpath or (),
                work_root=work_root,
                record=record,
            )
        except StepDefinitionError as exc:
            raise StepDefinitionError(f"step {resolved.name!r}: {exc}") from None
        default_args = kwargs.get("default_args") or {}
        if "queue" not in kwargs and "queue" not in default_args and _default_queue():
            kwargs["queue"] = _default_queue()  # Resources.partition is for Slurm
        super().__init__(step=resolved, **kwargs)
        self.job_options = job_options
        self.slurm_conn_id = slurm_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.job_timeout = job_timeout
        self._job: SubmittedJob | None = None
        self._slurm_status: dict[str, Any] | None = None

    # -- pieces ----------------------------------------------------------------------------------
    def _executor(
        self, runner: Any, client: SlurmClient | None = None, lineage_env: Mapping[str, str] | None = None
    ) -> SlurmExecutor:
        """The executor of this task: the connection's job defaults under the task's own options."""
        cfg = SlurmHook(self.slurm_conn_id).settings()
        options = merge_options(
            SlurmJobOptions(env=lineage_env or {}), SlurmJobOptions.from_mapping(cfg["defaults"]), self.job_options
        )
        if client is None:
            client = connect(cfg["backend"], **cfg["client"])
        return SlurmExecutor(client, runner, options=options, poll_interval=self.poll_interval)

    # -- execution -------------------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        runner = IsthmusHook(self.isthmus_conn_id).get_conn()
        ctx = run_context(context, pipeline_name=self.pipeline_name)
        runner.metadata.ensure_pipeline_run(pipeline_run_row(ctx, context, IsthmusHook(self.isthmus_conn_id).project()))
        arguments = self._arguments(context)
        # The job's own OpenLineage run hangs under this task's run (and the DAG run as its root).
        lineage_native, lineage_env = openlineage_handoff(context)
        ctx.native.update(lineage_native)
        ex = self._executor(runner, lineage_env=lineage_env)
        # The DAG run's secret params follow their values: a step parameter they feed travels to the job
        # through its credentials file, never in its script (see isthmus.secret_params).
        secrets = dag_param_secrets(context)
        for value in secrets:
            mask_secret(value)
        inputs, params = ex.split_arguments(self.step, arguments, secrets)
        hit = ex.lookup(self.step, inputs, params, ctx)
        if hit is not None:
            self._isthmus_record = runner.metadata.get_step_run(hit.step_run_id)
            self.log.info(
                "isthmus cache hit for step %r: outputs from step run %s (pipeline run %s); no Slurm job",
                self.step.name,
                hit.source_step_run_id,
                self._source_pipeline_run(runner, hit.source_step_run_id),
            )
            return self._xcom_value(context, runner, hit.outputs)
        key = ex.cache_key(self.step, inputs, params, ctx)

        async def submit() -> SubmittedJob:
            try:
                return await ex.submit(self.step, inputs, params, ctx, cache_key=key)
            finally:
                await ex.client.close()

        job = run_sync(submit())
        self._job = job
        verb = "following" if job.adopted else "submitted"
        self.log.info(
            "isthmus step %r: %s Slurm job %s (%s) via %s; logs: %s",
            self.step.name,
            verb,
            job.job_id,
            job.job_name,
            ex.client.kind,
            job.stdout,
        )
        context["ti"].xcom_push(key="slurm_job_id", value=job.job_id)
        if self.deferrable:
            self.defer(
                trigger=SlurmJobTrigger(
                    job=job.to_dict(),
                    slurm_conn_id=self.slurm_conn_id,
                    poll_interval=self.poll_interval,
                    timeout=self.job_timeout,
                ),
                method_name="execute_complete",
            )

        ol_client = openlineage_client() if lineage_native else None

        async def wait() -> JobStatus:
            try:
                return await wait_for_job(
                    ex.client,
                    job,
                    poll_interval=self.poll_interval,
                    timeout=self.job_timeout,
                    on_change=lambda st: emit_waiting(job.to_dict(), st.to_dict(), ol_client),
                )
            finally:
                await ex.client.close()

        try:
            status = run_sync(wait())
        except BaseException:
            self._cancel_job()  # killed, timed out or the cluster stopped answering: leave no job behind
            raise
        return self._finish(context, runner, job, status)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        job = SubmittedJob.from_dict(event["job"])
        self._job = job
        if event.get("status") != "done":
            self._cancel_job()
            raise RuntimeError(
                f"step {self.step.name!r}: waiting for Slurm job {job.job_id} failed: {event.get('message')}; "
                "the job was cancelled (check the slurm connection, then retry)"
            )
        runner = IsthmusHook(self.isthmus_conn_id).get_conn()
        return self._finish(context, runner, job, JobStatus.from_dict(event["final"]))

    def _finish(self, context: Any, runner: Any, job: SubmittedJob, status: JobStatus) -> Any:
        ex = self._executor(runner)
        self._slurm_status = status.to_dict()
        self.log.info(
            "Slurm job %s ended %s on %s (exit code %s)", job.job_id, status.state, status.nodes, status.exit_code
        )

        async def finish() -> Any:
            try:
                logs = await ex.client.logs(_with_paths(status, job))
                try:
                    return logs, await ex.collect(self.step.name, job, status), None
                except SlurmStepFailed as exc:
                    return logs, None, exc
            finally:
                await ex.client.close()

        logs, result, error = run_sync(finish())
        for stream, text in logs.items():
            lines = text.rstrip().splitlines()[-LOG_LINES:]
            self.log.info(
                "--- Slurm job %s %s (last %d lines) ---\n%s", job.job_id, stream, len(lines), "\n".join(lines)
            )
        if error is not None:
            if error.step_run_id:
                try:
                    self._isthmus_record = runner.metadata.get_step_run(error.step_run_id)
                except Exception:
                    self._isthmus_record = None
            ctx = run_context(context, pipeline_name=self.pipeline_name)
            if ctx.pipeline_run_id and ctx.attempt > (self.retries or 0):  # no Airflow retry left: the run failed
                runner.metadata.finish_pipeline_run(ctx.pipeline_run_id, RunStatus.FAILED, error=str(error))
            raise error
        self._isthmus_record = runner.metadata.get_step_run(result.step_run_id)
        self.log.info(
            "isthmus step %r computed in Slurm job %s%s",
            self.step.name,
            job.job_id,
            " (a cache hit inside the job)" if result.cache_hit else "",
        )
        return self._xcom_value(context, runner, result.outputs)

    def _cancel_job(self) -> None:
        """Cancel the submitted job from any thread (on_kill runs inside a signal handler, maybe while an
        event loop runs in this thread)."""
        job = self._job
        if job is None or not job.job_id:
            return
        done: list[BaseException] = []

        def cancel() -> None:
            async def go() -> None:
                client = SlurmHook(self.slurm_conn_id).get_conn()
                try:
                    await asyncio.wait_for(client.cancel(job.job_id), timeout=30)
                finally:
                    await client.close()

            try:
                asyncio.run(go())
            except BaseException as exc:  # reported below
                done.append(exc)

        thread = threading.Thread(target=cancel, name=f"scancel-{job.job_id}", daemon=True)
        thread.start()
        thread.join(timeout=40)
        if done:
            self.log.warning("could not cancel Slurm job %s: %s", job.job_id, done[0])
        else:
            self.log.info("cancelled Slurm job %s", job.job_id)

    def on_kill(self) -> None:
        self._cancel_job()

    # -- OpenLineage -----------------------------------------------------------------------------
    def _lineage(self, record: StepRunRecord | None) -> Any:
        lineage = super()._lineage(record)
        if self._job is not None:
            lineage.run_facets[FACET_KEY] = slurm_run_facet(self._job.to_dict(), self._slurm_status)
        return lineage


for _name in SlurmJobOptions.names():  # op.partition, op.env, ...: the fields of op.job_options
    setattr(SlurmStepOperator, _name, _JobOption(_name))


def _with_paths(status: JobStatus, job: SubmittedJob) -> JobStatus:
    data = status.to_dict()
    data["stdout"] = status.stdout or job.stdout
    data["stderr"] = status.stderr or job.stderr
    return JobStatus.from_dict(data)


# -- TaskFlow: @task.isthmus_slurm ----------------------------------------------------------------
class _SlurmDecoratedOperator(StepDecoratedOperator, SlurmStepOperator):  # type: ignore[misc]  # op_args/op_kwargs: list/dict here
    """A SlurmStepOperator built by ``@task.isthmus_slurm``; call arguments are the step's arguments."""

    custom_operator_name = "@task.isthmus_slurm"
    template_fields = SlurmStepOperator.template_fields
    template_fields_renderers = SlurmStepOperator.template_fields_renderers


def slurm_task(
    python_callable: Step[Any, Any] | Callable[..., Any] | None = None,
    multiple_outputs: bool | None = None,
    **kwargs: Any,
) -> Any:
    """``@task.isthmus_slurm(partition="gpu")``, or ``task.isthmus_slurm(train)(features)``: a step as a
    Slurm job in TaskFlow. Keyword arguments are :class:`SlurmStepOperator`'s."""

    return step_task(_SlurmDecoratedOperator, python_callable, multiple_outputs, kwargs)
