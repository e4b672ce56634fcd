"""``isthmus.Client``, ``isthmus why`` and the reasons ``runs show`` prints: on runs recorded by fresh
processes (a helper edited on disk, a parameter changed, a dependency upgraded) and in-process ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isthmus import Client, RunNotFound, pipeline, step
from tests.core.test_processes import _fake_dist
from tests.helpers import invoke, run_python, write_module

RUN = """
import json, sys
from proj_why import flow
run = flow.run(x=int(sys.argv[1]) if len(sys.argv) > 1 else 1)
print(json.dumps({"id": run.id, "hits": {k: v.cache_hit for k, v in run.steps.items()}}))
"""


def _run(tmp_path: Path, home: Path, x: int, **env: str) -> dict:
    """One run of ``flow(x=x)`` in a fresh interpreter."""
    code = RUN.replace("int(sys.argv[1]) if len(sys.argv) > 1 else 1", str(x))
    return run_python(code, env={"ISTHMUS_HOME": str(home), **env}, cwd=tmp_path)


def test_why_names_the_edited_helper_the_changed_param_and_the_upgraded_dependency(
    tmp_path: Path, isthmus_home: Path
) -> None:
    site = tmp_path / "site"
    _fake_dist(site, "1.0")
    write_module(tmp_path, "proj_why_helpers", "def _interaction_terms(x):\n    return x * 2\n")
    write_module(
        tmp_path,
        "proj_why",
        """
        import fakedep
        from isthmus import pipeline, step
        from proj_why_helpers import _interaction_terms

        @step
        def features(x: int) -> int:
            return _interaction_terms(x)

        @step
        def versioned(x: int) -> int:
            return x * fakedep.VALUE

        @pipeline
        def flow(x: int = 1):
            return {"f": features(x), "v": versioned(x)}
        """,
    )
    env = {"PYTHONPATH": str(site)}
    first = _run(tmp_path, isthmus_home, 1, **env)
    assert first["hits"] == {"features": False, "versioned": False}
    client = Client()
    e = client.explain("latest:features")
    assert e.decision == "first" and e.reason == "first run" and e.compared_with is None

    write_module(tmp_path, "proj_why_helpers", "def _interaction_terms(x):\n    return x * 3\n")
    second = _run(tmp_path, isthmus_home, 1, **env)  # a fresh process sees the edit on disk
    assert second["hits"] == {"features": False, "versioned": True}
    e = client.explain(f"{second['id']}:features")
    assert e.decision == "computed" and e.reason == "code: _interaction_terms changed"
    assert e.compared_with is not None and e.compared_with.pipeline_run_id == first["id"]
    (change,) = e.changes
    assert change.component == "code" and change.name == "_interaction_terms"
    assert "-    return x * 2" in (change.diff or "") and "+    return x * 3" in (change.diff or "")
    hit = client.explain(f"{second['id']}:versioned")
    assert hit.decision == "hit" and hit.source is not None
    assert hit.source.pipeline_run_id == first["id"] and hit.source.orchestrator == "local"
    assert hit.reason.startswith(f"hit: from {hit.source.id[:8]} (local run {first['id'][:8]}")

    third = _run(tmp_path, isthmus_home, 2, **env)
    e = client.explain(f"{third['id']}:features")
    assert e.reason == "params: x 1 → 2"
    assert [(c.component, c.name, c.old, c.new) for c in e.changes] == [("params", "x", 1, 2)]

    _fake_dist(site, "1.1")
    fourth = _run(tmp_path, isthmus_home, 2, **env)
    assert fourth["hits"] == {"features": False, "versioned": False}  # both steps' module imports fakedep
    for name in ("features", "versioned"):
        assert client.explain(f"latest:{name}").reason == "deps: fakedep 1.0 → 1.1"

    # the command line: text, JSON, and runs show's one-line reasons
    code, out = invoke("why", f"{second['id'][:10]}:features")
    assert code == 0 and "why: code: _interaction_terms changed" in out and "+    return x * 3" in out
    code, out = invoke("why", "latest:versioned", "--json")
    data = json.loads(out)
    assert code == 0 and data["decision"] == "computed" and data["changes"][0]["new"] == "1.1"
    code, out = invoke("runs", "show", third["id"])
    assert code == 0 and "params: x 1 → 2" in out
    code, out = invoke("runs", "show", "latest", "--json")
    reasons = json.loads(out)["reasons"]
    assert "deps: fakedep 1.0 → 1.1" in reasons.values()


@step
def source_of(n: int) -> list:
    return list(range(n))


@step
def summed(items: list) -> int:
    return sum(items)


@pipeline
def tiny(n: int = 3):
    return summed(source_of(n))


def test_first_run_hit_forced_and_input_changes_in_process() -> None:
    first = tiny.run(n=3)
    second = tiny.run(n=3)
    client = Client()
    assert client.explain(f"{first.id}:summed").reason == "first run"
    hit = client.explain(f"{second.id}:summed")
    assert hit.decision == "hit" and hit.source is not None and hit.source.id == first.steps["summed"].step_run_id
    forced = tiny.run(n=3, cache=False)
    e = client.explain(f"{forced.id}:summed")
    assert e.decision == "forced" and e.reason == "forced (cache=False)"
    third = tiny.run(n=4)
    e = client.explain(f"{third.id}:summed")
    (change,) = e.changes
    assert change.component == "inputs" and change.name == "items"
    assert change.produced_by is not None and change.produced_by["new"] is not None
    assert change.produced_by["new"].id == third.steps["source_of"].step_run_id
    assert e.reason == f"inputs: items (from source_of {third.steps['source_of'].step_run_id[:8]}) changed"
    assert client.explain(f"{third.id}:source_of").reason == "params: n 3 → 4"
    # every id form resolves to the same step run
    sid = third.steps["summed"].step_run_id
    for ref in (sid, sid[:10], f"{third.id}:summed", "latest:summed", f"{third.id[:8]}:summed"):
        assert client.resolve_step_run(ref) == sid
    assert client.resolve_step_run("latest~1:summed") == forced.steps["summed"].step_run_id
    assert client.run("latest~3")["id"] == first.id and client.step_runs(first.id)[0]["invocation"] == "source_of"


def test_unknown_and_ambiguous_ids_are_one_line_errors() -> None:
    for _ in range(9):  # 18 step runs: two share their first hex digit
        tiny.run(n=5)
    client = Client()
    with pytest.raises(RunNotFound, match="no step run matches 'ffffffff'.*isthmus runs show RUN"):
        client.resolve_step_run("ffffffff")
    with pytest.raises(RunNotFound, match="has no step 'nope'.*its steps: source_of, summed"):
        client.resolve_step_run("latest:nope")
    with pytest.raises(
        RunNotFound, match="'latest' is a pipeline run; name one of its steps: RUN:STEP, e.g. [0-9a-f]{8}:"
    ):
        client.resolve_step_run("latest")
    with pytest.raises(RunNotFound, match="only 9 run"):
        client.resolve_step_run("latest~12:summed")
    ids = [sr["id"] for run in client.runs() for sr in client.step_runs(run["id"])]
    shared = next(a[:1] for a in ids if sum(1 for b in ids if b.startswith(a[:1])) > 1)
    with pytest.raises(RunNotFound, match="is ambiguous"):
        client.resolve_step_run(shared)
    for args in (["why", "ffffffff"], ["why", "latest:nope"], ["why", shared], ["why", "x" * 500 + "\n<b>"]):
        code, out = invoke(*args)
        assert code == 1 and out.startswith("error: ") and len(out.strip().splitlines()) == 1, out
        assert "Traceback" not in out
    code, out = invoke("why", "x" * 500)
    assert "…" in out and len(out) < 300  # a hostile id is quoted, cut short


def test_a_cache_off_step_says_so() -> None:
    @step(cache=False)
    def uncached(x: int) -> int:
        return x

    uncached.run(1)
    e = Client().explain("latest:uncached")
    assert e.decision == "uncached" and "cache off" in e.reason
    assert json.loads(json.dumps(e.to_dict()))["step_run"]["step_name"] == "uncached"


POLICY_RUN = """
import json
from proj_policy import flow
run = flow.run()
print(json.dumps({"id": run.id, "hit": run.steps["configured"].cache_hit}))
"""


def _policy_module(tmp_path: Path, version: str) -> None:
    write_module(
        tmp_path,
        "proj_policy",
        f"""
        import os
        from isthmus import CachePolicy, pipeline, step

        @step(cache=CachePolicy(files=["conf/*.yaml"], env=["MODEL_MODE"], version="{version}"))
        def configured() -> int:
            return len(os.environ.get("MODEL_MODE", ""))

        @pipeline
        def flow():
            return configured()
        """,
    )


def test_why_names_the_declared_file_env_variable_and_version_that_changed_never_their_values(
    tmp_path: Path, isthmus_home: Path
) -> None:
    """Day by day in fresh processes: a declared file edited, a declared variable changed (its value is a
    credential-like string that must never appear), the policy's version bumped."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "model.yaml").write_text("depth: 3\n")
    _policy_module(tmp_path, "1")
    secret = "tok-4f8a9c0e1b2d"

    def day(**env: str) -> dict:
        return run_python(POLICY_RUN, env={"ISTHMUS_HOME": str(isthmus_home), **env}, cwd=tmp_path)

    assert day(MODEL_MODE="fast")["hit"] is False
    assert day(MODEL_MODE="fast")["hit"] is True
    (tmp_path / "conf" / "model.yaml").write_text("depth: 4\n")
    assert day(MODEL_MODE="fast")["hit"] is False
    client = Client()
    e = client.explain("latest:configured")
    assert e.reason == "declared files: conf/*.yaml contents changed", e
    assert [(c.component, c.name, c.new) for c in e.changes] == [("files", "conf/*.yaml", "contents changed")]

    assert day(MODEL_MODE=secret)["hit"] is False
    e = client.explain("latest:configured")
    assert e.reason == "declared env: MODEL_MODE value changed", e
    assert day()["hit"] is False  # unset now
    assert client.explain("latest:configured").reason == "declared env: MODEL_MODE unset"

    _policy_module(tmp_path, "2")
    assert day()["hit"] is False
    e = client.explain("latest:configured")
    assert [(c.component, c.name, c.old, c.new) for c in e.changes] == [("policy", "version", "1", "2")], e
    assert e.reason == "policy: version 1 → 2"

    code, out = invoke("why", "latest~2:configured")
    assert code == 0 and "declared env MODEL_MODE: value changed" in out
    code, out = invoke("why", "latest~2:configured", "--json")
    assert code == 0 and json.loads(out)["changes"][0]["component"] == "env"
    everything = out + "".join(
        json.dumps(client.metadata.get_step_run(sr["id"]), default=str) for sr in client.step_runs("latest~2")
    )
    assert secret not in everything and "fast" not in everything
    db = (isthmus_home / "isthmus.db").read_bytes()
    assert secret.encode() not in db
