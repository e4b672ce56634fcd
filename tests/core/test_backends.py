"""Whole pipelines and concurrent identical steps on both metadata stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import isthmus
from tests.helpers import REPO

PIPELINE = """
from isthmus import pipeline, step

@step
def make(n: int) -> list:
    return list(range(n))

@step
def total(xs: list) -> int:
    return sum(xs)

@pipeline
def flow(n: int = 5):
    return total(make(n))
"""

CONCURRENT = """
import json, os, time
from isthmus import step
from isthmus.runner import run_step

@step
def slow(x: int) -> int:
    with open(os.environ["COUNTER"], "a") as fh:
        fh.write("computed\\n")
    time.sleep(1.0)
    return x + 1

r = run_step(slow, {"x": 1})
print(json.dumps({"hit": r.cache_hit, "value": r.value}))
"""


def test_pipeline_runs_and_hits_on_each_store(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_STORE_URL", store_url)
    isthmus.config.reset()
    (tmp_path / "backend_flow.py").write_text(PIPELINE)
    monkeypatch.syspath_prepend(str(tmp_path))
    from backend_flow import flow

    first = flow.run(n=5)
    second = flow.run(n=5)
    assert first.outputs == second.outputs == 10
    assert [s.cache_hit for s in second.steps.values()] == [True, True]
    from isthmus import defaults

    meta = defaults.metadata_store()
    assert meta.dialect == store_url.split(":")[0].split("+")[0]
    assert [r["id"] for r in meta.list_runs()] == [second.id, first.id]

    # eight processes, one computation, on this store
    counter = tmp_path / "counter"
    script = tmp_path / "conc.py"
    script.write_text(CONCURRENT)
    env = {**os.environ, "ISTHMUS_STORE_URL": store_url, "COUNTER": str(counter), "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert counter.read_text().count("computed") == 1
    assert sorted(r["hit"] for r in results) == [False] + [True] * 7
    assert {r["value"] for r in results} == {2}
