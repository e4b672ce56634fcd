"""One cache across orchestrators: the example pipeline under Airflow 3 ``dag.test()``, then as a Flyte
workflow against the same isthmus store (every step a hit naming its Airflow source run), and the other
way round."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import skip_or_fail

try:
    from tests.airflow.conftest import DAGS, REPO, airflow_db, load_dag  # noqa: F401 - airflow_db is a fixture
except ImportError as exc:  # pragma: no cover - the Airflow test helpers are part of the repository
    DAGS = REPO = None
    _IMPORT_ERROR = str(exc)
else:
    _IMPORT_ERROR = ""


@pytest.fixture
def pipeline_dag(request):
    if _IMPORT_ERROR:
        skip_or_fail(f"the Airflow test helpers cannot be imported: {_IMPORT_ERROR}")
    request.getfixturevalue("airflow_db")
    try:
        import isthmus_airflow  # noqa: F401
    except ImportError as exc:
        skip_or_fail(f"the isthmus Airflow provider cannot be imported: {exc}")
    path = DAGS / "airflow_ml_pipeline.py"
    shutil.copy(REPO / "dags_examples" / "airflow_ml_pipeline.py", path)
    return load_dag(path, "isthmus_ml_pipeline")


def _steps_of(run_id: str) -> dict[str, dict]:
    from isthmus import defaults

    return {s["invocation"]: s for s in defaults.metadata_store().step_runs_of(run_id)}


def _flyte_run(wf, **params) -> tuple[object, dict[str, dict]]:
    from isthmus import defaults

    out = wf(**params)
    (latest, *_) = defaults.metadata_store().list_runs(orchestrator="flyte")
    return out, _steps_of(latest["id"])


def test_airflow_and_flyte_share_one_cache(pipeline_dag) -> None:
    from dags_examples import steps
    from isthmus.context import derived_run_id

    wf = steps.ml_pipeline.to_flyte_workflow()

    # Airflow first: every step computed; then Flyte: every step a hit on the Airflow step run.
    dr = pipeline_dag.test(run_conf={"n_estimators": 10})
    assert dr.state == "success"
    airflow_steps = _steps_of(derived_run_id("airflow", pipeline_dag.dag_id, dr.run_id))
    assert set(airflow_steps) == {"ingest", "featurize", "train", "evaluate"}
    assert not any(s["cache_hit"] for s in airflow_steps.values())
    _, flyte_steps = _flyte_run(wf, n_estimators=10)
    for inv, sr in flyte_steps.items():
        assert sr["cache_hit"] and sr["orchestrator"] == "flyte", inv
        assert sr["source_step_run_id"] == airflow_steps[inv]["id"]

    # Flyte first (a new parameter value): then Airflow hits on what Flyte computed.
    _, flyte_new = _flyte_run(wf, n_estimators=12)
    assert not flyte_new["train"]["cache_hit"] and not flyte_new["evaluate"]["cache_hit"]
    dr2 = pipeline_dag.test(run_conf={"n_estimators": 12})
    assert dr2.state == "success"
    airflow_new = _steps_of(derived_run_id("airflow", pipeline_dag.dag_id, dr2.run_id))
    assert all(s["cache_hit"] for s in airflow_new.values())
    for inv in ("train", "evaluate"):
        assert airflow_new[inv]["source_step_run_id"] == flyte_new[inv]["id"]


def test_a_fanned_out_pipeline_shares_one_cache_between_airflow_and_flyte(request) -> None:
    """The mapped movie_stats pipeline: Airflow's mapped tasks first, then a Flyte map task hits every item
    (same keys, the Airflow step runs as sources); a new item computed under Flyte is then a hit in Airflow."""
    if _IMPORT_ERROR:
        skip_or_fail(f"the Airflow test helpers cannot be imported: {_IMPORT_ERROR}")
    request.getfixturevalue("airflow_db")
    from isthmus.context import derived_run_id
    from isthmus_airflow.plugins.run_closer import flush
    from tests.airflow import fanout_steps
    from tests.airflow.conftest import put_dag
    from tests.airflow.dag_sources import FANOUT_DAGS

    dag = load_dag(put_dag("isthmus_fanout_dags", FANOUT_DAGS), "isthmus_movie_stats")
    wf = fanout_steps.movie_stats.to_flyte_workflow()

    dr = dag.test(run_conf={"top": 2, "isthmus_cache": True, "isthmus_recompute": []})
    flush(30)
    assert dr.state == "success"
    airflow_steps = _steps_of(derived_run_id("airflow", dag.dag_id, dr.run_id))
    assert {"genre_stats[0]", "genre_stats[1]"} <= set(airflow_steps)
    assert not any(s["cache_hit"] for s in airflow_steps.values())

    _, flyte_steps = _flyte_run(wf, top=2)
    assert set(flyte_steps) == set(airflow_steps)
    for inv, sr in flyte_steps.items():
        assert sr["cache_hit"] and sr["cache_key"] == airflow_steps[inv]["cache_key"], inv
        assert sr["source_step_run_id"] == airflow_steps[inv]["id"], inv

    _, flyte_three = _flyte_run(wf, top=3)
    computed = sorted(inv for inv, sr in flyte_three.items() if not sr["cache_hit"])
    assert computed == ["genre_stats[2]", "join_stats", "list_genres"]
    dr3 = dag.test(run_conf={"top": 3, "isthmus_cache": True, "isthmus_recompute": []})
    flush(30)
    assert dr3.state == "success"
    airflow_three = _steps_of(derived_run_id("airflow", dag.dag_id, dr3.run_id))
    assert all(s["cache_hit"] for s in airflow_three.values())
    assert airflow_three["genre_stats[2]"]["source_step_run_id"] == flyte_three["genre_stats[2]"]["id"]
