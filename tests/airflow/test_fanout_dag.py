"""``Pipeline.to_airflow_dag`` with fan-out and fan-in: mapped steps become Airflow mapped tasks, one step
run per map index, with the cache keys of a local run (checked both ways across fresh processes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from isthmus.context import derived_run_id
from tests.airflow.conftest import load_dag, put_dag
from tests.airflow.dag_sources import FANOUT_DAGS
from tests.helpers import REPO, run_python

pytestmark = pytest.mark.usefixtures("airflow_db")

LOCAL = """
import json, sys
from tests.airflow import fanout_steps
pipeline = getattr(fanout_steps, sys.argv[1])
run = pipeline.run(**json.loads(sys.argv[2]))
print(json.dumps({
    "outputs": run.outputs,
    "steps": {k: {"hit": v.cache_hit, "key": v.cache_key, "id": v.step_run_id, "source": v.source_step_run_id}
              for k, v in run.steps.items()},
}))
"""

MOVIE_STEPS = ["genre_stats[0]", "genre_stats[1]", "join_stats", "list_genres", "pick_best", "train", "train_2"]


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the fan-out steps note their calls in (in this process and in the local runs)."""
    path = tmp_path / "calls.log"
    monkeypatch.setenv("ISTHMUS_TEST_CALLS", str(path))
    return path


def _taken(calls: Path) -> list[str]:
    """The step calls noted since the last look, sorted."""
    noted = sorted(calls.read_text().split()) if calls.exists() else []
    calls.unlink(missing_ok=True)
    return noted


def _dag(dag_id: str) -> Any:
    return load_dag(put_dag("isthmus_fanout_dags", FANOUT_DAGS), dag_id)


def _dag_test(dag: Any, conf: dict | None = None) -> tuple[Any, dict[str, dict]]:
    from isthmus import defaults
    from isthmus_airflow.plugins.run_closer import flush

    dr = dag.test(run_conf=conf) if conf else dag.test()
    flush(30)
    run_id = derived_run_id("airflow", dag.dag_id, dr.run_id)
    return dr, {s["invocation"]: s for s in defaults.metadata_store().step_runs_of(run_id)}


def _local(name: str, home: Path, calls: Path, **params: Any) -> dict[str, Any]:
    """Run the pipeline locally in a fresh process."""
    code = f"import sys; sys.argv[1:] = [{name!r}, {json.dumps(params)!r}]\n" + LOCAL
    return run_python(code, env={"ISTHMUS_HOME": str(home), "ISTHMUS_TEST_CALLS": str(calls)}, cwd=REPO)


def _output(step_run: dict, name: str = "output") -> Any:
    from isthmus import ArtifactRef, defaults

    return defaults.artifact_store().load(ArtifactRef.from_dict(step_run["outputs"][name]))


def _states(dr: Any) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}


def test_the_dag_maps_with_airflow_and_a_local_run_hits_all_of_it(isthmus_home: Path, calls: Path) -> None:
    """Airflow first: one task instance and one step run per genre; a local run in a fresh process is all
    hits on them, with the same keys and outputs. Then one more genre: only it, the list and the join run."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    dag = _dag("isthmus_movie_stats")
    assert isinstance(dag.get_task("genre_stats"), MappedOperator)  # Airflow's own mapping, no helper task
    assert sorted(dag.task_ids) == ["genre_stats", "join_stats", "list_genres", "pick_best", "train", "train_2"]

    dr, steps = _dag_test(dag)
    states = _states(dr)
    assert dr.state == "success", states
    assert sorted(k for k in states if k[0] == "genre_stats") == [("genre_stats", 0), ("genre_stats", 1)]
    assert sorted(steps) == MOVIE_STEPS
    assert not any(s["cache_hit"] for s in steps.values())
    assert [steps[f"genre_stats[{i}]"]["context"]["native"]["map_index"] for i in (0, 1)] == [0, 1]
    assert list(steps["join_stats"]["inputs"]) == ["stats[0]", "stats[1]", "best"]
    assert list(steps["pick_best"]["inputs"]) == ["scores[0]", "scores[1]"]
    assert _output(steps["join_stats"]) == {"genres": ["action", "animation"], "best": 0.99}
    assert _taken(calls) == sorted(
        ["list_genres", "genre_stats:action", "genre_stats:animation", "train:0.01", "train:0.1", "pick_best"]
        + ["join_stats"]
    )

    local = _local("movie_stats", isthmus_home, calls)
    assert local["outputs"] == {"genres": ["action", "animation"], "best": 0.99}
    assert sorted(local["steps"]) == MOVIE_STEPS
    for inv, s in local["steps"].items():
        assert s["hit"] and s["source"] == steps[inv]["id"] and s["key"] == steps[inv]["cache_key"], inv
    assert _taken(calls) == []

    # one more genre: only that item, the list it came from and the join are computed
    dr, more = _dag_test(dag, {"top": 3})
    assert dr.state == "success"
    assert sorted(inv for inv, s in more.items() if not s["cache_hit"]) == [
        "genre_stats[2]",
        "join_stats",
        "list_genres",
    ]
    assert _taken(calls) == ["genre_stats:horror", "join_stats", "list_genres"]
    assert more["genre_stats[0]"]["cache_key"] == steps["genre_stats[0]"]["cache_key"]


def test_a_local_run_makes_the_dag_all_cache_hits(isthmus_home: Path, calls: Path) -> None:
    local = _local("movie_stats", isthmus_home, calls, top=3)
    assert not any(s["hit"] for s in local["steps"].values())
    _taken(calls)
    dr, steps = _dag_test(_dag("isthmus_movie_stats"), {"top": 3})
    assert dr.state == "success"
    assert sorted(steps) == sorted(local["steps"])
    for inv, s in steps.items():
        assert s["cache_hit"] and s["source_step_run_id"] == local["steps"][inv]["id"], inv
        assert s["cache_key"] == local["steps"][inv]["key"], inv
    assert _taken(calls) == []
    assert _output(steps["join_stats"]) == local["outputs"]


def test_every_kind_of_mapped_argument_gives_the_local_results_and_keys(isthmus_home: Path, calls: Path) -> None:
    """Zipped arguments (outputs, outputs and literals), mapped results mapped again, a DAG param, literals,
    a list of outputs, a mapped step with two outputs, one output of a two-output step: a local run first,
    then the DAG is all hits with the local keys."""
    local = _local("every_map", isthmus_home, calls)
    dag = _dag("isthmus_every_map")
    dr, steps = _dag_test(dag)
    states = _states(dr)
    assert dr.state == "success", states
    assert sorted(steps) == sorted(local["steps"])
    misses = {inv: s["cache_key"] for inv, s in steps.items() if not s["cache_hit"]}
    assert misses == {}
    for inv, s in steps.items():
        assert s["cache_key"] == local["steps"][inv]["key"], inv
    # zip semantics, not a cross product: three map indexes for three pairs
    assert sorted(k for k in states if k[0] == "square_2") == [("square_2", i) for i in range(3)]
    assert set(steps["square_2[2]"]["inputs"]) == {"x", "offset"}  # an item zipped with a mapped result
    assert steps["square_3[2]"]["params"] == {"offset": 30}  # an item zipped with a literal
    assert _output(steps["total_11"]) == local["outputs"]["parts"]
    assert _output(steps["sizes"]) == local["outputs"]["sizes"] == [3, 1]

    # the same DAG with another list in its param: the param's items are mapped
    dr, again = _dag_test(dag, {"xs": [7]})
    assert dr.state == "success"
    assert sorted(inv for inv, s in again.items() if not s["cache_hit"]) == ["square_5[0]", "total_4"]
    assert _output(again["total_4"]) == 49


def test_an_empty_list_maps_to_nothing_and_the_join_gets_an_empty_list(isthmus_home: Path, calls: Path) -> None:
    local = _local("empty_map", isthmus_home / "local", calls)
    dr, steps = _dag_test(_dag("isthmus_empty_map"))
    states = _states(dr)
    assert dr.state == "success", states
    assert states[("square", -1)] == states[("square_2", -1)] == "skipped"  # Airflow: no map index to run
    assert sorted(steps) == sorted(local["steps"]) == ["numbers", "total", "total_2"]
    assert steps["total"]["params"] == steps["total_2"]["params"] == {"values": []}
    assert _output(steps["total"]) == _output(steps["total_2"]) == 0
    for inv in ("total", "total_2"):
        assert steps[inv]["cache_key"] == local["steps"][inv]["key"]


def test_zipped_lists_of_different_lengths_and_a_param_that_is_no_list_fail_by_name(
    isthmus_home: Path, capfd: pytest.CaptureFixture
) -> None:
    """A local run refuses both before any step runs; the DAG fails the map index or the items task with the
    reason, and never runs a map silently cut to the shorter list."""
    dag = _dag("isthmus_uneven_map")
    dr, steps = _dag_test(dag, {"xs": [1]})
    states = _states(dr)
    assert dr.state == "failed"
    assert states[("square", 2)] == "failed" and "square[2]" not in steps  # the item the shorter list lacks
    assert states[("total", -1)] == "upstream_failed"
    out = "".join(capfd.readouterr())
    assert "step 'square': map() lists must have the same length, but ['x'] have no item 2" in out

    dr, steps = _dag_test(dag, {"xs": "not a list"})
    states = _states(dr)
    assert dr.state == "failed" and states[("square_2__x", -1)] == "failed"
    assert "pipeline 'uneven_map': step 'square': map(x=...) got str, not a list; pass a list" in "".join(
        capfd.readouterr()
    )


def test_isthmus_cache_and_isthmus_recompute_dag_params(isthmus_home: Path, calls: Path) -> None:
    dag = _dag("isthmus_movie_stats")
    assert dag.params["isthmus_cache"] is True and dag.params["isthmus_recompute"] == []
    # (every run gives both: in one process, dag.test() keeps a run's conf in the DAG's Param objects)
    dr, first = _dag_test(dag, {"isthmus_cache": True, "isthmus_recompute": []})
    assert dr.state == "success"
    _taken(calls)
    dr, forced = _dag_test(dag, {"isthmus_cache": False, "isthmus_recompute": []})
    assert dr.state == "success"
    assert not any(s["cache_hit"] for s in forced.values())
    assert len(_taken(calls)) == len(MOVIE_STEPS)
    assert {inv: s["cache_key"] for inv, s in forced.items()} == {inv: s["cache_key"] for inv, s in first.items()}

    dr, some = _dag_test(dag, {"isthmus_cache": True, "isthmus_recompute": ["genre_stats", "pick_best"]})
    assert dr.state == "success"
    assert sorted(inv for inv, s in some.items() if not s["cache_hit"]) == [
        "genre_stats[0]",
        "genre_stats[1]",
        "pick_best",
    ]
    # a later run hits the recomputed results
    dr, after = _dag_test(dag, {"isthmus_cache": True, "isthmus_recompute": []})
    assert all(s["cache_hit"] for s in after.values())
    assert after["pick_best"]["source_step_run_id"] == some["pick_best"]["id"]


def test_a_bad_recompute_name_is_refused_when_the_run_is_triggered(isthmus_home: Path) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    dag = _dag("isthmus_movie_stats")
    with pytest.raises(ParamValidationError, match="isthmus_recompute"):
        dag.test(run_conf={"isthmus_recompute": ["no_such_step"]})


def test_dag_build_refuses_a_pipeline_param_named_like_a_dag_run_param() -> None:
    from isthmus import pipeline
    from isthmus.errors import PipelineDefinitionError
    from tests.airflow.fanout_steps import square

    @pipeline
    def clash(isthmus_cache: int = 1):
        return square(isthmus_cache)

    with pytest.raises(PipelineDefinitionError, match=r"pipeline 'clash'.*'isthmus_cache'.*rename"):
        clash.to_airflow_dag()


def test_item_refs_are_the_core_split(isthmus_home: Path) -> None:
    """The provider's ``.expand()`` items and a local run's items are made by one function: the same refs."""
    from isthmus import defaults
    from isthmus.local_run import split_items
    from isthmus_airflow.mapping import item_refs

    store = defaults.artifact_store()
    ref = store.save(["a", ["b", 1], {"c": 2}], step_name="names", output="output")
    assert item_refs("names", {"output": ref}, store) == [
        r.to_dict() for r in split_items("names", "output", ref, store)
    ]


EXAMPLE = """
import json
from dags_examples.fanout_pipeline import fanout_pipeline
run = fanout_pipeline.run(bands=3)
print(json.dumps({k: [v.cache_hit, v.cache_key, v.step_run_id] for k, v in run.steps.items()}))
"""


def test_the_fan_out_example_dag_hits_a_local_run_of_the_example(isthmus_home: Path) -> None:
    """dags_examples/airflow/isthmus_fanout_dag.py after ``python -m dags_examples.fanout_pipeline``: every
    mapped band and every other step is a cache hit on the local run (computed in a fresh process)."""
    local = run_python(EXAMPLE, env={"ISTHMUS_HOME": str(isthmus_home)}, cwd=REPO, timeout=300)
    assert not any(hit for hit, _, _ in local.values())
    source = (REPO / "dags_examples" / "airflow" / "isthmus_fanout_dag.py").read_text()
    dag = load_dag(put_dag("isthmus_fanout_dag", source), "isthmus_fanout_pipeline")
    dr, steps = _dag_test(dag, {"bands": 3, "isthmus_cache": True, "isthmus_recompute": []})
    assert dr.state == "success"
    assert set(steps) == set(local) and "band_stats[2]" in steps
    for inv, row in steps.items():
        assert row["cache_hit"] and row["cache_key"] == local[inv][1], inv
        assert row["source_step_run_id"] == local[inv][2], inv
