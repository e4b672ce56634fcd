"""Execution backends registered with lineage: their job id, facets and job names reach the events, the
core names none of them, and Slurm registers itself in any process that imports it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from importlib import resources
from typing import Any

import pytest
from openlineage.client.facet_v2 import tags_run
from openlineage.client.serde import Serde

from isthmus.errors import ConfigurationError
from isthmus.lineage import backends, register_backend
from isthmus.lineage.facets import resources_facet
from isthmus.lineage.openlineage import OpenLineageEmitter
from isthmus.lineage.parent import PARENT_KEY
from tests.helpers import REPO
from tests.lineage import schemas


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by the test are forgotten afterwards."""
    monkeypatch.setattr(backends, "_backends", dict(backends._backends))


def _step_run(native: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "pipeline_run_id": str(uuid.uuid4()),
        "invocation": "fit",
        "attempt": 1,
        "step_name": "fit",
        "step_path": "nowhere:fit",
        "code_hash": "blake3:" + "0" * 64,
        "status": "COMPLETED",
        "resources": {"cpu": 2},
        "context": {"pipeline_name": "train", "orchestrator": "airflow", "native": native},
    }


def _event(step_run: dict[str, Any]) -> dict[str, Any]:
    return Serde.to_dict(OpenLineageEmitter(client=object())._step_event(step_run, "COMPLETE"))


def test_a_registered_backend_names_the_job_and_adds_its_job_id_and_facets(registry: None) -> None:
    register_backend(
        "mybatch",
        job_id=lambda run: ((run.get("context") or {}).get("native") or {}).get("mybatch_job"),
        facets=lambda run: {"tags": tags_run.TagsRunFacet(tags=[tags_run.TagsRunFacetFields("queue", "gpu")])},
    )
    parent = {"namespace": "isthmus", "job_name": "train.fit", "run_id": str(uuid.uuid4())}
    event = _event(_step_run({PARENT_KEY: parent, "mybatch_job": "4711"}))
    schemas.validate_event(event)
    assert event["job"]["name"] == "train.fit.mybatch"
    assert event["run"]["facets"]["isthmus_resources"] == {
        **event["run"]["facets"]["isthmus_resources"],
        "requested": {"cpu": 2},
        "mybatchJobId": "4711",
    }
    assert event["run"]["facets"]["tags"]["tags"][0]["value"] == "gpu"
    # a run no backend claims: no job id, no backend facets, the generic name
    other = _event(_step_run({PARENT_KEY: parent}))
    schemas.validate_event(other)
    assert other["job"]["name"] == "train.fit.run"
    assert "mybatchJobId" not in other["run"]["facets"]["isthmus_resources"] and "tags" not in other["run"]["facets"]
    # without a parent of the same name, the job keeps its name
    assert _event(_step_run({"mybatch_job": "4711"}))["job"]["name"] == "train.fit"


def test_resources_facet_has_a_job_id_field_per_registered_backend(registry: None) -> None:
    register_backend("one", job_id=lambda run: None)
    register_backend("two", job_id=lambda run: "7")
    facet = Serde.to_dict(resources_facet(_step_run({})))
    assert facet["requested"] == {"cpu": 2} and facet["twoJobId"] == "7" and "oneJobId" not in facet


@pytest.mark.parametrize("kind", ["", "My-Batch", "1batch", "batch.x", None])
def test_a_backend_kind_must_be_a_plain_lowercase_name(registry: None, kind: Any) -> None:
    with pytest.raises(ConfigurationError, match="lowercase letters and digits"):
        register_backend(kind, job_id=lambda run: None)


def test_the_core_names_no_backend() -> None:
    package = resources.files("isthmus.lineage")
    files = [p for p in [*package.iterdir(), *package.joinpath("schemas").iterdir()] if p.is_file()]
    assert any(p.name == "openlineage.py" for p in files)
    for path in files:
        if path.name.endswith((".py", ".json")):
            assert "slurm" not in path.read_text().lower(), path.name


def test_lineage_alone_registers_nothing_and_importing_slurm_registers_it() -> None:
    code = """
import json, sys
from isthmus.lineage.backends import registered_backends
before = [b.kind for b in registered_backends()]
core_imports_slurm = any(m.startswith("isthmus.slurm") for m in sys.modules)
import isthmus.slurm
print(json.dumps([before, core_imports_slurm, [b.kind for b in registered_backends()]]))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == [[], False, ["slurm"]]
