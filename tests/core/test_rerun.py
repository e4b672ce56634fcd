"""``isthmus rerun``: a recorded run again, with its recorded parameters and the current code, recomputing
a step and everything downstream of it (or just that step), cached results reused upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from isthmus import Client
from isthmus.artifacts.refs import ArtifactRef
from isthmus.errors import ReplayError
from isthmus.store import schema
from tests.conftest import skip_or_fail
from tests.helpers import REPO, import_fresh, run_python, write_module

STEPS = """
from pathlib import Path
from isthmus import step

def note(name):  # the log's path is not module state: a Path counts by what is at it
    with Path(__file__).with_name("calls.log").open("a") as f:
        f.write(name + "\\n")


@step
def list_genres(n: int) -> list[str]:
    note("list_genres")
    return [f"g{i}" for i in range(n)]


@step
def genre_stats(genre: str, scale: int) -> dict:
    note("genre_stats:" + genre)
    return {"genre": genre, "size": len(genre) * scale}


@step
def combine(stats: list) -> int:
    note("combine")
    return sum(s["size"] for s in stats)


@step
def report(total: int, label: str) -> str:
    note("report")
    return f"{label}={total}"
"""

FLOW = """
from isthmus import pipeline
from rr_steps import combine, genre_stats, list_genres, report


@pipeline
def movies(n: int = 3, label: str = "total", scale: int = 2):
    genres = list_genres(n)
    stats = genre_stats.partial(scale=scale).map(genre=genres)
    return report(combine(stats), label=label)
"""

RUN = """
import json
from rr_flow import movies
run = movies.run(n=3, label="sum")
print(json.dumps({"id": run.id, "out": run.outputs}))
"""


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {"ISTHMUS_HOME": str(home), **extra}


def isthmus_cli(*args: str, home: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m isthmus ARGS`` in a fresh process, with ``cwd`` importable."""
    full = {**os.environ, "ISTHMUS_HOME": str(home), **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join([str(cwd), str(REPO), (env or {}).get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120
    )


def _calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    calls = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


@pytest.fixture
def project(tmp_path: Path, isthmus_home: Path) -> str:
    """The fan-out pipeline written as a project and run once in a fresh process; the run's id."""
    write_module(tmp_path, "rr_steps", STEPS)
    write_module(tmp_path, "rr_flow", FLOW)
    first = run_python(RUN, env=_env(isthmus_home), cwd=tmp_path)
    assert first["out"] == "sum=12"
    assert sorted(_calls(tmp_path)) == sorted(
        ["list_genres", "genre_stats:g0", "genre_stats:g1", "genre_stats:g2", "combine", "report"]
    )
    return first["id"]


def _output(run_id: str, key: str | None = None) -> Any:
    """The loaded value of a recorded run's output (``key`` of a dict of outputs)."""
    client = Client()
    outputs = client.run(run_id)["outputs"]
    return client.artifacts.load(ArtifactRef.from_dict(outputs if key is None else outputs[key]))


def _rerun(tmp_path: Path, home: Path, *args: str) -> dict[str, Any]:
    proc = isthmus_cli("rerun", *args, "--json", home=home, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_rerun_from_a_mapped_step_recomputes_it_and_everything_downstream(
    project: str, tmp_path: Path, isthmus_home: Path
) -> None:
    out = _rerun(tmp_path, isthmus_home, project[:8], "--from", "genre_stats")
    computed = {"genre_stats[0]", "genre_stats[1]", "genre_stats[2]", "combine", "report"}
    assert set(out["computed"]) == computed and out["hits"] == ["list_genres"]
    assert out["forced"] == ["genre_stats", "combine", "report"] and out["rerun_of"] == project
    assert sorted(_calls(tmp_path)) == sorted(
        ["genre_stats:g0", "genre_stats:g1", "genre_stats:g2", "combine", "report"]
    )
    client = Client()
    new = client.run(out["run_id"])
    assert new["params"] == {"n": 3, "label": "sum", "scale": 2} and new["context"]["rerun_of"] == project
    assert new["context"]["pipeline_path"] == "rr_flow:movies" and new["outputs"] is not None
    forced = {sr["invocation"]: sr["context"].get("forced", False) for sr in client.step_runs(out["run_id"])}
    assert forced == {"list_genres": False, **dict.fromkeys(computed, True)}


def test_rerun_only_recomputes_just_that_step_and_upstream_edits_still_count(
    project: str, tmp_path: Path, isthmus_home: Path
) -> None:
    out = _rerun(tmp_path, isthmus_home, project, "--only", "combine")
    assert out["computed"] == ["combine"] and _calls(tmp_path) == ["combine"]
    # The next day the code of combine changes on disk: a rerun from report computes combine too
    # (its cached result no longer matches its code), and reuses everything else.
    source = (tmp_path / "rr_steps.py").read_text().replace('s["size"] for s', 's["size"] * 10 for s')
    (tmp_path / "rr_steps.py").write_text(source)
    out = _rerun(tmp_path, isthmus_home, "latest~1", "--from", "report")
    assert out["forced"] == ["report"] and out["rerun_of"] == project
    assert out["computed"] == ["combine", "report"] and _calls(tmp_path) == ["combine", "report"]
    assert _output(out["run_id"]) == "sum=120"


def test_rerun_of_a_run_that_does_not_record_its_pipeline(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "rr_steps", STEPS)
    write_module(tmp_path, "rr_flow", FLOW)
    import_fresh(tmp_path, "rr_steps")
    flow = import_fresh(tmp_path, "rr_flow")
    first = flow.movies.run(n=2)
    client = Client()
    meta = client.metadata
    with meta.engine.begin() as conn:  # as recorded before runs kept their pipeline's import path
        conn.execute(update(schema.pipeline_runs).where(schema.pipeline_runs.c.id == first.id).values(context={}))
    with pytest.raises(
        ReplayError, match=r"does not record where pipeline 'movies' is defined.*--pipeline module:attr"
    ):
        client.rerun(first.id)
    proc = isthmus_cli("rerun", first.id, home=isthmus_home, cwd=tmp_path)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and "--pipeline" in proc.stderr
    out = client.rerun(first.id, pipeline="rr_flow:movies", from_step="combine")
    assert out.computed == ["combine", "report"] and out.pipeline_path == "rr_flow:movies"
    for bad, message in [
        ("rr_flow:nope", "has no attribute 'nope'"),
        ("rr_steps:combine", "is a Step, not a @pipeline"),
        ("no_such_module_xyz:flow", "cannot import module 'no_such_module_xyz'"),
        ("rr_flow", "must look like 'package.module:attr'"),
    ]:
        with pytest.raises(ReplayError, match=message):
            client.rerun(first.id, pipeline=bad)


def test_rerun_refuses_unknown_steps_ids_and_parameters(project: str, tmp_path: Path, isthmus_home: Path) -> None:
    import_fresh(tmp_path, "rr_steps")  # this project's modules, not another test's
    import_fresh(tmp_path, "rr_flow")
    try:
        client = Client()
        with pytest.raises(
            ReplayError, match=r"--from 'nope' is not a step of pipeline 'movies'; its steps: list_genres"
        ):
            client.rerun(project, from_step="nope")
        with pytest.raises(ReplayError, match=r"items of mapped step 'genre_stats' are recomputed together"):
            client.rerun(project, from_step="genre_stats[1]")
        with pytest.raises(ReplayError, match="not both"):
            client.rerun(project, from_step="combine", only="combine")
        with pytest.raises(ReplayError, match=r"takes no parameter\(s\) bogus"):
            client.rerun(project, params={"bogus": 1})
        meta = client.metadata
        with meta.engine.begin() as conn:  # as an orchestrator that records no parameters leaves it
            conn.execute(update(schema.pipeline_runs).where(schema.pipeline_runs.c.id == project).values(params={}))
        with pytest.raises(ReplayError, match=r"needs parameter\(s\) n, label, scale, which the run did not record"):
            client.rerun(project)
        out = client.rerun(project, params={"n": 3, "label": "sum", "scale": 2}, from_step="report")
        assert out.computed == ["report"] and _output(out.run_id) == "sum=12" and _calls(tmp_path) == ["report"]
    finally:
        sys.path.remove(str(tmp_path))
    for args, message in [
        (("nosuchrun",), "no pipeline run matches 'nosuchrun'"),
        (("latest~7",), "latest~7"),
        ((project, "--param", "broken"), "--param 'broken' must look like NAME=VALUE"),
    ]:
        proc = isthmus_cli("rerun", *args, home=isthmus_home, cwd=tmp_path)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert _calls(tmp_path) == []


SECRET_FLOW = """
from isthmus import pipeline, step


@step
def fetch(url: str, api_token: str) -> int:
    return len(url) + len(api_token)


@pipeline
def with_secret(api_token: str, url: str = "https://example.org"):
    return fetch(url, api_token)
"""


def test_secret_parameters_are_refused_until_given_again(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "rr_secret", SECRET_FLOW)
    first = import_fresh(tmp_path, "rr_secret").with_secret.run(api_token="s3cr3t-token-value")
    client = Client()
    assert client.run(first.id)["params"]["api_token"] == "***"
    with pytest.raises(ReplayError, match=r"api_token were recorded as \*\*\* \(a secret\).*--param api_token=VALUE"):
        client.rerun(first.id)
    proc = isthmus_cli("rerun", first.id, home=isthmus_home, cwd=tmp_path)
    assert proc.returncode == 1 and "ISTHMUS_PARAM_API_TOKEN" in proc.stderr and "s3cr3t" not in proc.stderr
    proc = isthmus_cli(
        "rerun", first.id, "--param", "api_token=s3cr3t-token-value", "--json", home=isthmus_home, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hits"] == ["fetch"] and "s3cr3t" not in proc.stdout
    env = {"ISTHMUS_PARAM_API_TOKEN": "another-token-value"}
    proc = isthmus_cli("rerun", first.id, "--json", home=isthmus_home, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["computed"] == ["fetch"] and client.run(out["run_id"])["params"]["api_token"] == "***"


def test_rerun_and_reproduce_of_runs_recorded_by_a_local_flyte_workflow(isthmus_home: Path) -> None:
    try:
        import flytekitplugins.isthmus  # noqa: F401 - the adapter the workflow is built by
    except ImportError as exc:
        skip_or_fail(f"flytekit plugin: {exc}")
    from tests.flyte import flyte_steps as fs

    fs.small_pipeline.to_flyte_workflow()(n=4, label="total")
    client = Client()
    flyte_run = client.runs(orchestrator="flyte")[0]
    assert "pipeline_path" not in flyte_run["context"]  # found through the modules of its steps
    out = client.rerun(flyte_run["id"], from_step="total")
    assert out.pipeline_path == "tests.flyte.flyte_steps:small_pipeline"
    assert set(out.forced) == {"total", "describe"} and set(out.computed) == {"total", "describe"}
    assert set(out.hits) == {"make_numbers", "stats"}
    new = client.run(out.run_id)
    assert new["orchestrator"] == "local" and new["params"] == {"n": 4, "label": "total"}
    hit = {sr["invocation"]: sr for sr in client.step_runs(out.run_id)}["make_numbers"]
    source = client.step_run(hit["source_step_run_id"])
    assert source["orchestrator"] == "flyte"
    assert _output(out.run_id, "text") == "total=6"
    again = client.reproduce(f"{flyte_run['id']}:total")  # a Flyte step run, called here with its inputs
    assert again.value == 6 and again.reproduced and list(again.inputs) == ["numbers"]
