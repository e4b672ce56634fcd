"""The Flyte side on a real Slurm: ``isthmus_task(step, slurm=SlurmJob(...))`` in local workflows (the
connector runs in-process through flytekit's ``AsyncConnectorExecutorMixin``), the connector driven
the way a Flyte connector service drives it (serialized template, task execution metadata, encoded
resource meta, retries, delete), and the state mapping for every Slurm state."""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from pathlib import Path

import pytest
from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import task, workflow

from flytekitplugins.isthmus import IsthmusSlurmTask, SlurmJob, isthmus_task
from flytekitplugins.isthmus.slurm import (
    INITIALIZING_STATES,
    QUEUED_STATES,
    RUNNING_STATES,
    TASK_TYPE,
    IsthmusSlurmConnector,
    SlurmStepMeta,
    flyte_phase,
)
from isthmus import defaults
from isthmus.context import derived_run_id
from tests.slurm import steps
from tests.slurm.cluster import SlurmCluster


def _store():
    return defaults.metadata_store()


def _flyte_runs() -> list[dict]:
    return _store().list_runs(orchestrator="flyte")  # newest first


def _steps_of(run_id: str) -> dict[str, dict]:
    return {r["invocation"]: r for r in _store().step_runs_of(run_id)}


def _slurm_job(cluster: SlurmCluster, backend: str) -> SlurmJob:
    if backend == "rest":
        return SlurmJob(backend="rest", client_options={"socket": str(cluster.rest_socket)})
    return SlurmJob(backend="cli")  # SLURM_CONF is set for the session


# -- local workflows --------------------------------------------------------------------------------
def test_local_workflow_runs_the_step_as_a_job_and_shares_the_cache(
    backend: str, slurm_cluster: SlurmCluster, job_home: Path
):
    square_job = isthmus_task(steps.square, slurm=_slurm_job(slurm_cluster, backend))
    add_task = isthmus_task(steps.add)  # a normal isthmus task downstream: gets the ref, not a copy

    @workflow
    def wf(x: int) -> int:
        return add_task(a=square_job(x=x), b=1)

    jobs_before = set(slurm_cluster.jobs())
    assert wf(x=7) == 50
    new_jobs = set(slurm_cluster.jobs()) - jobs_before
    assert len(new_jobs) == 1

    (run,) = _flyte_runs()
    assert run["status"] == "COMPLETED"  # the hand-written workflow's run, settled by its tasks
    recorded = _steps_of(run["id"])
    assert set(recorded) == {"square", "add"}
    square = recorded["square"]
    assert square["status"] == "COMPLETED" and not square["cache_hit"]
    assert square["orchestrator"] == "flyte" and square["attempt"] == 1
    native = square["context"]["native"]
    assert native["slurm_job_id"] in new_jobs  # recorded by the job, under the Flyte run
    assert native["execution_id"] == "local:local:local"
    assert native["local_execution"] == run["context"]["local_execution"]
    assert native["task_name"] == "tests.slurm.steps.square"
    assert square["params"] == {"x": 7}
    # the downstream isthmus task received the job's artifact ref (no re-upload, same hash)
    assert recorded["add"]["params"] == {"b": 1}
    assert recorded["add"]["inputs"]["a"]["content_hash"] == square["outputs"]["output"]["content_hash"]

    # the same step, run locally or by a normal Flyte task: cache hits of the Slurm job's run
    local = steps.square.run(7)
    assert local.cache_hit and local.source_step_run_id == square["id"] and local.value == 49
    assert isthmus_task(steps.square)(x=7) == 49

    # a second workflow run: a cache hit at create(), no job submitted
    assert wf(x=7) == 50
    assert set(slurm_cluster.jobs()) - jobs_before == new_jobs
    second = _steps_of(_flyte_runs()[0]["id"])
    assert second["square"]["cache_hit"] and second["square"]["source_step_run_id"] == square["id"]
    assert "slurm_job_id" not in second["square"]["context"]["native"]
    assert second["add"]["cache_hit"]


@task
def plain_double(n: int) -> int:
    """A plain flytekit task reads the Slurm step's output as an ordinary int."""
    return 2 * n


def test_plain_flyte_task_reads_the_value_and_a_failing_step_fails_the_workflow(
    slurm_cluster: SlurmCluster, job_home: Path
):
    explode_job = isthmus_task(steps.explode, slurm=_slurm_job(slurm_cluster, "cli"))
    square_job = isthmus_task(steps.square, slurm=_slurm_job(slurm_cluster, "cli"))

    @workflow
    def ok(x: int) -> int:
        return plain_double(n=square_job(x=x))

    @workflow
    def failing(message: str) -> int:
        return plain_double(n=explode_job(message=message))

    steps.square.run(5)  # computed locally first: the Slurm task is a hit, no job
    jobs_before = set(slurm_cluster.jobs())
    assert ok(x=5) == 50
    with pytest.raises(Exception) as err:
        failing(message="in flyte")
    new_jobs = set(slurm_cluster.jobs()) - jobs_before
    assert len(new_jobs) == 1  # only the failing step's job
    (job_id,) = new_jobs
    text = str(err.value)
    assert "step 'explode'" in text and f"Slurm job {job_id} FAILED" in text
    assert "ValueError: boom: in flyte" in text and "Traceback" in text and "raise ValueError" in text

    run, ok_run = _flyte_runs()[:2]
    assert run["status"] == "FAILED" and "boom: in flyte" in run["error"]
    assert ok_run["status"] == "COMPLETED" and ok_run["hits"] == 1  # settled at the cache hit
    explode = _steps_of(run["id"])["explode"]
    assert explode["status"] == "FAILED" and "boom" in explode["error"]
    assert "raise ValueError" in explode["traceback"]
    assert explode["context"]["native"]["slurm_job_id"] == job_id


# -- as on a Flyte cluster: the connector service's calls ------------------------------------------
def _template(t: IsthmusSlurmTask):
    """The task template as registered, through its protobuf (what the connector service receives)."""
    from flytekit.configuration import ImageConfig, SerializationSettings
    from flytekit.models.task import TaskTemplate
    from flytekit.tools.translator import get_serializable

    settings = SerializationSettings(ImageConfig.auto_default_image())
    template = get_serializable(OrderedDict(), settings, t).template
    return TaskTemplate.from_flyte_idl(template.to_flyte_idl())


def _metadata(execution: str, retry: int):
    from flytekit.models.core.identifier import (
        Identifier,
        NodeExecutionIdentifier,
        ResourceType,
        TaskExecutionIdentifier,
        WorkflowExecutionIdentifier,
    )
    from flytekit.models.task import TaskExecutionMetadata

    tem = TaskExecutionMetadata(
        task_execution_id=TaskExecutionIdentifier(
            task_id=Identifier(ResourceType.TASK, "proj", "dev", "tests.slurm.steps.sleepy", "v7"),
            node_execution_id=NodeExecutionIdentifier("n0", WorkflowExecutionIdentifier("proj", "dev", execution)),
            retry_attempt=retry,
        ),
        namespace="proj-dev",
        labels={"workflow-name": "slurm-wf"},
        annotations={},
        k8s_service_account="default",
        environment_variables={"FLYTE_INTERNAL_EXECUTION_WORKFLOW": "proj:dev:pipelines.slurm_wf"},
        identity=None,
    )
    return TaskExecutionMetadata.from_flyte_idl(tem.to_flyte_idl())


def _poll(connector: IsthmusSlurmConnector, meta: SlurmStepMeta, until, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        resource = asyncio.run(connector.get(resource_meta=meta))
        if until(resource.phase):
            return resource
        if time.monotonic() > deadline:
            raise AssertionError(f"phase {TaskExecution.Phase.Name(resource.phase)}: {resource.message}")
        time.sleep(0.2)


def test_connector_service_calls_with_jwt_retry_adoption_and_delete(
    slurm_cluster: SlurmCluster, job_home: Path, monkeypatch: pytest.MonkeyPatch
):
    from flytekit.core.context_manager import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine
    from flytekit.models.literals import LiteralMap

    token = slurm_cluster.token()
    monkeypatch.setenv("SLURM_JWT", token)  # where the connector service keeps it (or a flytekit secret)
    sleepy_job = isthmus_task(
        steps.sleepy, slurm=SlurmJob(backend="rest", client_options={"url": slurm_cluster.rest_url})
    )
    template = _template(sleepy_job)
    assert template.type == TASK_TYPE
    assert template.custom["step"] == "tests.slurm.steps:sleepy"
    assert template.custom["slurm"]["client_options"] == {"url": slurm_cluster.rest_url}
    assert token not in json.dumps(template.custom)
    assert not template.metadata.timeout  # the step's time limit is the Slurm job's, not Flyte's

    literal = TypeEngine.to_literal(
        FlyteContextManager.current_context(), 120.0, float, TypeEngine.to_literal_type(float)
    )
    inputs = LiteralMap.from_flyte_idl(LiteralMap({"seconds": literal}).to_flyte_idl())
    connector = IsthmusSlurmConnector()

    meta = asyncio.run(
        connector.create(
            task_template=template, output_prefix="", inputs=inputs, task_execution_metadata=_metadata("abc123", 0)
        )
    )
    blob = meta.encode()
    assert token.encode() not in blob
    meta = SlurmStepMeta.decode(blob)
    assert meta.job_id and not meta.job["adopted"]
    try:
        running = _poll(connector, meta, lambda p: p == TaskExecution.RUNNING)
        assert f"Slurm job {meta.job_id} RUNNING" in running.message
        assert running.custom_info["slurm_job_id"] == meta.job_id

        # recorded under the pipeline run of the Flyte execution, as a task in its own pod would be
        run_id = derived_run_id("flyte", "proj", "dev", "abc123")
        assert _store().get_run(run_id)["pipeline"] == "pipelines.slurm_wf"
        deadline = time.monotonic() + 30
        while not _store().step_runs_of(run_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        (step_run,) = _store().step_runs_of(run_id)
        assert step_run["invocation"] == "sleepy" and step_run["attempt"] == 1
        native = step_run["context"]["native"]
        assert native["execution_id"] == "proj:dev:abc123" and native["task_version"] == "v7"
        assert native["slurm_job_id"] == meta.job_id

        # Flyte retries the task (e.g. the connector service restarted): the job is followed, not resubmitted
        again = asyncio.run(
            connector.create(task_template=template, inputs=inputs, task_execution_metadata=_metadata("abc123", 1))
        )
        assert again.job_id == meta.job_id and again.job["adopted"]
    finally:
        asyncio.run(connector.delete(resource_meta=meta))  # the Flyte task was aborted: scancel
    done = _poll(connector, meta, lambda p: p in (TaskExecution.FAILED, TaskExecution.RETRYABLE_FAILED))
    assert done.phase == TaskExecution.FAILED
    assert f"step 'sleepy': Slurm job {meta.job_id} CANCELLED" in done.message
    assert done.custom_info["state"] == "CANCELLED"
    asyncio.run(connector.delete(resource_meta=meta))  # idempotent


# -- every Slurm state ----------------------------------------------------------------------------
class _StubClient:
    """A cluster that reports one given status (states a real single-node cluster cannot be made to
    produce on demand: NODE_FAIL, BOOT_FAIL, PREEMPTED, ...)."""

    backend = "cli"

    def __init__(self, status=None, error: Exception | None = None) -> None:
        self.status_ = status
        self.error = error
        self.cancelled: list[str] = []
        self.removed: list[str] = []

    async def status(self, job_id: str):
        if self.error is not None:
            raise self.error
        return self.status_

    async def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    async def read_file(self, path: str, max_bytes: int = 0):
        return None

    async def logs(self, status, max_bytes: int = 0) -> dict[str, str]:
        return {"stderr": "slurmstepd: error: *** JOB 42 ON node1 CANCELLED DUE TO NODE FAILURE ***\n"}

    async def remove_file(self, path: str) -> None:
        self.removed.append(path)

    async def close(self) -> None:
        return None

    def describe(self) -> dict:
        return {"backend": "cli"}


def _meta() -> SlurmStepMeta:
    from isthmus.slurm.executor import SubmittedJob

    job = SubmittedJob(
        job_id="42",
        job_name="isthmus-square-0123456789ab",
        step_path="tests.slurm.steps:square",
        step_name="square",
        work_dir="/nonexistent/isthmus-square",
        manifest="/nonexistent/isthmus-square/manifest-42.json",
        stdout="/nonexistent/isthmus-square/slurm-42.out",
        stderr="/nonexistent/isthmus-square/slurm-42.err",
        secret_env_file="/nonexistent/isthmus-square/job.env",
    )
    return SlurmStepMeta(
        step="tests.slurm.steps:square",
        step_name="square",
        task_name="tests.slurm.steps.square",
        slurm=SlurmJob().to_dict(),
        job=job.to_dict(),
    )


def _get(client: _StubClient, **kw):
    connector = IsthmusSlurmConnector(lambda config: client, **kw)
    return connector, asyncio.run(connector.get(resource_meta=_meta()))


def test_every_slurm_state_maps_to_a_flyte_phase():
    from isthmus.slurm import states
    from isthmus.slurm.states import JobStatus

    # every in-progress state is in exactly one group; QUEUED + INITIALIZING are the waiting states
    groups = [QUEUED_STATES, INITIALIZING_STATES, RUNNING_STATES]
    assert set().union(*groups) == states.TRANSIENT and sum(map(len, groups)) == len(states.TRANSIENT)
    if hasattr(states, "WAITING"):
        assert QUEUED_STATES | INITIALIZING_STATES == states.WAITING

    expected_transient = {
        "PENDING": TaskExecution.QUEUED,
        "REQUEUED": TaskExecution.QUEUED,
        "CONFIGURING": TaskExecution.INITIALIZING,
        "SUSPENDED": TaskExecution.INITIALIZING,
        "RUNNING": TaskExecution.RUNNING,
        "COMPLETING": TaskExecution.RUNNING,  # flytekitplugins-slurm raises on this one
    }
    for state in sorted(states.ALL_STATES | {"UNKNOWN", "SOME_FUTURE_STATE"}):
        status = JobStatus(job_id="42", state=state, nodes="node1", partition="gpu")
        _, resource = _get(_StubClient(status))
        name = TaskExecution.Phase.Name(resource.phase)
        if state in states.TRANSIENT or state not in states.ALL_STATES:
            assert resource.phase == flyte_phase(state), (state, name)
            assert resource.phase in (TaskExecution.QUEUED, TaskExecution.INITIALIZING, TaskExecution.RUNNING)
            assert f"Slurm job 42 {state}" in resource.message and resource.custom_info["state"] == state
            if state in expected_transient:
                assert resource.phase == expected_transient[state], (state, name)
            continue
        # finished: success only with a COMPLETED manifest (the stub has none), else a clear failure
        want = TaskExecution.RETRYABLE_FAILED if states.is_retryable(state) else TaskExecution.FAILED
        assert resource.phase == want, (state, name, resource.message)
        shown = "LOST" if state == "COMPLETED" else state
        assert f"step 'square': Slurm job 42 {shown}" in resource.message, resource.message
        assert "logs: /nonexistent/isthmus-square/slurm-42.out" in resource.message
        if state == "COMPLETED":
            assert "wrote no manifest" in resource.message
        else:
            assert "CANCELLED DUE TO NODE FAILURE" in resource.message  # the log tail
    for state in ("NODE_FAIL", "BOOT_FAIL", "PREEMPTED"):
        assert flyte_phase(state) == TaskExecution.RETRYABLE_FAILED
    for state in ("FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "DEADLINE", "LOST"):
        assert flyte_phase(state) == TaskExecution.FAILED


def test_pending_forever_gone_jobs_and_an_unreachable_controller():
    from isthmus.slurm.errors import SlurmUnavailable
    from isthmus.slurm.states import JobStatus

    # a job that can never start is cancelled, with the fix
    client = _StubClient(JobStatus(job_id="42", state="PENDING", reason="PartitionConfig"))
    _, resource = _get(client)
    assert resource.phase == TaskExecution.FAILED and client.cancelled == ["42"]
    assert "can never start (PartitionConfig)" in resource.message and "the job was cancelled" in resource.message
    assert client.removed == ["/nonexistent/isthmus-square/job.env"]  # no collect() follows: credentials go now

    # the controller forgot the job and it left no manifest: keep polling, then LOST (never success)
    _, resource = _get(_StubClient(None), gone_grace=60)
    assert resource.phase == TaskExecution.RUNNING and "not listed by the controller" in resource.message
    _, resource = _get(_StubClient(None), gone_grace=0)
    assert resource.phase == TaskExecution.FAILED and "Slurm job 42 LOST" in resource.message

    # the controller does not answer: polls on (for a number of polls and a time), then a retryable
    # failure that cancels the job as far as it can (Flyte calls no delete() after a failure)
    client = _StubClient(error=SlurmUnavailable("slurmctld: connection refused"))
    connector = IsthmusSlurmConnector(lambda config: client, max_unreachable=2, unreachable_grace=0)
    first = asyncio.run(connector.get(resource_meta=_meta()))
    assert first.phase == TaskExecution.RUNNING and "did not answer (1/2)" in first.message
    assert not client.cancelled
    second = asyncio.run(connector.get(resource_meta=_meta()))
    assert second.phase == TaskExecution.RETRYABLE_FAILED and "connection refused" in second.message
    assert client.cancelled == ["42"] and client.removed == ["/nonexistent/isthmus-square/job.env"]
    # a short outage does not fail the task, however many polls it spans
    client = _StubClient(error=SlurmUnavailable("slurmctld: connection refused"))
    connector = IsthmusSlurmConnector(lambda config: client, max_unreachable=2, unreachable_grace=300)
    for _ in range(3):
        assert asyncio.run(connector.get(resource_meta=_meta())).phase == TaskExecution.RUNNING
    assert not client.cancelled


def test_a_local_run_whose_polling_breaks_cancels_its_job():
    from isthmus.slurm.errors import SlurmError

    client = _StubClient(error=SlurmError("squeue printed something unreadable"))
    local = isthmus_task(steps.square, slurm=SlurmJob())
    local._connector = IsthmusSlurmConnector(lambda config: client)
    with pytest.raises(SlurmError, match="unreadable"):
        asyncio.run(local._get(_meta()))
    assert client.cancelled == ["42"] and client.removed == ["/nonexistent/isthmus-square/job.env"]


# -- definition ----------------------------------------------------------------------------------
def test_task_config_and_registration():
    from flytekit.extend.backend.base_connector import ConnectorRegistry

    assert isinstance(ConnectorRegistry.get_connector(TASK_TYPE), IsthmusSlurmConnector)
    triple = isthmus_task(steps.square, slurm=SlurmJob(partition="debug"), name="square_on_slurm")
    assert isinstance(triple, IsthmusSlurmTask) and triple.task_type == TASK_TYPE
    assert triple.slurm.partition == "debug" and triple.name == "square_on_slurm"
    assert dict(triple.python_interface.inputs) == {"x": int}
    assert dict(triple.python_interface.outputs) == {"output": int}
    # @task would put the task where the function was, and the job imports the step by that path
    with pytest.raises(TypeError, match=r"decorate the function with @step"):

        @task(task_config=SlurmJob())
        def triple_fn(n: int) -> int:
            return 3 * n

    # pod settings and the Flyte timeout do not apply to a Slurm task; the step's Resources go to sbatch
    gpu = isthmus_task(steps.gpu_env, slurm=SlurmJob(), timeout=None)
    assert gpu.pod_template is None and gpu.accelerator is None and gpu.metadata.timeout is None
    custom = _template(isthmus_task(steps.sleepy, slurm=SlurmJob(partition="debug"))).custom
    assert custom["slurm"]["partition"] == "debug" and custom["task_name"] == "tests.slurm.steps.sleepy"

    with pytest.raises(ValueError, match="credentials must not be part of the task config"):
        SlurmJob(backend="rest", client_options={"url": "http://slurm:6820", "token": "x.y.z"})
    with pytest.raises(ValueError, match="the URL carries credentials"):
        SlurmJob(backend="rest", client_options={"url": "https://root:secret@slurm:6820"})
    with pytest.raises(ValueError, match=r"SlurmJob\(env=...\): WANDB_API_KEY hold"):
        SlurmJob(env={"WANDB_API_KEY": "abc", "OMP_NUM_THREADS": "4"})
    with pytest.raises(ValueError, match=r"SlurmJob\(env=...\): DB hold"):  # a URL with a password
        SlurmJob(env={"DB": "postgresql://isthmus:hunter2@db/isthmus"})
    with pytest.raises(ValueError, match=r"client_options\['job_env'\]=...\): AWS_SECRET_ACCESS_KEY hold"):
        SlurmJob(backend="pyslurm", client_options={"job_env": {"AWS_SECRET_ACCESS_KEY": "x"}})
    with pytest.raises(ValueError, match=r"client_options\['env'\]=...\): MY_TOKEN hold"):
        SlurmJob(client_options={"env": {"MY_TOKEN": "x", "SLURM_CONF": "/etc/slurm/slurm.conf"}})
    assert SlurmJob(env={"DB": "postgresql://db/isthmus"}).env == {"DB": "postgresql://db/isthmus"}
    with pytest.raises(ValueError, match="use 'cli'"):
        SlurmJob(backend="slurmrest")
    with pytest.raises(TypeError, match="enable_deck"):
        isthmus_task(steps.square, slurm=SlurmJob(), enable_deck=True)
    with pytest.raises(TypeError, match="must be a flytekitplugins.isthmus.SlurmJob"):
        isthmus_task(steps.square, slurm={"partition": "gpu"})
