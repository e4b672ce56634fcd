"""An isthmus step as a Slurm job from Flyte: the ``SlurmJob`` task config and its async connector.

    train_task = isthmus_task(steps.train, slurm=SlurmJob(partition="gpu"))

    featurize_task = isthmus_task(
        steps.featurize, slurm=SlurmJob(backend="rest", client_options={"url": "https://slurm:6820"})
    )

The task (type ``isthmus_slurm``) is served by :class:`IsthmusSlurmConnector`, an async flytekit
connector built on the same :class:`~isthmus.slurm.SlurmClient` and
:class:`~isthmus.slurm.SlurmExecutor` the Airflow operator uses:

- ``create``: the isthmus cache first (a hit is recorded and returns at once — no job); otherwise a
  batch job running ``python -m isthmus.slurm run-step`` (the StepRunner runs the step in the job).
  The job name derives from the run context, so a retried Flyte task follows the job it already
  submitted instead of submitting twice;
- ``get``: the job's Slurm state as a Flyte phase (every state of :mod:`isthmus.slurm.states`);
  ``COMPLETED`` is success only when the job's result manifest says so; a failure names the step, the
  job, its state and the traceback or log tail; NODE_FAIL / BOOT_FAIL / PREEMPTED are retryable;
- ``delete``: ``scancel``.

Outputs are the step's artifact refs in the same literal form an :class:`IsthmusTask` produces
(small values as plain literals with their ref in the literal metadata), so a downstream isthmus task
receives the ref and a plain Flyte task the value. Locally, flytekit runs the connector in-process
(``AsyncConnectorExecutorMixin``); on a Flyte cluster, the connector service does (``import flytekit``
registers the connector through the ``flytekit.plugins`` entry point).

Nothing secret goes into the task template or the connector's resource metadata: the slurmrestd token
comes from the environment (``$SLURM_JWT`` by default) or a flytekit secret where the client is built.

This module stays light at import (``import flytekit`` imports it): the isthmus core loads on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.core.base_task import TaskMetadata
from flytekit.core.context_manager import FlyteContextManager
from flytekit.extend.backend.base_connector import (
    AsyncConnectorBase,
    AsyncConnectorExecutorMixin,
    Resource,
    ResourceMeta,
)
from flytekit.models.literals import LiteralMap

from flytekitplugins.isthmus.task import _DISPATCHING, IsthmusTask

if TYPE_CHECKING:
    from flytekit.configuration import SerializationSettings
    from flytekit.models.task import TaskExecutionMetadata, TaskTemplate

    from flytekitplugins.isthmus.config import Isthmus
    from flytekitplugins.isthmus.context import FlyteRun
    from isthmus.slurm.client import SlurmClient
    from isthmus.slurm.executor import SlurmExecutor
    from isthmus.slurm.states import JobStatus
    from isthmus.step import Step

log = logging.getLogger("flytekitplugins.isthmus")

TASK_TYPE = "isthmus_slurm"
BACKENDS = ("cli", "rest", "pyslurm")
_SECRET_OPTION_WORDS = ("token", "password", "passphrase", "secret", "jwt")

# Where each Slurm state lands in Flyte while the job is not finished. Finished states go through the
# job's result manifest (SlurmExecutor.collect): COMPLETED -> SUCCEEDED only when the manifest says so;
# every other end -> FAILED, or RETRYABLE_FAILED where isthmus.slurm.states.is_retryable says so.
QUEUED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD"})
INITIALIZING_STATES = frozenset({"CONFIGURING", "POWER_UP_NODE", "SUSPENDED", "STOPPED"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT", "UPDATE_DB"})

# Set by IsthmusSlurmTask.execute in a local execution: the run the task belongs to (a connector
# service derives it from the task execution metadata instead).
_LOCAL_RUN: ContextVar[Any] = ContextVar("isthmus_slurm_local_run", default=None)
# The input literals flytekit handed the task (they carry the artifact refs in their metadata).
_INPUT_LITERALS: ContextVar[LiteralMap | None] = ContextVar("isthmus_slurm_inputs", default=None)


def flyte_phase(state: str) -> int:
    """The Flyte ``TaskExecution`` phase of a Slurm job state (as normalized by
    :func:`isthmus.slurm.states.normalize_state`).

    ``COMPLETED`` maps to SUCCEEDED here, but the connector reports success only after the job's
    manifest confirms it. A state this module does not know is treated as still in progress (never
    success), as :mod:`isthmus.slurm.states` does: the job is polled until it settles, and a job that
    vanishes without a result ends ``LOST`` (FAILED).
    """
    from isthmus.slurm.states import FAILED, SUCCESS, is_retryable

    if state in SUCCESS:
        return TaskExecution.SUCCEEDED
    if state in FAILED:
        return TaskExecution.RETRYABLE_FAILED if is_retryable(state) else TaskExecution.FAILED
    if state in QUEUED_STATES:
        return TaskExecution.QUEUED
    if state in INITIALIZING_STATES:
        return TaskExecution.INITIALIZING
    return TaskExecution.RUNNING


@dataclass
class SlurmJob:
    """Run an isthmus step as a Slurm job from Flyte: ``isthmus_task(step, slurm=SlurmJob(...))``.

    - ``partition``/``account``/``qos``/``constraint``: used where the step's ``Resources`` set none;
      ``extra_options``: more sbatch options; ``env``: exported in the job (no secrets: it travels in
      the task template);
    - ``python``: the interpreter on the compute nodes (default: the one running the connector);
      ``pythonpath``: extra import roots; ``work_root``: job directories on the shared filesystem
      (default ``$ISTHMUS_HOME/slurm``); ``record``: ``"db"``, or ``"manifest"`` when compute nodes
      cannot reach the metadata store;
    - ``backend``: ``"cli"`` (sbatch/squeue/scontrol, locally or over SSH), ``"rest"`` (slurmrestd) or
      ``"pyslurm"`` (libslurm where the connector runs; pyslurm built for the cluster's Slurm);
      ``client_options``: its non-secret options (``host``, ``user``, ``key_file``, ``known_hosts`` for
      SSH; ``url`` or ``socket``, ``user``, ``version`` for slurmrestd);
    - the slurmrestd token is never part of the config: it is read where the client is built, from
      the flytekit secret ``token_secret`` (``"group/key"`` or ``"key"``) or else the environment
      variable ``token_env`` (default ``SLURM_JWT``, what ``scontrol token`` prints).
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra_options: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    python: str | None = None
    pythonpath: list[str] = field(default_factory=list)
    work_root: str | None = None
    record: str = "db"
    backend: str = "cli"
    client_options: dict[str, Any] = field(default_factory=dict)
    token_env: str | None = "SLURM_JWT"
    token_secret: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"SlurmJob(backend={self.backend!r}): use 'cli' (sbatch/squeue over a shell), 'rest' (slurmrestd) "
                "or 'pyslurm' (libslurm where the connector runs)"
            )
        if self.record not in ("db", "manifest"):
            raise ValueError(f"SlurmJob(record={self.record!r}) must be 'db' or 'manifest'")
        self.extra_options = [str(o) for o in self.extra_options]
        self.pythonpath = [str(p) for p in self.pythonpath]
        self.env = {str(k): str(v) for k, v in self.env.items()}
        self.client_options = dict(self.client_options)
        for key in self.client_options:
            if any(word in key.lower() for word in _SECRET_OPTION_WORDS):
                raise ValueError(
                    f"SlurmJob(client_options={{{key!r}: ...}}): credentials must not be part of the task config "
                    f"(it is stored in the Flyte task template); put the slurmrestd token in ${self.token_env or 'SLURM_JWT'} "
                    "or a flytekit secret named by token_secret='group/key'"
                )
        url = self.client_options.get("url")
        if url:
            from isthmus.redaction import redact_url

            if redact_url(str(url)) != str(url):
                raise ValueError(
                    "SlurmJob(client_options={'url': ...}): the URL carries credentials; "
                    "pass the token through token_env / token_secret instead"
                )
        from isthmus.redaction import is_secret_env

        # env (and a client's own job environment) travel in the task template: no credentials there
        for where, env in (
            ("env", self.env),
            *((f"client_options[{k!r}]", v) for k, v in self.client_options.items() if k in ("env", "job_env")),
        ):
            if not isinstance(env, dict):
                raise ValueError(f"SlurmJob({where}={env!r}) must be a dict of environment variables")
            secret = sorted(str(k) for k, v in env.items() if is_secret_env(str(k), str(v)))
            if secret:
                raise ValueError(
                    f"SlurmJob({where}=...): {', '.join(secret)} hold(s) credentials (by name, or a URL with a "
                    "password), and this is stored in the Flyte task template; provide secrets where the connector "
                    "or the job runs instead (its environment, a flytekit secret, the metadata store's own config)"
                )

    # -- (de)serialization: the task template's custom field and the connector's resource meta --
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlurmJob:
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)

    # -- what it builds ------------------------------------------------------------------------
    def token(self) -> str | None:
        """The slurmrestd token: the flytekit secret ``token_secret``, else ``$token_env``."""
        if self.token_secret:
            group, _, key = self.token_secret.rpartition("/")
            try:
                import flytekit

                value = flytekit.current_context().secrets.get(group=group or None, key=key)
                if value:
                    return str(value).strip()
            except Exception as exc:  # fall back to the environment
                log.debug("flytekit secret %r not available: %s", self.token_secret, exc)
        if self.token_env:
            value = os.environ.get(self.token_env)
            if value:
                return value.strip()
        return None

    def connect(self) -> SlurmClient:
        """A client of ``backend`` with ``client_options`` (and, for ``rest``, the token)."""
        from isthmus.slurm import connect

        options = dict(self.client_options)
        if self.backend == "rest":
            token = self.token()
            if token:
                options["token"] = token
        for key in ("port",):  # numbers come back as floats from a protobuf Struct
            if isinstance(options.get(key), float):
                options[key] = int(options[key])
        return connect(self.backend, **options)

    def executor(self, client: SlurmClient, runner: Any = None) -> SlurmExecutor:
        from isthmus.runner import default_runner
        from isthmus.slurm.executor import SlurmExecutor

        return SlurmExecutor(
            client,
            runner or default_runner(),
            partition=self.partition,
            account=self.account,
            qos=self.qos,
            constraint=self.constraint,
            extra_options=self.extra_options,
            env=self.env,
            python=self.python,
            pythonpath=self.pythonpath,
            work_root=self.work_root,
            record=self.record,
        )


@dataclass
class SlurmStepMeta(ResourceMeta):
    """What the connector keeps between ``create`` and ``get``/``delete`` (JSON; no credentials).

    A cache hit has no ``job``: its ``outputs`` (artifact refs) are the result.
    """

    step: str
    step_name: str
    task_name: str
    options: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    step_run_id: str | None = None
    source_step_run_id: str | None = None

    @property
    def job_id(self) -> str | None:
        return (self.job or {}).get("job_id") or None


# -- the run context -------------------------------------------------------------------------------
def run_from_metadata(
    task_name: str, pipeline: str | None, invocation: str | None, tem: TaskExecutionMetadata | None
) -> FlyteRun:
    """The run of a task the connector service was asked to run — the same pipeline run id, invocation
    and attempt :func:`flytekitplugins.isthmus.context.flyte_run` gives a task running in its own pod."""
    from flytekitplugins.isthmus.context import FlyteRun, remote_pipeline
    from isthmus.context import RunContext

    tid = getattr(tem, "task_execution_id", None)
    if tid is None:  # asked directly, outside any execution: a step run without a pipeline run
        native = {"task_name": task_name, "retry_attempt": 0}
        ctx = RunContext(orchestrator="flyte", invocation=invocation, attempt=1, native=native)
        return FlyteRun(context=ctx, local=False)
    exe = tid.node_execution_id.execution_id
    project, domain, name = exe.project, exe.domain, exe.name
    retry = int(tid.retry_attempt or 0)
    env = dict(getattr(tem, "environment_variables", None) or {})
    labels = dict(getattr(tem, "labels", None) or {})
    workflow = env.get("FLYTE_INTERNAL_EXECUTION_WORKFLOW") or env.get("_F_WF") or labels.get("workflow-name")
    launch_plan = env.get("FLYTE_INTERNAL_EXECUTION_LAUNCHPLAN") or env.get("_F_LP")
    native: dict[str, Any] = {
        "execution_id": f"{project}:{domain}:{name}",
        "project": project,
        "domain": domain,
        "execution_name": name,
        "task_name": (tid.task_id.name if tid.task_id is not None else None) or task_name,
        "task_version": tid.task_id.version if tid.task_id is not None else None,
        "retry_attempt": retry,
    }
    run_id, pipeline, pipeline_context = remote_pipeline(native, workflow, launch_plan, pipeline, task_name)
    ctx = RunContext(
        orchestrator="flyte",
        pipeline_name=pipeline,
        pipeline_run_id=run_id,
        invocation=invocation,
        attempt=retry + 1,
        native=native,
    )
    return FlyteRun(context=ctx, local=False, pipeline_context=pipeline_context)


# -- literals <-> step values ----------------------------------------------------------------------
def _interface(step: Step[Any, Any], options: dict[str, Any]) -> Any:
    from flytekitplugins.isthmus.task import step_interface
    from flytekitplugins.isthmus.transformer import ensure_registered

    ensure_registered()
    return step_interface(step, tuple(options.get("ref_inputs") or ()), tuple(options.get("ref_outputs") or ()))


async def _arguments(step: Step[Any, Any], options: dict[str, Any], inputs: LiteralMap | None) -> dict[str, Any]:
    """The step's arguments from the task's input literals: a literal carrying an artifact ref is that
    ref (as in :class:`IsthmusTask`), any other literal its Python value."""
    from flytekit.core.type_engine import TypeEngine

    from flytekitplugins.isthmus.transformer import ref_from_literal

    types = _interface(step, options).inputs
    ctx = FlyteContextManager.current_context()
    kwargs: dict[str, Any] = {}
    for name, lv in (inputs.literals if inputs is not None else {}).items():
        ref = ref_from_literal(lv)
        if ref is not None:
            kwargs[name] = ref
        elif name in types:
            kwargs[name] = await TypeEngine.async_to_python_value(ctx, lv, types[name])
        else:
            raise ValueError(f"step {step.name!r} has no parameter {name!r} (task inputs: {sorted(types)})")
    positional = [
        kwargs.pop(n)
        for n, p in step.signature.parameters.items()
        if p.kind is inspect.Parameter.POSITIONAL_ONLY and n in kwargs
    ]
    return step.bind(positional, kwargs)


async def _output_literals(
    step: Step[Any, Any], options: dict[str, Any], refs: dict[str, Any], runner: Any
) -> LiteralMap:
    """The outputs as an :class:`IsthmusTask` returns them: small values as plain literals, everything
    else as ArtifactRef literals — each with its artifact ref in the literal's metadata."""
    from flytekit.core.type_engine import TypeEngine

    from flytekitplugins.isthmus.transformer import REF_METADATA_KEY, is_small_type

    ctx = FlyteContextManager.current_context()
    literals = {}
    for name, tp in _interface(step, options).outputs.items():
        ref = refs.get(name)
        if ref is None:
            raise ValueError(f"step {step.name!r}: the run produced no output {name!r} (got {sorted(refs)})")
        value = await asyncio.to_thread(runner.artifacts.load, ref) if is_small_type(tp) else ref
        lv = await TypeEngine.async_to_literal(ctx, value, tp, TypeEngine.to_literal_type(tp))
        lv.set_metadata({**(lv.metadata or {}), REF_METADATA_KEY: ref.to_json()})
        literals[name] = lv
    return LiteralMap(literals)


# -- the connector ---------------------------------------------------------------------------------
class IsthmusSlurmConnector(AsyncConnectorBase):
    """The async connector of ``isthmus_slurm`` tasks (see the module docstring).

    ``client_factory`` builds the Slurm client of a :class:`SlurmJob` (default :meth:`SlurmJob.connect`;
    a client is built per call, so a rotated token is picked up). ``gone_grace``: seconds a job may be
    missing from the controller (and leave no manifest) before it is ``LOST``. An unreachable controller
    fails the task (retryable, after cancelling the job as far as possible) once it has not answered
    ``max_unreachable`` polls in a row over at least ``unreachable_grace`` seconds.
    """

    name = "Isthmus Slurm Connector"

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
        from flytekitplugins.isthmus.context import ensure_pipeline_run
        from isthmus.redaction import secrets_in
        from isthmus.runner import default_runner
        from isthmus.step import load_step

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
        run = _LOCAL_RUN.get() or run_from_metadata(
            task_name, options.get("pipeline"), invocation, task_execution_metadata
        )
        ctx = run.context
        arguments = await _arguments(step, options, inputs)
        # inputs a secret-named workflow input feeds (``Isthmus.secret_inputs``): their values are secrets
        given = frozenset(
            s for n in options.get("secret_inputs") or () if n in arguments for s in secrets_in(arguments[n])
        )
        runner = default_runner()
        client = self._client(config)
        meta = SlurmStepMeta(
            step=step.import_path, step_name=step.name, task_name=task_name, options=options, slurm=config.to_dict()
        )
        try:
            executor = config.executor(client, runner)

            def prepare() -> tuple[Any, ...]:
                ensure_pipeline_run(runner, run, step.fn)
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
        from isthmus.artifacts.refs import ArtifactRef
        from isthmus.runner import default_runner
        from isthmus.slurm.client import SlurmUnavailable, cancel_quietly
        from isthmus.slurm.executor import SlurmStepFailed, SubmittedJob
        from isthmus.slurm.states import UNSATISFIABLE_REASONS
        from isthmus.step import load_step

        meta = resource_meta
        if not meta.job_id:  # a cache hit at create()
            step = load_step(meta.step)
            refs = {k: ArtifactRef.from_dict(v) for k, v in meta.outputs.items()}
            outputs = await _output_literals(step, meta.options, refs, default_runner())
            return Resource(
                phase=TaskExecution.SUCCEEDED,
                message=f"step {meta.step_name!r}: isthmus cache hit (outputs of step run "
                f"{meta.source_step_run_id}); no Slurm job",
                outputs=outputs,
                custom_info={"cache_hit": True, "step_run_id": meta.step_run_id},
            )
        job = SubmittedJob.from_dict(meta.job)
        config = SlurmJob.from_dict(meta.slurm)
        label = f"step {meta.step_name!r}: Slurm job {job.job_id}"
        client = self._client(config)
        try:
            try:
                status = await client.status(job.job_id)
            except SlurmUnavailable as exc:
                errors, since = self._unreachable.get(job.job_id, (0, time.monotonic()))
                errors += 1
                self._unreachable[job.job_id] = (errors, since)
                waited = time.monotonic() - since
                if errors >= self.max_unreachable and waited >= self.unreachable_grace:
                    self._unreachable.pop(job.job_id, None)
                    # Flyte calls no delete() after a failure: cancel the job here, as far as possible
                    await cancel_quietly(client, job.job_id)
                    await self._forget_secrets(config, client, job)
                    return Resource(
                        phase=TaskExecution.RETRYABLE_FAILED,
                        message=f"{label}: the Slurm controller did not answer {errors} times in a row over "
                        f"{waited:.0f}s ({exc}); cancelling the job was attempted (check with squeue -j {job.job_id})",
                        custom_info=_info(job, None),
                    )
                return Resource(
                    phase=TaskExecution.RUNNING,
                    message=f"{label}: the Slurm controller did not answer ({errors}/{self.max_unreachable}): {exc}",
                    custom_info=_info(job, None),
                )
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
            if not status.terminal:
                hint = UNSATISFIABLE_REASONS.get(status.reason or "") if status.state == "PENDING" else None
                if hint:
                    await cancel_quietly(client, job.job_id)
                    await self._forget_secrets(config, client, job)
                    return Resource(
                        phase=TaskExecution.FAILED,
                        message=f"{label} can never start ({status.reason}): {hint}; the job was cancelled",
                        custom_info=_info(job, status),
                    )
                await self._state_changed(job, status)
                detail = f" ({status.reason})" if status.reason and status.reason != "None" else ""
                where = f" on {status.nodes}" if status.nodes and status.state in RUNNING_STATES else ""
                return Resource(
                    phase=flyte_phase(status.state),
                    message=f"{label} {status.state}{detail}{where}",
                    custom_info=_info(job, status),
                )
            self._gone_since.pop(job.job_id, None)
            self._last_state.pop(job.job_id, None)
            runner = default_runner()
            try:
                result = await config.executor(client, runner).collect(meta.step_name, job, status)
            except SlurmStepFailed as exc:
                return Resource(
                    phase=TaskExecution.RETRYABLE_FAILED if exc.retryable else TaskExecution.FAILED,
                    message=_failure_message(exc, job),
                    custom_info=_info(job, status, state=exc.state),
                )
        finally:
            await client.close()
        step = load_step(meta.step)
        outputs = await _output_literals(step, meta.options, dict(result.outputs), runner)
        hit = " (a cache hit inside the job)" if result.cache_hit else ""
        return Resource(
            phase=TaskExecution.SUCCEEDED,
            message=f"{label} COMPLETED{hit}; step run {result.step_run_id}",
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
            from isthmus.slurm.lineage import emit_waiting

            await asyncio.to_thread(emit_waiting, job.to_dict(), status.to_dict())
        except Exception as exc:
            log.debug("lineage for waiting Slurm job %s: %s", job.job_id, exc)

    async def _settle_gone(self, client: SlurmClient, job: Any) -> JobStatus | None:
        """A job the controller no longer lists: its manifest decides; without one, after
        ``gone_grace`` seconds it is ``LOST`` (never success); before that, None (keep polling)."""
        from isthmus.slurm.executor import read_manifest
        from isthmus.slurm.states import JobStatus

        manifest = await read_manifest(client, job)
        if manifest is not None:
            state = "COMPLETED" if manifest.get("status") == "COMPLETED" else "FAILED"
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
        from isthmus.slurm.executor import SubmittedJob

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


# -- the task --------------------------------------------------------------------------------------
class IsthmusSlurmTask(AsyncConnectorExecutorMixin, IsthmusTask):
    """An isthmus step run as a Slurm job by :class:`IsthmusSlurmConnector` (task type ``isthmus_slurm``).

    Built by ``isthmus_task(step, slurm=SlurmJob(...))``. The step's ``Resources`` become the job's
    sbatch options (cpus, memory, GPUs, partition, time limit); the Flyte task has no pod, so no pod
    resources and no Flyte timeout (the Slurm time limit applies).
    """

    def __init__(
        self,
        task_config: Isthmus | None,
        task_function: Any,
        task_type: str = TASK_TYPE,
        *,
        slurm: SlurmJob | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(task_config, SlurmJob):  # @task(task_config=SlurmJob(...))
            name = getattr(task_function, "__name__", "fn")
            raise TypeError(
                f"@task(task_config=SlurmJob(...)) on {name!r}: the Slurm job imports the step by its path, "
                f"and @task puts the task where the function was; decorate the function with @step and "
                f"build the task with isthmus_task({name}, slurm=SlurmJob(...)) under another name"
            )
        if kwargs.get("enable_deck"):
            raise TypeError("enable_deck is not available for a Slurm task: the step runs in a Slurm job, not here")
        metadata = kwargs.get("metadata") or TaskMetadata()
        kwargs["metadata"] = metadata
        timeout = metadata.timeout
        super().__init__(task_config, task_function, task_type=task_type, **kwargs)
        self._slurm = slurm or SlurmJob()
        # No pod runs this task: pod settings derived from the step's Resources do not apply, and the
        # step's time limit is the job's (a Flyte timeout would also count the time in the queue).
        self.pod_template = None
        self.accelerator = None
        self.metadata.timeout = timeout

    @property
    def slurm(self) -> SlurmJob:
        return self._slurm

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        """What the connector needs (JSON, no credentials): the step, the task options and the SlurmJob."""
        self._step.check_importable()
        return {
            "step": self._step.import_path,
            "task_name": self.name,
            **self.task_config.to_options(),
            "slurm": self._slurm.to_dict(),
        }

    def dispatch_execute(self, ctx: Any, input_literal_map: LiteralMap) -> Any:
        token = _INPUT_LITERALS.set(input_literal_map)
        try:
            return super().dispatch_execute(ctx, input_literal_map)
        finally:
            _INPUT_LITERALS.reset(token)

    def execute(self, **kwargs: Any) -> Any:
        """Local execution: flytekit's connector mixin runs :class:`IsthmusSlurmConnector` in-process —
        create (cache lookup or submit), poll until the job ends, outputs."""
        from flytekit.core.promise import Promise

        from flytekitplugins.isthmus.context import finish_pipeline_run, flyte_run

        config = self.task_config
        run = flyte_run(self.name, config.pipeline, config.invocation or self._step.name)
        given = _INPUT_LITERALS.get()
        literals = given.literals if given is not None and _DISPATCHING.get() else {}
        # The input literals as flytekit handed them over (their metadata carries the artifact refs);
        # a Promise passes a literal through the mixin's conversion unchanged.
        passed = {name: Promise(var=name, val=literals[name]) if name in literals else v for name, v in kwargs.items()}
        passed = {name: self._ref_literal(name, v) for name, v in passed.items()}
        token = _LOCAL_RUN.set(run)
        try:
            with _serializable_context():
                out = super().execute(**passed)
        except Exception as exc:
            if run.local and run.pipeline_run_id:  # a local workflow stops at the first failure
                from isthmus.redaction import scrub, secret_values
                from isthmus.runner import default_runner

                error = scrub(f"{type(exc).__name__}: {exc}", secret_values(kwargs))
                finish_pipeline_run(default_runner(), run.pipeline_run_id, "FAILED", error=error)
            raise
        finally:
            _LOCAL_RUN.reset(token)
        if _DISPATCHING.get() or not isinstance(out, LiteralMap):
            return out
        # called directly (not through dispatch_execute): Python values, as IsthmusTask returns them
        from flytekit.core.type_engine import TypeEngine

        ctx = FlyteContextManager.current_context()
        values = TypeEngine.literal_map_to_kwargs(ctx, out, self.python_interface.outputs)
        native = [values[n] for n in self.python_interface.outputs]
        return native[0] if len(native) == 1 else tuple(native)

    def _ref_literal(self, name: str, value: Any) -> Any:
        """An ArtifactRef handed to an input declared as a small type (an upstream ref outside
        dispatch) travels as a ref literal: the connector reads the ref from its metadata."""
        from flytekit.core.promise import Promise

        from flytekitplugins.isthmus.transformer import ArtifactRefTransformer, is_small_type
        from isthmus.artifacts.refs import ArtifactRef

        if isinstance(value, Promise) or not isinstance(value, ArtifactRef):
            return value
        if not is_small_type(self.python_interface.inputs.get(name)):
            return value
        ctx = FlyteContextManager.current_context()
        transformer = ArtifactRefTransformer()
        lv = transformer.to_literal(ctx, value, ArtifactRef, transformer.get_literal_type())
        return Promise(var=name, val=lv)

    async def _get(self, resource_meta: ResourceMeta) -> Resource:
        if isinstance(resource_meta, SlurmStepMeta) and not resource_meta.job_id:  # a cache hit: no job to poll
            return await self._connector.get(resource_meta=resource_meta)
        try:
            return await super()._get(resource_meta)
        except Exception:
            # polling broke off (flytekit calls no delete then): no job outlives the local run
            try:
                await self._connector.delete(resource_meta=resource_meta)
            except Exception as exc:
                log.warning("Slurm job %s: cancelling it after the error failed: %s", resource_meta.job_id, exc)
            raise


@contextlib.contextmanager
def _serializable_context() -> Iterator[None]:
    """The connector mixin serializes the task into a template; a plain local ``wf()`` call has no
    serialization settings (``pyflyte run`` has), so lend it flytekit's default image."""
    ctx = FlyteContextManager.current_context()
    if ctx.serialization_settings is not None:
        yield
        return
    from flytekit.configuration import ImageConfig, SerializationSettings

    settings = SerializationSettings(ImageConfig.auto_default_image())
    with FlyteContextManager.with_context(ctx.with_serialization_settings(settings)):
        yield


def register() -> IsthmusSlurmConnector:
    """Register the connector with flytekit (once; ``import flytekit`` does it through this plugin)."""
    from flytekit.extend.backend.base_connector import ConnectorRegistry, TaskCategory

    current = ConnectorRegistry._REGISTRY.get(TaskCategory(TASK_TYPE))
    if isinstance(current, IsthmusSlurmConnector):
        return current
    connector = IsthmusSlurmConnector()
    ConnectorRegistry.register(connector, override=True)
    return connector


__all__ = [
    "TASK_TYPE",
    "IsthmusSlurmConnector",
    "IsthmusSlurmTask",
    "SlurmJob",
    "SlurmStepMeta",
    "flyte_phase",
    "register",
    "run_from_metadata",
]
