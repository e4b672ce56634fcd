"""``log_metadata`` in a step run as a real Slurm job that cannot reach the store (``record="manifest"``):
the job's step run comes back through its signed manifest with the metadata, the job's own COMPLETE event
carries the ``isthmus_metadata`` facets, and a later cache hit on the submitting side shows the same."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from isthmus import lineage
from isthmus.runner import default_runner
from isthmus.slurm import SlurmExecutor
from tests.lineage import metadata_steps as ms
from tests.lineage import schemas
from tests.slurm.conftest import make_client

LOGGED = {"accuracy": ms.ACCURACY, "rows": 1200, "passed": True, "classes": ["cat", "dog"]}


@pytest.fixture(autouse=True)
def _fresh_lineage(monkeypatch: pytest.MonkeyPatch):
    """Events to the default file transport under the isthmus home (job and submitter alike)."""
    for var in [v for v in os.environ if v.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(var)
    lineage.reset()
    yield
    lineage.reset()


def _events(home: Path) -> list[dict]:
    path = home / "lineage" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_slurm_job_logs_metadata_recorded_through_its_manifest_and_in_its_lineage(slurm_cluster, job_home: Path):
    client = make_client(slurm_cluster, "cli")
    ex = SlurmExecutor(client, default_runner(), poll_interval=0.2, record="manifest")
    jobs: list = []
    result = asyncio.run(ex.arun(ms.evaluate, {"rows": 1200}, on_submit=jobs.append))
    assert not result.cache_hit and len(jobs) == 1
    manifest = json.loads(Path(jobs[0].manifest).read_text())
    (job_row,) = [r for r in manifest["records"]["step_runs"] if r["id"] == result.step_run_id]
    assert job_row["metadata"] == LOGGED  # what the job recorded, in the manifest it left

    row = default_runner().metadata.get_step_run(result.step_run_id)  # ingested from the manifest here
    assert row["context"]["native"]["slurm_job_id"] == jobs[0].job_id
    assert row["metadata"] == LOGGED
    assert row["outputs"]["model"]["metadata"]["logged"] == {"framework": "sklearn", "n_features": 3}

    hit = asyncio.run(ex.arun(ms.evaluate, {"rows": 1200}, on_submit=jobs.append))
    assert hit.cache_hit and hit.source_step_run_id == result.step_run_id and len(jobs) == 1  # no second job
    asyncio.run(client.close())

    lineage.reset()  # flush this process's emitter
    events = [e for e in _events(job_home) if e["job"]["name"].endswith("evaluate")]
    for event in events:
        schemas.validate_event(event)
    completes = {e["run"]["facets"]["isthmus_step"]["stepRunId"]: e for e in events if e["eventType"] == "COMPLETE"}
    job_done, hit_done = completes[result.step_run_id], completes[hit.step_run_id]
    assert job_done["run"]["facets"]["isthmus_resources"]["slurmJobId"] == jobs[0].job_id  # sent by the job itself
    for event, from_cache in ((job_done, False), (hit_done, True)):
        facet = event["run"]["facets"]["isthmus_metadata"]
        assert (facet["metadata"], facet["loggedByStepRunId"], facet["fromCache"]) == (
            LOGGED,
            result.step_run_id,
            from_cache,
        )
        assert type(facet["metadata"]["rows"]) is int and type(facet["metadata"]["accuracy"]) is float
        (output,) = event["outputs"]
        assert output["facets"]["isthmus_metadata"]["metadata"] == {"framework": "sklearn", "n_features": 3}
