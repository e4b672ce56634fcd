"""OpenLineage around a Slurm job: OTHER while the job is pending, START/COMPLETE from the job itself,
all under one derived run id; a parent handed over as OPENLINEAGE_PARENT_ID (with its root) becomes the
job's ``parent`` facet; credentials reach the job through a 0600 file, never the batch script."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from isthmus import lineage
from isthmus.context import RunContext
from isthmus.lineage.naming import step_run_uuid
from isthmus.lineage.openlineage import OpenLineageEmitter
from isthmus.lineage.parent import PARENT_KEY, ROOT_KEY, format_parent_id, parents_from_env, parse_parent_id
from isthmus.redaction import is_secret_env
from isthmus.runner import default_runner
from isthmus.slurm import SlurmExecutor
from isthmus.slurm.lineage import emit_waiting
from tests.lineage import schemas
from tests.slurm import steps
from tests.slurm.conftest import make_client

PARENT = {"namespace": "airflow-prod", "job_name": "train_dag.fit", "run_id": str(uuid.uuid4())}
ROOT = {"namespace": "airflow-prod", "job_name": "train_dag", "run_id": str(uuid.uuid4())}


@pytest.fixture(autouse=True)
def _fresh_lineage():
    lineage.reset()
    yield
    lineage.reset()


def test_parent_ids_parse_and_round_trip():
    text = format_parent_id(PARENT)
    assert text == f"airflow-prod/train_dag.fit/{PARENT['run_id']}"
    assert parse_parent_id(text) == PARENT
    assert parse_parent_id("default/my.dag.task/not-a-uuid") is None
    assert parse_parent_id("no-slashes") is None
    env = {"OPENLINEAGE_PARENT_ID": text, "OPENLINEAGE_ROOT_PARENT_ID": format_parent_id(ROOT)}
    assert parents_from_env(env) == {PARENT_KEY: PARENT, ROOT_KEY: ROOT}
    assert parents_from_env({"OPENLINEAGE_ROOT_PARENT_ID": format_parent_id(ROOT)}) == {}


def test_secret_env_rules():
    assert is_secret_env("MY_API_TOKEN", "x")
    assert is_secret_env("ISTHMUS_STORE_URL", "postgresql+psycopg://isthmus:hunter2@db/isthmus")
    assert is_secret_env("OPENLINEAGE__TRANSPORT", '{"type": "http"}')
    assert not is_secret_env("ISTHMUS_STORE_URL", "sqlite:////shared/isthmus.db")
    assert not is_secret_env("OPENLINEAGE_PARENT_ID", format_parent_id(PARENT))


def _events(home: Path) -> list[dict]:
    path = home / "lineage" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


@pytest.fixture
def file_lineage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events to the default file transport under the isthmus home, validated against the schemas."""
    for var in [v for v in os.environ if v.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(var)


def test_pending_job_sends_other_then_the_job_reports_under_the_handed_parent(
    slurm_cluster, job_home: Path, file_lineage: None
):
    """cli backend: ``--begin=now+3`` keeps the job PENDING for a few seconds."""
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    client = make_client(slurm_cluster, "cli")
    ex = SlurmExecutor(
        client,
        default_runner(),
        poll_interval=0.2,
        extra_options=["--begin=now+3"],
        env={"MY_API_TOKEN": secret},
    )
    ctx = RunContext(
        orchestrator="airflow",  # the Airflow provider reports the task; the job reports itself
        pipeline_name="train_dag",
        pipeline_run_id=str(uuid.uuid4()),
        invocation="fit",
        attempt=2,
        native={PARENT_KEY: PARENT, ROOT_KEY: ROOT},
    )

    default_runner().metadata.ensure_pipeline_run(
        {"id": ctx.pipeline_run_id, "pipeline": "train_dag", "orchestrator": "airflow"}
    )
    # the script holds no credential; it sources them from a file only its user can read
    inputs, params = ex.split_arguments(steps.job_env, {"names": ["MY_API_TOKEN", "OPENLINEAGE_PARENT_ID"]})
    spec, planned = ex.build(steps.job_env, inputs, params, ctx)
    assert secret not in spec.full_script() and secret not in json.dumps(spec.env)  # env: the REST body
    assert planned.secret_env_file and planned.secret_env_file in spec.full_script()
    assert secret not in json.dumps(planned.to_dict())

    seen: list[str] = []

    async def go():
        job = await ex.submit(steps.job_env, inputs, params, ctx)
        mode = stat.S_IMODE(os.stat(job.secret_env_file).st_mode)
        seen.append(oct(mode))
        return await ex.wait(job, on_change=lambda s: seen.append(s.state) or _waiting(job, s)), job

    def _waiting(job, status):
        emit_waiting(job.to_dict(), status.to_dict())

    status, job = asyncio.run(go())
    result = asyncio.run(ex.collect("job_env", job, status))
    asyncio.run(client.close())
    assert seen[0] == "0o600" and "PENDING" in seen, seen
    assert not Path(job.secret_env_file).exists()  # removed once collected
    env_in_job = default_runner().artifacts.load(result.outputs["output"])
    assert env_in_job["MY_API_TOKEN"] == secret
    assert env_in_job["OPENLINEAGE_PARENT_ID"] == format_parent_id(PARENT)

    lineage.reset()  # flush this process's emitter
    events = [e for e in _events(job_home) if e["job"]["name"].startswith("train_dag.fit")]
    kinds = [e["eventType"] for e in events]
    assert kinds[0] == "OTHER" and kinds[-2:] == ["START", "COMPLETE"], kinds
    assert len({e["run"]["runId"] for e in events}) == 1  # the submitter and the job derive the same id
    for event in events:
        schemas.validate_event(event)
        parent = event["run"]["facets"]["parent"]
        assert parent["run"]["runId"] == PARENT["run_id"] and parent["job"]["name"] == PARENT["job_name"]
        assert parent["root"]["run"]["runId"] == ROOT["run_id"] and parent["root"]["job"]["name"] == ROOT["job_name"]
        assert secret not in json.dumps(event)
    other = events[0]["run"]["facets"]
    assert other["isthmus_slurm"]["jobId"] == job.job_id and other["isthmus_slurm"]["state"] == "PENDING"
    assert other["isthmus_resources"]["slurmJobId"] == job.job_id
    done = events[-1]["run"]["facets"]
    assert done["isthmus_resources"]["slurmJobId"] == job.job_id and done["isthmus_step"]["attempt"] == 2
    # nothing of the credential in the metadata either
    assert secret not in json.dumps(default_runner().metadata.get_step_run(result.step_run_id), default=str)


def test_a_step_without_a_pipeline_run_keeps_one_run_id_from_pending_to_complete(
    slurm_cluster, job_home: Path, file_lineage: None
):
    """No pipeline run to derive the id from: the submitter chooses it and hands it to the job."""
    value = int(uuid.uuid4().int % 10**6)  # a fresh input: the job computes
    ex = SlurmExecutor(make_client(slurm_cluster, "rest"), default_runner(), poll_interval=0.2)
    ex_pending = SlurmExecutor(
        make_client(slurm_cluster, "cli"), default_runner(), poll_interval=0.2, extra_options=["--begin=now+2"]
    )
    result = ex_pending.run(steps.square, {"x": value})
    assert result.value == value * value and not result.cache_hit
    assert ex.run(steps.square, {"x": value}).cache_hit  # and a hit for the other backend: no job

    lineage.reset()
    step_run = default_runner().metadata.get_step_run(result.step_run_id)
    events = [e for e in _events(job_home) if e["job"]["name"].endswith("square")]
    ours = [e for e in events if e["run"]["facets"].get("isthmus_step", {}).get("stepRunId") == result.step_run_id]
    assert [e["eventType"] for e in ours] == ["START", "COMPLETE"], [e["eventType"] for e in events]
    run_id = ours[0]["run"]["runId"]
    assert step_run["context"]["native"]["openlineage_run_id"] and run_id == step_run_uuid(step_run)
    other = [e for e in events if e["eventType"] == "OTHER" and e["run"]["runId"] == run_id]
    assert other and other[0]["run"]["facets"]["isthmus_slurm"]["state"] == "PENDING"
    for event in [*other, *ours]:
        schemas.validate_event(event)


def test_waiting_without_a_derivable_run_id_sends_nothing():
    """A job followed (adopted) without a pipeline run has no run id this process can derive."""

    class Client:
        sent: list = []

        def emit(self, event) -> None:
            self.sent.append(event)

    client = Client()
    payload = {"pipeline_run_id": None, "invocation": "square", "attempt": 1, "context": {"native": {}}}
    assert OpenLineageEmitter(client).emit_now("on_step_waiting", payload) is False and not client.sent
    payload["context"]["native"]["openlineage_run_id"] = str(uuid.uuid4())
    payload.update(step_name="square", step_path="tests.slurm.steps:square", status="WAITING")
    assert OpenLineageEmitter(client).emit_now("on_step_waiting", payload) is True and len(client.sent) == 1
    first = step_run_uuid(payload)
    assert client.sent[0].run.runId == first and step_run_uuid({**payload, "attempt": 2}) != first
