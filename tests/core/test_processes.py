"""Behaviour across processes: code edits, dependency upgrades, crashes, concurrency, remote entrypoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, as_utc, run_python, versions_from_links, versions_kept, write_module

RUN_PIPELINE = """
import json
from proj_steps import flow
run = flow.run()
print(json.dumps({"hits": {k: v.cache_hit for k, v in run.steps.items()}, "out": run.outputs}))
"""


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {"ISTHMUS_HOME": str(home), **extra}


def test_editing_a_helper_reruns_only_the_steps_that_reach_it(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "proj_helpers", "def scale(x):\n    return x * 2\n\ndef shift(x):\n    return x + 1\n")
    write_module(
        tmp_path,
        "proj_steps",
        """
        from isthmus import pipeline, step
        from proj_helpers import scale, shift

        @step
        def a(x: int) -> int:
            return scale(x)

        @step
        def b(x: int) -> int:
            return shift(x)

        @step
        def c(x: int) -> int:
            return x * 10

        @pipeline
        def flow():
            return {"a": a(1), "b": b(1), "c": c(1)}
        """,
    )
    env = _env(isthmus_home)
    first = run_python(RUN_PIPELINE, env=env, cwd=tmp_path)
    assert first["hits"] == {"a": False, "b": False, "c": False}
    assert run_python(RUN_PIPELINE, env=env, cwd=tmp_path)["hits"] == {"a": True, "b": True, "c": True}
    write_module(tmp_path, "proj_helpers", "def scale(x):\n    return x * 3\n\ndef shift(x):\n    return x + 1\n")
    third = run_python(RUN_PIPELINE, env=env, cwd=tmp_path)
    assert third["hits"] == {"a": False, "b": True, "c": True}
    assert third["out"] == {"a": 3, "b": 2, "c": 10}

    # the diff names the helper and shows its source change
    from click.testing import CliRunner

    from isthmus.cli import app

    result = CliRunner().invoke(app, ["diff", "latest~1", "latest", "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert set(d["steps"]) == {"a"} and d["unchanged_steps"] == ["b", "c"]
    code = d["steps"]["a"]["code"]
    assert list(code) == ["scale"]
    assert "-    return x * 2" in code["scale"] and "+    return x * 3" in code["scale"]
    assert d["steps"]["a"]["outputs"]["output"][0] != d["steps"]["a"]["outputs"]["output"][1]


def _fake_dist(site: Path, version: str) -> None:
    pkg = site / "fakedep"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("VALUE = 1\n")
    for old in site.glob("fakedep-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    info = site / f"fakedep-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakedep\nVersion: {version}\n")
    (info / "top_level.txt").write_text("fakedep\n")
    (info / "RECORD").write_text("")


def test_upgrading_a_dependency_invalidates_steps_that_import_it(tmp_path: Path, isthmus_home: Path) -> None:
    site = tmp_path / "site"
    _fake_dist(site, "1.0")
    write_module(
        tmp_path,
        "proj_steps",
        """
        from isthmus import pipeline, step
        import proj_uses_dep

        @step
        def plain(x: int) -> int:
            return x + 1

        @pipeline
        def flow():
            return {"dep": proj_uses_dep.uses_dep(1), "plain": plain(1)}
        """,
    )
    write_module(
        tmp_path,
        "proj_uses_dep",
        """
        import fakedep
        from isthmus import step

        @step
        def uses_dep(x: int) -> int:
            return x * fakedep.VALUE
        """,
    )
    env = _env(isthmus_home, PYTHONPATH=str(site))
    assert run_python(RUN_PIPELINE, env=env, cwd=tmp_path)["hits"] == {"uses_dep": False, "plain": False}
    assert run_python(RUN_PIPELINE, env=env, cwd=tmp_path)["hits"] == {"uses_dep": True, "plain": True}
    _fake_dist(site, "1.1")
    assert run_python(RUN_PIPELINE, env=env, cwd=tmp_path)["hits"] == {"uses_dep": False, "plain": True}

    from isthmus import defaults

    meta = defaults.metadata_store()
    steps = {s["invocation"]: s for s in meta.step_runs_of(meta.resolve_run_id("latest"))}
    assert steps["uses_dep"]["deps"]["fakedep"] == "1.1"
    from isthmus.diff import diff_runs

    d = diff_runs(meta, "latest~1", "latest")
    assert d["steps"]["uses_dep"]["dependencies"] == {"fakedep": ["1.0", "1.1"]}


CRASHING = """
import os, sys, time
from isthmus import register_materializer, step, pipeline
from isthmus.artifacts.materializers import Materializer

class Big:
    pass

class SlowMaterializer(Materializer):
    name = "slow-test"
    def can_handle(self, obj):
        return isinstance(obj, Big)
    def save(self, obj, path):
        with open(path, "wb") as fh:
            fh.write(b"x" * 1000)
            fh.flush()
            open(os.environ["MARKER"], "w").close()
            time.sleep(60)
            fh.write(b"y" * 1000)
    def load(self, path, python_type):
        return Big()

register_materializer(SlowMaterializer, types=(Big,))

@step
def first() -> int:
    return 41

@step
def produce(x: int) -> Big:
    return Big()

@pipeline
def flow():
    return produce(first())

flow.run()
"""


def test_kill_9_mid_write_leaves_no_cache_entry_and_no_visible_artifact(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "proj_crash", CRASHING)
    marker = tmp_path / "writing"
    env = {**os.environ, "ISTHMUS_HOME": str(isthmus_home), "MARKER": str(marker), "ISTHMUS_LEASE_TTL": "2"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    proc = subprocess.Popen([sys.executable, "-c", "import proj_crash"], env=env, cwd=tmp_path)
    deadline = time.time() + 60
    while not marker.exists():
        assert proc.poll() is None, "the step process ended before writing"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    from isthmus import defaults

    meta = defaults.metadata_store()
    arts = defaults.artifact_store()
    assert meta.list_cache_entries(step_name="produce") == []
    assert len(meta.list_cache_entries(step_name="first")) == 1
    objects = [p for p in Path(arts.root, "objects").rglob("*") if p.is_file()]
    assert len(objects) == 1  # only first()'s output; the partial write is not visible
    assert objects[0].read_bytes() == b"41"
    partial = list(Path(arts.root, ".tmp").iterdir())
    assert len(partial) == 1 and partial[0].stat().st_size == 1000
    runs = meta.step_runs_of(meta.resolve_run_id("latest"))
    assert {s["invocation"]: s["status"] for s in runs} == {"first": "COMPLETED", "produce": "RUNNING"}
    # the crashed holder's lease expires: a new run computes the step instead of waiting forever
    assert meta.lease_holder(runs[1]["cache_key"]) is not None
    time.sleep(2.1)
    from isthmus.cache_admin import prune

    assert prune(meta, arts, grace=0)["tmp"] == 1
    assert meta.acquire_lease(runs[1]["cache_key"], "someone-else", 5)


CONCURRENT = """
import json, os, time
from isthmus import step
from isthmus.runner import run_step

@step
def slow_square(x: int) -> int:
    with open(os.environ["COUNTER"], "a") as fh:
        fh.write("computed\\n")
    time.sleep(1.5)
    return x * x

r = run_step(slow_square, {"x": 12})
print(json.dumps({"hit": r.cache_hit, "value": r.value, "hash": r.outputs["output"].content_hash}))
"""


def test_eight_concurrent_identical_steps_compute_once(tmp_path: Path, isthmus_home: Path) -> None:
    counter = tmp_path / "counter"
    script = tmp_path / "conc.py"
    script.write_text(CONCURRENT)
    env = {**os.environ, "ISTHMUS_HOME": str(isthmus_home), "COUNTER": str(counter)}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    # create the schema once so the 8 processes race on the step, not on start-up
    from isthmus import defaults

    defaults.metadata_store()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "database is locked" not in err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert counter.read_text().count("computed") == 1
    assert sum(not r["hit"] for r in results) == 1
    assert {r["value"] for r in results} == {144}
    assert len({r["hash"] for r in results}) == 1


def test_run_step_entrypoint_as_a_subprocess(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(
        tmp_path,
        "proj_remote",
        """
        import pandas as pd
        from isthmus import step

        @step
        def summarize(df: pd.DataFrame, column: str = "y") -> dict:
            return {"sum": float(df[column].sum()), "rows": len(df)}
        """,
    )
    import pandas as pd

    from isthmus import defaults

    ref = defaults.artifact_store().save(pd.DataFrame({"y": [1.0, 2.0, 3.5]}), step_name="upstream")
    manifest = tmp_path / "out" / "manifest.json"
    env = {**os.environ, "ISTHMUS_HOME": str(isthmus_home), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    ctx = {"orchestrator": "slurm", "invocation": "summarize", "native": {"slurm_job_id": "4242"}}
    cmd = [
        sys.executable, "-m", "isthmus", "run-step", "--step", "proj_remote:summarize",
        "--inputs", json.dumps({"df": ref.to_dict()}), "--params", json.dumps({"column": "y"}),
        "--context", json.dumps(ctx), "--manifest", str(manifest),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(manifest.read_text())
    assert data["status"] == "COMPLETED" and data["cache_hit"] is False
    from isthmus import ArtifactRef

    out = ArtifactRef.from_dict(data["outputs"]["output"])
    assert defaults.artifact_store().load(out) == {"sum": 6.5, "rows": 3}
    sr = defaults.metadata_store().get_step_run(data["step_run_id"])
    assert sr["orchestrator"] == "slurm" and sr["context"]["native"] == {"slurm_job_id": "4242"}

    # a job started by hand for a pipeline run the store does not know yet: the run is created, not a
    # foreign-key error
    manifest_run = tmp_path / "out" / "manifest-run.json"
    ctx_run = json.dumps({**ctx, "pipeline_run_id": "hand-started-run", "pipeline_name": "adhoc"})
    cmd_run = [*cmd[: cmd.index("--context")], "--context", ctx_run, "--manifest", str(manifest_run)]
    proc = subprocess.run(cmd_run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data_run = json.loads(manifest_run.read_text())
    assert data_run["status"] == "COMPLETED", data_run["error"]
    assert defaults.metadata_store().get_step_run(data_run["step_run_id"])["pipeline_run_id"] == "hand-started-run"

    # a compute node without database access: rows travel in the manifest and are ingested here
    manifest2 = tmp_path / "out" / "manifest2.json"
    env2 = {**env, "ISTHMUS_STORE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/unreachable"}
    cmd2 = [*cmd[: cmd.index("--manifest")], "--manifest", str(manifest2), "--record", "manifest"]
    proc = subprocess.run(cmd2, env=env2, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data2 = json.loads(manifest2.read_text())
    assert data2["status"] == "COMPLETED" and data2["records"]["step_runs"]
    from isthmus.remote import ingest_manifest

    meta = defaults.metadata_store()
    assert ingest_manifest(meta, manifest2) > 0
    ingested = meta.get_step_run(data2["step_run_id"])
    assert ingested["status"] == "COMPLETED"
    # its output's version was last produced by the ingested step run (the same content as the first run's)
    key = (f"{ingested['step_name']}.output", data2["outputs"]["output"]["content_hash"])
    assert versions_kept(meta) == versions_from_links(meta)
    assert versions_kept(meta)[key][1] == as_utc(ingested["started_at"])
    assert ingest_manifest(meta, manifest2) == 0  # idempotent


def test_run_step_reports_a_bad_import_path(tmp_path: Path, isthmus_home: Path) -> None:
    env = {**os.environ, "ISTHMUS_HOME": str(isthmus_home), "PYTHONPATH": str(REPO)}
    manifest = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, "-m", "isthmus", "run-step", "--step", "no_such_module:f", "--manifest", str(manifest)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    data = json.loads(manifest.read_text())
    assert data["status"] == "FAILED" and "no_such_module" in data["error"] and "PYTHONPATH" in data["error"]


@pytest.mark.parametrize("where", ["main"])
def test_main_module_step_warns_for_remote(tmp_path: Path, where: str) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            from isthmus import step, NotImportableError
            @step
            def f(x: int) -> int:
                return x
            try:
                f.check_importable()
            except NotImportableError as exc:
                print(exc)
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert "__main__" in out.stdout and "python -m" in out.stdout
