"""``isthmus invalidate ARTIFACT --downstream``: a bad dataset drops the cache of everything derived from it
(records kept, marked), proven across fresh processes like days of a user's work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from isthmus import Client, config, pipeline, step
from isthmus.cli import app
from isthmus.cli.artifacts import INVALIDATE_SHOWN
from isthmus.store import schema as s
from tests.helpers import REPO, run_python, write_module

STEPS = """
from isthmus import pipeline, step

@step
def ingest(n: int) -> list:
    return list(range(n))

@step
def featurize(rows: list) -> list:
    return [r * 2 for r in rows]

@step
def train(features: list) -> int:
    return sum(features)

@step
def summary(n: int) -> str:
    return f"n={n}"

@pipeline
def flow(n: int = 5):
    return {"model": train(featurize(ingest(n))), "summary": summary(n)}
"""

RUN = """
import json
from proj_flow import flow
run = flow.run()
print(json.dumps({"id": run.id, "hits": {k: v.cache_hit for k, v in run.steps.items()}, "out": run.outputs}))
"""


def _cli(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ISTHMUS_HOME": str(home)}
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _cache_rows(client: Client) -> list[tuple[str, str]]:
    return sorted((r["cache_key"], r["step_run_id"]) for r in client.metadata.list_cache_entries())


def _marks(client: Client) -> dict[str, Any]:
    with client.metadata.engine.connect() as conn:
        rows = conn.execute(s.step_runs.select().where(s.step_runs.c.invalidated_at.is_not(None))).mappings().all()
    return {r["id"]: (r["invocation"], r["invalidated_reason"]) for r in rows}


def test_invalidate_recomputes_exactly_the_derived_steps_in_fresh_processes(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "proj_flow", STEPS)
    env = {"ISTHMUS_HOME": str(isthmus_home)}
    first = run_python(RUN, env=env, cwd=tmp_path)
    assert not any(first["hits"].values())
    second = run_python(RUN, env=env, cwd=tmp_path)
    assert all(second["hits"].values())
    client = Client()
    before = _cache_rows(client)
    assert len(before) == 4

    # a dry run lists what would be affected and changes nothing
    dry = _cli(isthmus_home, tmp_path, "invalidate", "ingest.output", "--downstream", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True and plan["marked"] == 0 and plan["cache_entries"] == 2
    assert sorted(sr["invocation"] for sr in plan["step_runs"]) == ["featurize", "featurize", "train", "train"]
    assert _cache_rows(client) == before and _marks(client) == {}
    text = _cli(isthmus_home, tmp_path, "invalidate", "ingest.output@latest", "--downstream", "--dry-run")
    assert text.returncode == 0 and "would drop 2 cache entries" in text.stdout and "dry run" in text.stdout
    assert _cache_rows(client) == before

    # the real thing: both runs' featurize and train (computed and hits) are marked, their entries dropped
    done = _cli(isthmus_home, tmp_path, "invalidate", "ingest.output", "--downstream", "--reason", "truncated CSV")
    assert done.returncode == 0, done.stderr
    assert "dropped 2 cache entries" in done.stdout and "marked 4 step run(s)" in done.stdout
    marks = _marks(client)
    assert sorted(inv for inv, _ in marks.values()) == ["featurize", "featurize", "train", "train"]
    ingest_hash = client.artifact("ingest.output").content_hash
    assert all(
        reason.startswith(f"derived from {ingest_hash} (ingest.output): truncated CSV") for _, reason in marks.values()
    )
    kept = _cache_rows(client)
    assert len(kept) == 2 and all(client.step_run(sid)["step_name"] in ("ingest", "summary") for _, sid in kept)

    # day three, a fresh process: exactly the derived steps compute again
    third = run_python(RUN, env=env, cwd=tmp_path)
    assert third["hits"] == {"ingest": True, "featurize": False, "train": False, "summary": True}
    assert third["out"] == first["out"]
    # and their new results are cached again: a later run is all hits
    fourth = run_python(RUN, env=env, cwd=tmp_path)
    assert all(fourth["hits"].values())
    assert set(_marks(client)) == set(marks)  # the new step runs are not marked

    # invalidating again marks only the new step runs; the old ones are listed as already invalidated
    again = client.invalidate("ingest.output")
    assert again.marked == 4 and sum(sr.already_invalidated for sr in again.step_runs) == 4


@step
def load(n: int) -> list:
    return list(range(n))


@step
def double(rows: list) -> list:
    return [r * 2 for r in rows]


@step
def add_up(rows: list) -> int:
    return sum(rows)


@pipeline
def chain(n: int = 3):
    return add_up(double(load(n)))


def test_a_marked_step_run_is_never_a_cache_hit_again() -> None:
    chain.run(n=3)
    client = Client()
    result = client.invalidate("load.output")
    assert [sr.step_name for sr in result.step_runs] == ["double", "add_up"]
    assert [sr.depth for sr in result.step_runs] == [1, 2]
    marked = client.step_run(result.step_runs[0].id)
    assert marked["invalidated_at"] is not None
    # a stale writer puts the entry back: it is still never used
    with client.metadata.engine.begin() as conn:
        conn.execute(
            s.cache_entries.insert().values(
                cache_key=marked["cache_key"], step_run_id=marked["id"], step_name="double", created_at=time.time()
            )
        )
    assert client.metadata.cache_candidates(marked["cache_key"], time.time()) == []
    again = chain.run(n=3)
    assert {k: v.cache_hit for k, v in again.steps.items()} == {"load": True, "double": False, "add_up": False}


def test_invalidate_lists_aliases_of_derived_artifacts_and_other_ids() -> None:
    chain.run(n=3)
    chain.run(n=4)
    client = Client()
    client.promote("add_up.output@production", "add_up.output~1")
    plan = client.invalidate("load.output~1", dry_run=True)  # the n=3 dataset
    assert plan.aliases == ["add_up.output@production"] and len(plan.step_runs) == 2
    assert client.invalidate("add_up.output").step_runs == []  # nothing derives from a final output


def test_invalidate_errors_are_one_line() -> None:
    chain.run(n=3)
    runner = CliRunner()
    for args, expected in [
        (["invalidate", "nope.output", "--downstream"], "no artifact named 'nope.output'"),
        (["invalidate", "load", "--downstream"], "no artifact named 'load' (did you mean 'load.output'?)"),
        (["invalidate", "load.output~7", "--downstream"], "load.output has 1 version(s)"),
        (["invalidate", "deadbeef", "--downstream"], "matches no artifact"),
        (["invalidate", "load.output"], "needs --downstream"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, args
        assert expected in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("hostile", ["load.output\n--downstream", "x" * 5000, "a@b@c", "~1"])
def test_hostile_ids_are_refused_in_one_line(hostile: str) -> None:
    chain.run(n=3)
    result = CliRunner().invoke(app, ["invalidate", hostile, "--downstream"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert len(result.output) < 400


def test_a_raw_dataset_feeding_every_run_is_listed_in_part_and_invalidated_in_full(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The downstream of a raw dataset is the whole store: the table shows the first rows and says how many
    there are (--json has every one); the invalidation itself covers all of them, each depth's 600 ids
    bound as one list (SQLite and PostgreSQL)."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_lineage_gc import fill

    monkeypatch.setenv("ISTHMUS_STORE_URL", store_url)
    config.reset()
    client = Client()
    raw, _newest = fill(client.metadata, 2400)  # 600 runs of 4 chained steps, each run's first step reads raw
    runner = CliRunner()
    text = runner.invoke(app, ["invalidate", raw, "--downstream", "--dry-run"], terminal_width=200)
    assert text.exit_code == 0, text.output
    assert "2400 derived step run(s)" in text.output and "would drop 2400 cache entries" in text.output
    assert text.output.count("computed") == INVALIDATE_SHOWN
    assert f"the first {INVALIDATE_SHOWN} of 2400 by depth and start; all of them with --json" in text.output
    listed = json.loads(runner.invoke(app, ["invalidate", raw, "--downstream", "--dry-run", "--json"]).output)
    assert len(listed["step_runs"]) == 2400 and listed["cache_entries"] == 2400 and listed["step_run_count"] == 2400
    assert [sum(1 for sr in listed["step_runs"] if sr["depth"] == d) for d in (1, 2, 3, 4)] == [600] * 4
    # the table reads only the rows it shows, sorted in the database: the same rows, in the same order
    shown = [line.split("│")[3].strip() for line in text.output.splitlines() if "computed" in line]
    assert shown == [sr["id"][:8] for sr in listed["step_runs"][:INVALIDATE_SHOWN]]
    for listing in (0, 1, 599, 600, 601, 1800, 5000):  # within a depth, at its end, across depths, beyond all
        part = client.invalidate(raw, dry_run=True, listing=listing)
        assert [sr.id for sr in part.step_runs] == [sr["id"] for sr in listed["step_runs"][:listing]], listing
        assert (part.step_run_count, part.cache_entries, len(part.derived_artifacts)) == (2400, 2400, 2400)
    done = client.invalidate(raw, listing=3)  # marks and drops every one, lists three
    assert (done.marked, done.cache_entries, len(done.derived_artifacts)) == (2400, 2400, 2400)
    assert done.step_run_count == 2400 and len(done.step_runs) == 3
    with client.metadata.engine.connect() as conn:
        unmarked = s.step_runs.select().where(s.step_runs.c.invalidated_at.is_(None))
        assert conn.execute(unmarked).first() is None
    with client.metadata.engine.connect() as conn:
        assert conn.execute(s.cache_entries.select()).first() is None
