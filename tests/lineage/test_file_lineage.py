"""The default file lineage: events built as plain dicts, written as they happen, without openlineage-python.

The dict events equal the client's own event objects serialized (one builder for each path, compared here);
a fresh process writes every event in order without importing the client; a process killed mid-step has
written the events emitted before; an unwritable file costs events that are counted and reported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from openlineage.client.facet_v2 import tags_run
from openlineage.client.serde import Serde

from isthmus import lineage, step
from isthmus.lineage import backends, register_backend
from isthmus.lineage import events as dict_events
from isthmus.lineage.openlineage import OpenLineageEmitter, _source_dicts, _step_object
from isthmus.lineage.parent import PARENT_KEY, ROOT_KEY
from tests.helpers import REPO, write_module
from tests.lineage import schemas


@step(
    owner="ml-team",
    tags=["nightly"],
    lineage_inputs=["postgres://db.internal:5432/shop.public.orders"],
    lineage_outputs=[("s3://reports", "daily/summary.csv")],
)
def described(n: int) -> int:
    return n


STEP_PATH = f"{__name__}:described"


def _ref(uri: str, *, columns: bool = False, logged: dict[str, Any] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if columns:
        metadata["columns"] = [{"name": "a", "type": "int64"}, {"name": "b"}]
    if logged:
        metadata["logged"] = logged
    return {"uri": uri, "content_hash": "blake3:" + "1" * 64, "metadata": metadata}


def _step_run(**extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "pipeline_run_id": str(uuid.uuid4()),
        "invocation": "described",
        "attempt": 1,
        "step_name": "described",
        "step_path": STEP_PATH,
        "code_hash": "blake3:" + "0" * 64,
        "deps_hash": None,
        "cache_key": "blake3:" + "2" * 64,
        "status": "COMPLETED",
        "resources": {"cpu": 2},
        "deps": {"numpy": "2.0"},
        "context": {"pipeline_name": "nightly", "orchestrator": "local", "native": {}},
        "inputs": {"n": _ref("/tmp/objects/in")},
        "outputs": {"output": _ref("s3://bucket/objects/out", columns=True, logged={"rows": 3, "note": None})},
    }
    row.update(extra)
    return row


ROWS = {
    "completed": _step_run(metadata={"score": 0.5, "api_key": "hidden-canary", "missing": None}),
    "cache hit": _step_run(cache_hit=True, source_step_run_id=str(uuid.uuid4()), metadata={"score": 1}),
    "failed": _step_run(status="FAILED", error="RuntimeError: boom", traceback="Traceback ...\nRuntimeError: boom"),
    "external parent and root": _step_run(
        pipeline_run_id=None,
        context={
            "pipeline_name": None,
            "orchestrator": "airflow",
            "native": {
                PARENT_KEY: {"namespace": "airflow", "job_name": "dag.task", "run_id": str(uuid.uuid4())},
                ROOT_KEY: {"namespace": "airflow", "job_name": "dag", "run_id": str(uuid.uuid4())},
                "openlineage_run_id": str(uuid.uuid4()),
            },
        },
    ),
    "unknown step": _step_run(step_path="nowhere.at_all:fn", outputs={}, inputs={}),
}


def _normalized(event: dict[str, Any]) -> dict[str, Any]:
    """Without what differs by design: the event time, each facet's producer, the adapter version."""

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {
                k: walk(v) for k, v in obj.items() if k not in ("_producer", "eventTime", "openlineageAdapterVersion")
            }
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    return walk(json.loads(json.dumps(event)))


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "_backends", dict(backends._backends))


@pytest.mark.parametrize("case", sorted(ROWS))
@pytest.mark.parametrize("event_type", ["START", "COMPLETE", "FAIL"])
def test_dict_events_equal_the_clients_objects(case: str, event_type: str, registry: None) -> None:
    register_backend(
        "mybatch",
        job_id=lambda run: ((run.get("context") or {}).get("native") or {}).get("openlineage_run_id") and "4711",
        facets=lambda run: {"tags": tags_run.TagsRunFacet(tags=[tags_run.TagsRunFacetFields("queue", "gpu")])},
    )
    row = ROWS[case]
    emitter = OpenLineageEmitter(client=object())
    objects = Serde.to_dict(emitter._step_event(dict(row), event_type))  # type: ignore[arg-type]
    plain = dict_events.step_event(row, event_type, job_facets=_source_dicts(row), step=_step_object(row))
    assert _normalized(plain) == _normalized(objects)
    schemas.validate_event(json.loads(dict_events.to_json_line(plain)))
    assert "hidden-canary" not in dict_events.to_json_line(plain).decode()


@pytest.mark.parametrize("case", sorted(set(ROWS) - {"failed"}))
def test_a_hits_two_events_written_at_once_equal_the_events_built_one_by_one(
    case: str, registry: None, tmp_path: Path
) -> None:
    row = ROWS[case]
    emitter = OpenLineageEmitter()
    emitter._sink, emitter._sink_chosen = dict_events_sink(tmp_path), True
    emitter.on_step_hit(row)  # type: ignore[arg-type]
    start, end = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    expected = [
        dict_events.step_event(row, kind, job_facets=_source_dicts(row), step=_step_object(row))
        for kind in ("START", "COMPLETE")
    ]
    assert [_normalized(start), _normalized(end)] == [_normalized(e) for e in expected]
    assert (start["eventType"], end["eventType"]) == ("START", "COMPLETE")
    assert start["eventTime"] <= end["eventTime"] and emitter.sent == 2
    for event in (start, end):
        schemas.validate_event(event)


def test_a_hook_without_on_step_hit_gets_start_then_end(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []

    class Hook(lineage.NoopLineage):
        def on_step_start(self, step_run: Any) -> None:
            seen.append(("start", step_run["id"]))

        def on_step_end(self, step_run: Any) -> None:
            seen.append(("end", step_run["id"]))

    monkeypatch.setattr(lineage, "_hook", Hook())
    row = ROWS["cache hit"]
    lineage.emit_hit(row)  # type: ignore[arg-type]
    assert seen == [("start", row["id"]), ("end", row["id"])]


def dict_events_sink(directory: Path) -> Any:
    from isthmus.lineage.filesink import FileSink

    return FileSink(directory / "events.jsonl")


@pytest.mark.parametrize("event_type", ["START", "COMPLETE", "FAIL", "ABORT"])
def test_pipeline_dict_events_equal_the_clients_objects(event_type: str) -> None:
    import datetime as dt

    run = {
        "id": str(uuid.uuid4()),
        "pipeline": "nightly",
        "orchestrator": "flyte",
        "started_at": dt.datetime(2026, 1, 2, 3, 4, 5),
        "error": "ValueError: no",
    }
    objects = Serde.to_dict(OpenLineageEmitter(client=object())._pipeline_event(run, event_type))  # type: ignore[arg-type]
    plain = dict_events.pipeline_event(run, event_type)
    assert _normalized(plain) == _normalized(objects)
    schemas.validate_event(plain)


CHAIN = """
import json, sys
from isthmus import lineage, pipeline, step

@step
def inc(x: int) -> int:
    return x + 1

@pipeline
def chain(x: int = 0):
    for _ in range(5):
        x = inc(x)
    return x

@step
def items(n: int) -> list:
    return list(range(n))

@step
def total(xs: list) -> int:
    return sum(xs)

@pipeline
def fan(n: int = 20):
    return total(inc.map(x=items(n)))  # 20 steps at once in worker threads

first = chain.run(x=1)
again = chain.run(x=1)
assert fan.run(n=20).outputs == fan.run(n=20).outputs == 210
hook = lineage.get_lineage_hook()
print(json.dumps({
    "imported_client": "openlineage.client" in sys.modules,
    "sent": hook.sent, "failed": hook.failed, "hits": again.cache_hits,
}))
"""


def _env(home: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENLINEAGE", "ISTHMUS_"))}
    env.update(ISTHMUS_HOME=str(home), PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    return env


def test_a_fresh_process_writes_every_event_in_order_without_the_client(tmp_path: Path) -> None:
    write_module(tmp_path, "chain_mod", CHAIN)
    home = tmp_path / "home"
    for _ in range(2):  # two processes append to the same file
        proc = subprocess.run(
            [sys.executable, str(tmp_path / "chain_mod.py")],
            env=_env(home, tmp_path),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        # 2 chain runs x (pipeline + 5 steps) + 2 fan-out runs x (pipeline + 22 steps), START and COMPLETE each
        assert out == {"imported_client": False, "sent": 24 + 92, "failed": 0, "hits": 5}
    events = [json.loads(line) for line in (home / "lineage" / "events.jsonl").read_text().splitlines()]
    assert len(events) == 2 * (24 + 92)  # two processes appended to one file, every line whole
    by_run: dict[str, list[str]] = {}
    for event in events:
        schemas.validate_event(event)
        by_run.setdefault(event["run"]["runId"], []).append(event["eventType"])
    assert all(types == ["START", "COMPLETE"] for types in by_run.values()) and len(by_run) == 24 + 92


KILLED = """
import pathlib, sys, time
from isthmus import pipeline, step

@step
def slow(x: int) -> int:
    pathlib.Path(sys.argv[1]).write_text("started")
    time.sleep(120)
    return x

@pipeline
def p(x: int = 0):
    return slow(x)

p.run(x=1)
"""


def test_a_process_killed_mid_step_has_written_the_events_before(tmp_path: Path) -> None:
    write_module(tmp_path, "killed_mod", KILLED)
    home, marker = tmp_path / "home", tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "killed_mod.py"), str(marker)], env=_env(home, tmp_path), cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "the step never started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    events = [json.loads(line) for line in (home / "lineage" / "events.jsonl").read_text().splitlines()]
    assert [(e["job"]["name"], e["eventType"]) for e in events] == [("p", "START"), ("p.slow", "START")]


def test_an_unwritable_file_costs_counted_events_and_one_warning(
    isthmus_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (isthmus_home / "lineage" / "events.jsonl").mkdir(parents=True)  # a directory where the file goes
    emitter = OpenLineageEmitter()
    lineage.set_lineage_hook(emitter)
    try:
        with caplog.at_level("WARNING", logger="isthmus.lineage"):
            described.run(3)
            assert emitter.flush(10)
    finally:
        lineage.set_lineage_hook(None)
    assert emitter.sent == 0 and emitter.failed == 4  # a run of its own and the step run: START, COMPLETE
    warnings = [r.getMessage() for r in caplog.records if r.name == "isthmus.lineage"]
    assert len(warnings) == 1 and "4 OpenLineage event(s) not delivered" in warnings[0]
