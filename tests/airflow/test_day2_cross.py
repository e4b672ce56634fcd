"""The day-2 commands on runs recorded by Airflow: ``why``, ``diff --last``, ``lineage``, ``artifacts
alias|history`` and ``rollback``, ``invalidate --downstream --dry-run``, ``rerun --from`` and ``reproduce``,
through the command line (``--json`` parsed, and the text people read).

The pipeline is ``movie_stats`` built with ``to_airflow_dag`` and run under ``dag.test()`` twice, once per
module (each costs seconds): with ``top=2``, then ``top=3`` (one more genre: ``list_genres``,
``genre_stats[2]`` and ``join_stats`` compute, the rest are hits on the first run). The tests read that
store; the ones that change it (aliases, a local rerun) come last and change nothing the others read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from isthmus import Client, config
from isthmus.artifacts.refs import ArtifactRef
from isthmus.cli import app
from isthmus.context import derived_run_id
from tests.airflow.conftest import load_dag, put_dag
from tests.airflow.dag_sources import FANOUT_DAGS

DAG_ID = "isthmus_movie_stats"
GENRES = ["genre_stats[0]", "genre_stats[1]", "genre_stats[2]"]


@dataclass(frozen=True)
class Recorded:
    """The two Airflow runs: their isthmus run ids, and the file the steps note their calls in."""

    home: Path
    first: str
    second: str
    calls: Path

    def taken(self) -> list[str]:
        """The step calls noted since the last look, sorted."""
        noted = sorted(self.calls.read_text().split()) if self.calls.exists() else []
        self.calls.unlink(missing_ok=True)
        return noted


@pytest.fixture(scope="module")
def recorded(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """``dag.test()`` of movie_stats with top=2, then top=3, into a store of this module."""
    from isthmus_airflow.plugins.run_closer import flush

    base = tmp_path_factory.mktemp("day2-airflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ISTHMUS_HOME", str(base / "isthmus-home"))
        mp.setenv("ISTHMUS_TEST_CALLS", str(base / "calls.log"))
        config.reset()
        dag = load_dag(put_dag("isthmus_fanout_dags", FANOUT_DAGS), DAG_ID)
        ids = []
        for top in (2, 3):  # both switches given: dag.test() keeps a run's conf in the DAG's Params
            dr = dag.test(run_conf={"top": top, "isthmus_cache": True, "isthmus_recompute": []})
            flush(30)
            assert dr.state == "success", {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}
            ids.append(derived_run_id("airflow", DAG_ID, dr.run_id))
        rec = Recorded(base / "isthmus-home", ids[0], ids[1], base / "calls.log")
        rec.taken()
        yield rec
    config.reset()


@pytest.fixture
def isthmus_home(recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This module's tests all read the store the two DAG runs wrote (instead of a fresh one each)."""
    monkeypatch.setenv("ISTHMUS_HOME", str(recorded.home))
    monkeypatch.setenv("ISTHMUS_TEST_CALLS", str(recorded.calls))
    for var in ("ISTHMUS_STORE_URL", "ISTHMUS_ARTIFACT_ROOT", "ISTHMUS_VERIFY", "ISTHMUS_LEASE_TTL"):
        monkeypatch.delenv(var, raising=False)
    config.reset()
    yield recorded.home
    config.reset()


def cli(*args: str) -> str:
    """``isthmus ARGS`` in this process; its output (exit code 0 required)."""
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 0, result.output
    return result.output


def cli_json(*args: str) -> Any:
    return json.loads(cli(*args, "--json"))


def _step_runs(run_id: str) -> dict[str, dict[str, Any]]:
    return {sr["invocation"]: dict(sr) for sr in Client().step_runs(run_id)}


def test_the_two_dag_runs_are_recorded_as_airflow_runs_of_the_pipeline(recorded: Recorded) -> None:
    runs = cli_json("runs", "list", "--orchestrator", "airflow")
    assert [r["id"] for r in runs] == [recorded.second, recorded.first]
    assert {r["pipeline"] for r in runs} == {"movie_stats"}
    second = _step_runs(recorded.second)
    assert sorted(i for i, s in second.items() if not s["cache_hit"]) == ["genre_stats[2]", "join_stats", "list_genres"]


def test_why_names_the_parameter_change_and_the_airflow_run_a_hit_came_from(recorded: Recorded) -> None:
    computed = cli_json("why", f"{recorded.second}:list_genres")
    assert computed["decision"] == "computed" and computed["step_run"]["orchestrator"] == "airflow"
    assert computed["compared_with"]["pipeline_run_id"] == recorded.first
    assert [(c["component"], c["name"], c["old"], c["new"]) for c in computed["changes"]] == [("params", "top", 2, 3)]
    assert computed["reason"] == "params: top 2 → 3"
    assert "top 2 → 3" in cli("why", f"{recorded.second[:8]}:list_genres")  # a run id prefix works too

    first_pick = _step_runs(recorded.first)["pick_best"]
    hit = cli_json("why", f"{recorded.second}:pick_best")
    assert hit["decision"] == "hit" and hit["source"]["id"] == first_pick["id"]
    assert hit["source"]["orchestrator"] == "airflow" and hit["source"]["pipeline_run_id"] == recorded.first
    assert hit["reason"].startswith(f"hit: from {first_pick['id'][:8]} (airflow run {recorded.first[:8]}")
    assert f"airflow run {recorded.first[:8]}" in cli("why", f"{recorded.second}:pick_best")


def test_diff_last_separates_what_changed_from_how_it_ran(recorded: Recorded) -> None:
    d = cli_json("diff", "--last", "movie_stats")
    assert (d["run_a"]["id"], d["run_b"]["id"]) == (recorded.first, recorded.second)
    assert d["params"] == {"top": [2, 3]}  # the DAG run switches were the same both times: no change
    assert set(d["steps"]) == {"list_genres", "genre_stats[2]", "join_stats"}
    assert d["steps"]["list_genres"]["output_values"]["output"] == [
        ["action", "animation"],
        ["action", "animation", "horror"],
    ]
    assert d["unchanged_steps"] == ["genre_stats[0]", "genre_stats[1]", "pick_best", "train", "train_2"]
    ran = d["ran"]["pick_best"]
    assert (ran["a"]["cache"], ran["b"]["cache"]) == ("computed", "hit")
    assert ran["a"]["orchestrator"] == ran["b"]["orchestrator"] == "airflow"
    assert ran["b"]["source_step_run_id"] == ran["a"]["step_run_id"]

    changed, _, how = cli("diff", "--last", "movie_stats").partition("what changed")[2].partition("How it ran")
    assert "top" in changed and "horror" in changed
    assert "cache" not in changed and "hit" not in changed and "airflow" not in changed  # how it ran: below
    assert "hit from" in how and "computed" in how


def test_reproduce_calls_an_airflow_step_run_with_its_recorded_inputs(recorded: Recorded) -> None:
    step_run = _step_runs(recorded.second)["genre_stats[2]"]
    out = cli_json("reproduce", f"{recorded.second}:genre_stats[2]")
    assert out["step_run_id"] == step_run["id"] and out["reproduced"] and out["raised"] is None
    assert out["inputs"] == {"genre": step_run["inputs"]["genre"]["content_hash"]}
    assert out["recorded_status"] == "COMPLETED" and out["differences"] == []  # same python, code, packages
    text = cli("reproduce", f"{recorded.second}:genre_stats[2]")
    assert "returned {'genre': 'horror', 'n': 1, 'mean': 3.0}" in text
    client = Client()
    recorded_output = client.artifacts.load(ArtifactRef.from_dict(step_run["outputs"]["output"]))
    assert recorded_output == client.reproduce(step_run["id"]).value == {"genre": "horror", "n": 1, "mean": 3.0}
    assert recorded.taken() == ["genre_stats:horror"] * 3  # called here, by each reproduce


def _cache_entries() -> int:
    return len(cli_json("cache", "list", "--limit", "1000"))


def test_invalidate_dry_run_lists_the_airflow_step_runs_derived_and_changes_nothing(recorded: Recorded) -> None:
    # train_2's 0.9, which only pick_best took (train's 0.99 is also the best score join_stats takes)
    lower = _step_runs(recorded.first)["train_2"]["outputs"]["output"]["content_hash"]
    before = _cache_entries()
    out = cli_json("invalidate", lower, "--downstream", "--dry-run")
    assert out["dry_run"] and out["marked"] == 0 and out["name"] == "train.output"
    affected = {(s["invocation"], s["pipeline_run_id"], s["depth"]) for s in out["step_runs"]}
    assert affected == {
        (step, run, depth)
        for step, depth in (("pick_best", 1), ("join_stats", 2))
        for run in (recorded.first, recorded.second)
    }
    assert {s["orchestrator"] for s in out["step_runs"]} == {"airflow"}
    assert not any(s["already_invalidated"] for s in out["step_runs"])
    assert out["cache_entries"] == 3  # pick_best's (its second run was a hit on it) and both join_stats'
    assert len(out["derived_artifacts"]) == 3
    assert "would drop 3 cache entries" in cli("invalidate", lower[:16], "--downstream", "--dry-run")
    assert _cache_entries() == before  # a dry run changes nothing
    assert cli_json("invalidate", lower, "--downstream", "--dry-run") == out


# -- the tests below add to the store (aliases, a local run); the ones above do not read what they add --


def test_alias_rollback_and_history_of_an_airflow_artifact(recorded: Recorded) -> None:
    v1 = _step_runs(recorded.first)["list_genres"]["outputs"]["output"]["content_hash"]
    v2 = _step_runs(recorded.second)["list_genres"]["outputs"]["output"]["content_hash"]
    assert v1 != v2
    alias = "list_genres.output@production"
    first = cli_json("artifacts", "alias", alias, "list_genres.output~1", "--reason", "top 2 checked")
    assert (first["from_hash"], first["to_hash"], first["via"]) == (None, v1, "cli")
    assert cli_json("artifacts", "alias", alias, "list_genres.output")["to_hash"] == v2  # the newest: run 2's
    back = cli_json("rollback", alias, "--reason", "horror is not ready")
    assert (back["action"], back["from_hash"], back["to_hash"]) == ("rollback", v2, v1)
    history = cli_json("artifacts", "history", alias)
    assert [(h["action"], h["to_hash"], h["reason"]) for h in history] == [
        ("set", v1, "top 2 checked"),
        ("set", v2, None),
        ("rollback", v1, "horror is not ready"),
    ]
    assert "horror is not ready" in cli("artifacts", "history", alias)
    # another step's artifact (an Airflow one) is refused, in one line, without --force
    result = CliRunner().invoke(app, ["artifacts", "alias", alias, "pick_best.output"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert Client().artifact(alias).content_hash == v1


def test_rerun_of_the_airflow_run_from_a_step_and_lineage_across_orchestrators(recorded: Recorded) -> None:
    best = _step_runs(recorded.first)["pick_best"]["outputs"]["output"]["content_hash"]
    before = cli_json("lineage", best, "--downstream")
    assert before["orchestrators"] == ["airflow"]
    up = cli_json("lineage", best, "--upstream")
    # pick_best returned train's 0.99: one content-addressed artifact, first made by run 1's train
    assert up["orchestrators"] == ["airflow"]
    assert [(s["invocation"], s["pipeline_run_id"]) for s in up["step_runs"]] == [("train", recorded.first)]

    out = cli_json("rerun", recorded.second[:8], "--from", "genre_stats")
    assert out["rerun_of"] == recorded.second and out["pipeline_path"] == "tests.airflow.fanout_steps:movie_stats"
    assert out["forced"] == ["genre_stats", "join_stats"] and out["status"] == "COMPLETED"
    assert out["computed"] == [*GENRES, "join_stats"]
    assert sorted(out["hits"]) == ["list_genres", "pick_best", "train", "train_2"]
    assert recorded.taken() == ["genre_stats:action", "genre_stats:animation", "genre_stats:horror", "join_stats"]
    client = Client()
    new = client.run(out["run_id"])
    assert new["orchestrator"] == "local" and new["context"]["rerun_of"] == recorded.second
    assert set(new["params"]) == {"csv", "top"} and new["params"]["top"] == 3  # not the DAG run switches
    steps = _step_runs(out["run_id"])
    for inv in out["hits"]:  # reused what Airflow computed
        assert client.step_run(steps[inv]["source_step_run_id"])["orchestrator"] == "airflow", inv
    assert client.artifacts.load(ArtifactRef.from_dict(new["outputs"])) == {
        "genres": ["action", "animation", "horror"],
        "best": 0.99,
    }

    # the local join_stats consumed the Airflow-computed best score
    after = cli_json("lineage", best, "--downstream")
    assert after["orchestrators"] == ["airflow", "local"]
    local_join = [s for s in after["step_runs"] if s["orchestrator"] == "local" and s["step_name"] == "join_stats"]
    assert [s["pipeline_run_id"] for s in local_join] == [out["run_id"]]
    assert "airflow" in cli("lineage", best, "--downstream") and "local" in cli("lineage", best, "--downstream")
