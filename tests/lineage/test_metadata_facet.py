"""``isthmus_metadata``: what a step logs with ``log_metadata`` reaches OpenLineage — about the run as a run
facet of its COMPLETE event, about an output as a dataset facet of that output — as JSON numbers, valid
against the OpenLineage spec and the shipped facet schemas; a cache hit shows its source's metadata and
says so; no secret ever rides along."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from isthmus import lineage
from isthmus.errors import StepFailed
from isthmus.lineage.facets import metadata_facet_dict, schema, shown_metadata
from isthmus.lineage.openlineage import OpenLineageEmitter
from isthmus.runner import default_runner
from tests.helpers import run_python, write_module
from tests.lineage import metadata_steps as ms
from tests.lineage import schemas
from tests.lineage.test_events import _restore_environ  # noqa: F401 - the fixture


def _file_events(home: Path) -> list[dict[str, Any]]:
    lineage.get_lineage_hook().flush(10)
    path = home / "lineage" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _of(events: list[dict[str, Any]], step_run_id: str, kind: str = "COMPLETE") -> dict[str, Any]:
    (event,) = [
        e
        for e in events
        if e["eventType"] == kind and e["run"]["facets"].get("isthmus_step", {}).get("stepRunId") == step_run_id
    ]
    return event


def _without_base(facet: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in facet.items() if not k.startswith("_")}


LOGGED = {"accuracy": ms.ACCURACY, "rows": 1200, "passed": True, "classes": ["cat", "dog"]}
LOGGED_MODEL = {"framework": "sklearn", "n_features": 3}


def test_complete_event_carries_run_and_output_metadata_as_numbers(isthmus_home: Path) -> None:
    result = ms.evaluate.run(1200)
    events = _file_events(isthmus_home)
    for event in events:
        schemas.validate_event(event)
    start, done = _of(events, result.step_run_id, "START"), _of(events, result.step_run_id)
    assert "isthmus_metadata" not in start["run"]["facets"]  # nothing logged yet when the run starts
    facet = done["run"]["facets"]["isthmus_metadata"]
    assert facet["_schemaURL"].endswith("/IsthmusMetadataRunFacet.json")
    assert _without_base(facet) == {"metadata": LOGGED, "loggedByStepRunId": result.step_run_id, "fromCache": False}
    logged = facet["metadata"]
    assert type(logged["rows"]) is int and type(logged["accuracy"]) is float and logged["passed"] is True
    (output,) = done["outputs"]
    model = output["facets"]["isthmus_metadata"]
    assert model["_schemaURL"].endswith("/IsthmusMetadataDatasetFacet.json")
    assert _without_base(model) == {"output": "model", "metadata": LOGGED_MODEL}
    assert type(model["metadata"]["n_features"]) is int
    # the facet is what the store holds for the step run and its output
    row = default_runner().metadata.get_step_run(result.step_run_id)
    assert row["metadata"] == LOGGED and row["outputs"]["model"]["metadata"]["logged"] == LOGGED_MODEL


def test_a_cache_hit_shows_the_metadata_of_its_source_and_says_so(isthmus_home: Path) -> None:
    first = ms.evaluate.run(1200)
    hit = ms.evaluate.run(1200)
    assert hit.cache_hit and hit.source_step_run_id == first.step_run_id
    row = default_runner().metadata.get_step_run(hit.step_run_id)
    assert row["metadata"] == LOGGED  # the hit row carries its source's metadata
    events = _file_events(isthmus_home)
    for event in events:
        schemas.validate_event(event)
    done = _of(events, hit.step_run_id)
    assert done["run"]["facets"]["isthmus_step"]["cacheHit"] is True
    assert _without_base(done["run"]["facets"]["isthmus_metadata"]) == {
        "metadata": LOGGED,
        "loggedByStepRunId": first.step_run_id,
        "fromCache": True,
    }
    (output,) = done["outputs"]
    assert output["facets"]["isthmus_metadata"]["metadata"] == LOGGED_MODEL


STEPS = """
from isthmus import log_metadata, step

@step
def score(n: int) -> int:
    log_metadata({"score": n * 0.5, "n": n})
    return n
"""

RUN = """
import json
from isthmus import lineage
from proj_olmeta import score
r = score.run(4)
assert lineage.get_lineage_hook().flush(10)
print(json.dumps({"id": r.step_run_id, "hit": r.cache_hit}))
"""


def test_fresh_processes_hit_with_the_source_metadata_and_recompute_after_an_edit(
    tmp_path: Path, isthmus_home: Path
) -> None:
    module = write_module(tmp_path, "proj_olmeta", STEPS)
    env = {"ISTHMUS_HOME": str(isthmus_home), "OPENLINEAGE_URL": "", "OPENLINEAGE_DISABLED": ""}
    first = run_python(RUN, env=env, cwd=tmp_path)
    module.write_text(module.read_text().replace("    return n\n", "    # the same code, commented\n    return n\n"))
    second = run_python(RUN, env=env, cwd=tmp_path)
    module.write_text(module.read_text().replace('"score": n * 0.5', '"score": n * 0.25'))
    third = run_python(RUN, env=env, cwd=tmp_path)
    assert (first["hit"], second["hit"], third["hit"]) == (False, True, False)
    lines = (isthmus_home / "lineage" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    for event in events:
        schemas.validate_event(event)
    facets = [
        _without_base(_of(events, run["id"])["run"]["facets"]["isthmus_metadata"]) for run in (first, second, third)
    ]
    assert facets == [
        {"metadata": {"score": 2.0, "n": 4}, "loggedByStepRunId": first["id"], "fromCache": False},
        {"metadata": {"score": 2.0, "n": 4}, "loggedByStepRunId": first["id"], "fromCache": True},
        {"metadata": {"score": 1.0, "n": 4}, "loggedByStepRunId": third["id"], "fromCache": False},
    ]
    assert '"n": 4' in "".join(lines)  # a JSON number on the wire, not text


def test_secret_like_keys_numbers_pass_and_secret_values_never_reach_an_event(isthmus_home: Path) -> None:
    counted = ms.count_tokens.run("a b c")
    with pytest.raises(StepFailed, match="metadata holds a secret"):
        ms.log_password.run("ada")
    secret = "ada-pw-23757"  # what log_password built at run time
    events = _file_events(isthmus_home)
    for event in events:
        schemas.validate_event(event)
    assert secret not in json.dumps(events)
    done = _of(events, counted.step_run_id)
    assert done["run"]["facets"]["isthmus_metadata"]["metadata"] == {"api_token_count": 3, "max_tokens": 512}
    fail = next(e for e in events if e["eventType"] == "FAIL" and e["job"]["name"].endswith("log_password"))
    assert (
        "isthmus_metadata" not in fail["run"]["facets"]
        and "a secret-named key" in fail["run"]["facets"]["errorMessage"]["message"]
    )
    assert secret.encode() not in b"".join(p.read_bytes() for p in isthmus_home.rglob("*") if p.is_file())


class _Collect:
    """An OpenLineage client that keeps the events it is given."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)


def test_metadata_that_reached_a_record_another_way_is_shown_without_its_secrets(
    isthmus_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record written past ``log_metadata`` (a hand-edited manifest, an older version): text under a
    secret-named key, credential-shaped text and the environment's secrets are hidden; numbers stay."""
    from openlineage.client.serde import Serde

    env_secret = "envcanary-7f3a9c21"
    monkeypatch.setenv("WAREHOUSE_PASSWORD", env_secret)
    canaries = [
        "keycanary-001",
        "urlcanary-002",
        "cookiecanary-003",
        "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
        env_secret,
    ]
    result = ms.evaluate.run(7)
    record = dict(default_runner().metadata.get_step_run(result.step_run_id))
    record["metadata"] = {
        "api_key": canaries[0],
        "source": f"https://bob:{canaries[1]}@warehouse.example/db",
        "nested": {"session_cookie": [canaries[2]], "ok": "plain text"},
        "pushed_with": canaries[3],
        "dsn_note": f"connected with {canaries[4]}",
        "token_count": 12,
        canaries[3]: 1,
    }
    outputs = json.loads(json.dumps(record["outputs"]))
    outputs["model"]["metadata"]["logged"] = {"password": canaries[0], "rows": 7}
    record["outputs"] = outputs
    client = _Collect()
    emitter = OpenLineageEmitter(client)
    emitter.on_step_end(record)
    assert emitter.flush(10) and emitter.failed == 0
    (event,) = [json.loads(Serde.to_json(e)) for e in client.events]
    schemas.validate_event(event)
    text = json.dumps(event)
    for canary in canaries:
        assert canary not in text, canary
    shown = event["run"]["facets"]["isthmus_metadata"]["metadata"]
    assert shown["api_key"] == "***" and shown["nested"] == {"session_cookie": ["***"], "ok": "plain text"}
    assert shown["token_count"] == 12 and "warehouse.example" in shown["source"]
    assert event["outputs"][0]["facets"]["isthmus_metadata"]["metadata"] == {"password": "***", "rows": 7}


def test_facet_fields_and_schema_offline() -> None:
    """Without openlineage objects: nothing logged, no facet; the shipped schemas are where the keys say."""
    assert metadata_facet_dict({"id": "s1", "metadata": None}) is None
    assert metadata_facet_dict({"id": "s1", "metadata": {}}) is None
    assert metadata_facet_dict({"id": "s2", "cache_hit": True, "source_step_run_id": "s1", "metadata": {"a": 1}}) == {
        "metadata": {"a": 1},
        "loggedByStepRunId": "s1",
        "fromCache": True,
    }
    assert shown_metadata({"x": 1.5, "flag": False, "none": None, "odd": object()}) == {
        "x": 1.5,
        "flag": False,
        "none": None,
        "odd": "***",
    }
    assert schema("isthmus_metadata")["$id"].endswith("IsthmusMetadataRunFacet.json")
    assert schema("isthmus_metadata", dataset=True)["$id"].endswith("IsthmusMetadataDatasetFacet.json")
