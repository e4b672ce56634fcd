"""isthmus under a live Airflow 3 deployment (api-server, scheduler, dag-processor, triggerer,
LocalExecutor; ``tests/airflow_live.py``), DAG runs triggered through the REST API like a user.

The scheduler must survive the end of every DAG run (the isthmus listener once crashed it with
``DetachedInstanceError`` there) with the isthmus connection absent, stored in Airflow's DB, or given
by ``AIRFLOW_CONN_ISTHMUS_DEFAULT``, and close each isthmus pipeline run.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from isthmus.context import derived_run_id
from tests.airflow.dag_sources import FAIL_DAG, LIVE_FANOUT_DAG, MAP_DAG, ONE_STEP_DAG, PARAMS_DAG, SECRET_DAG
from tests.airflow.test_fanout_dag import MOVIE_STEPS
from tests.airflow.test_mapping_and_params import LOCAL_JOIN
from tests.airflow_live import LiveAirflow
from tests.helpers import REPO, run_python

EXAMPLES = REPO / "dags_examples" / "airflow" / "isthmus_ml_dags.py"


def _steps(live: LiveAirflow, dag_id: str, run_id: str, url: str | None = None) -> dict[str, dict]:
    store = live.metadata(url)
    try:
        return {s["invocation"]: s for s in store.step_runs_of(derived_run_id("airflow", dag_id, run_id))}
    finally:
        store.dispose()


def _run_all(live: LiveAirflow, dag_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Trigger the DAGs together, wait for all: {dag_id: (run id, state)}."""
    runs = {dag_id: live.trigger(dag_id) for dag_id in dag_ids}
    return {dag_id: (run_id, live.wait_run(dag_id, run_id)) for dag_id, run_id in runs.items()}


def test_example_dags_twice_second_all_hits_and_the_scheduler_survives(live_airflow: LiveAirflow) -> None:
    live = live_airflow
    live.put_dag("isthmus_ml_dags", EXAMPLES.read_text())
    dags = ["isthmus_ml_taskflow", "isthmus_ml_pipeline"]
    first = _run_all(live, dags)
    assert {d: state for d, (_, state) in first.items()} == dict.fromkeys(dags, "success")
    live.assert_healthy()  # the listener ran at the end of both DAG runs
    computed: dict[str, dict[str, dict]] = {}
    for dag_id, (run_id, _) in first.items():
        record = live.wait_pipeline_status(derived_run_id("airflow", dag_id, run_id), ("COMPLETED", "FAILED"))
        assert record["status"] == "COMPLETED" and record["context"]["run_id"] == run_id
        computed[dag_id] = _steps(live, dag_id, run_id)
        assert set(computed[dag_id]) == {"ingest", "featurize", "train", "evaluate"}

    second = _run_all(live, dags)
    for dag_id, (run_id, state) in second.items():
        assert state == "success"
        steps = _steps(live, dag_id, run_id)
        assert all(s["cache_hit"] for s in steps.values()), {k: s["cache_hit"] for k, s in steps.items()}
        record = live.wait_pipeline_status(derived_run_id("airflow", dag_id, run_id), ("COMPLETED", "FAILED"))
        assert record["status"] == "COMPLETED"
    hits = _steps(live, "isthmus_ml_taskflow", second["isthmus_ml_taskflow"][0])
    first_ids = {s["id"] for d in computed.values() for s in d.values()}
    assert {s["source_step_run_id"] for s in hits.values()} <= first_ids
    live.assert_healthy()


def test_a_failing_step_fails_its_task_the_dag_run_and_the_pipeline_run(live_airflow: LiveAirflow) -> None:
    live = live_airflow
    live.put_dag("isthmus_live_fail", FAIL_DAG)
    run_id, state = live.run_dag("isthmus_live_fail")
    assert state == "failed"
    tis = live.task_instances("isthmus_live_fail", run_id)
    assert tis[("broken", -1)]["state"] == "failed" and tis[("square", -1)]["state"] == "success"
    record = live.wait_pipeline_status(derived_run_id("airflow", "isthmus_live_fail", run_id), ("FAILED",))
    assert "bad value 42 in column y" in (record["error"] or "")  # the task's error, kept by the listener
    broken = _steps(live, "isthmus_live_fail", run_id)["broken"]
    assert broken["status"] == "FAILED" and "ValueError" in broken["error"]
    assert "bad value 42" in "".join(p.read_text() for p in live.task_log_files("isthmus_live_fail", run_id))
    live.assert_healthy()


def test_a_secret_parameter_never_reaches_the_task_logs(live_airflow: LiveAirflow) -> None:
    live = live_airflow
    canary = f"canary-{secrets.token_hex(12)}"
    live.put_dag("isthmus_live_secret", SECRET_DAG.format(canary=canary))
    run_id, state = live.run_dag("isthmus_live_secret")
    assert state == "failed"
    logs = live.task_log_files("isthmus_live_secret", run_id)
    text = "".join(path.read_text(errors="replace") for path in logs)
    assert "PermissionError" in text and "https://api.example/v1 refused the request" in text  # the error is there
    leaked = [str(path) for path in logs if canary in path.read_text(errors="replace")]
    assert not leaked, f"the value of api_token is in the task logs: {leaked}"
    # the LocalExecutor's workers echo task logs into the scheduler's output too
    assert canary not in live.component_log("scheduler"), "the value of api_token is in the scheduler's log"
    live.assert_healthy()


def test_mapping_and_parameters_under_the_scheduler(live_airflow: LiveAirflow) -> None:
    live = live_airflow
    live.put_dag("isthmus_map_outputs", MAP_DAG)
    live.put_dag("isthmus_params_True", PARAMS_DAG.format(native=True))
    runs = _run_all(live, ["isthmus_map_outputs", "isthmus_params_True"])
    assert {d: state for d, (_, state) in runs.items()} == {
        "isthmus_map_outputs": "success",
        "isthmus_params_True": "success",
    }
    map_run = runs["isthmus_map_outputs"][0]
    tis = live.task_instances("isthmus_map_outputs", map_run)
    assert sorted(k for k in tis if k[0] == "shout") == [("shout", 0), ("shout", 1), ("shout", 2)]
    steps = _steps(live, "isthmus_map_outputs", map_run)
    assert list(steps["join"]["inputs"]) == ["words[0]", "words[1]", "words[2]"]
    # a local run in a fresh process hits on the join and on the consumer of the whole list
    local = run_python(LOCAL_JOIN, env={"ISTHMUS_HOME": str(live.isthmus_home)}, cwd=REPO)
    for name in ("names", "join", "count"):
        hit, source, key = local[name]
        assert hit and source == steps[name]["id"] and key == steps[name]["cache_key"], (name, local[name])
    params = _steps(live, "isthmus_params_True", runs["isthmus_params_True"][0])
    assert params["literal"]["params"] == params["rendered"]["params"] == {"text": "a,b\n1,2\n"}
    assert params["digits"]["params"] == {"text": "007\n"}
    live.assert_healthy()


def test_a_fan_out_pipeline_dag_maps_under_the_scheduler_and_hits_the_second_time(live_airflow: LiveAirflow) -> None:
    """``to_airflow_dag`` of a pipeline with a mapped step and a list of outputs: every map index is a step
    run; triggered again, every step run is a hit on the first run's."""
    live = live_airflow
    dag_id = "isthmus_live_movie_stats"
    live.put_dag(dag_id, LIVE_FANOUT_DAG)
    run_id, state = live.run_dag(dag_id)
    assert state == "success"
    tis = live.task_instances(dag_id, run_id)
    assert sorted(k for k in tis if k[0] == "genre_stats") == [("genre_stats", 0), ("genre_stats", 1)]
    first = _steps(live, dag_id, run_id)
    assert sorted(first) == MOVIE_STEPS
    assert not any(s["cache_hit"] for s in first.values())
    assert [first[f"genre_stats[{i}]"]["context"]["native"]["map_index"] for i in (0, 1)] == [0, 1]
    assert list(first["join_stats"]["inputs"]) == ["stats[0]", "stats[1]", "best"]
    record = live.wait_pipeline_status(derived_run_id("airflow", dag_id, run_id), ("COMPLETED", "FAILED"))
    assert record["status"] == "COMPLETED" and record["pipeline"] == "movie_stats"

    again, state = live.run_dag(dag_id)
    assert state == "success"
    second = _steps(live, dag_id, again)
    assert sorted(second) == MOVIE_STEPS
    assert {inv: (s["cache_hit"], s["source_step_run_id"]) for inv, s in second.items()} == {
        inv: (True, s["id"]) for inv, s in first.items()
    }
    live.assert_healthy()


def _connection_extra(base: Path) -> tuple[str, dict[str, str]]:
    url = f"sqlite:///{base / 'isthmus.db'}"
    return url, {"store_url": url, "artifact_root": str(base / "artifacts")}


def _one_step_run_closed_in(live: LiveAirflow, url: str, x: int) -> str:
    """Run the one-step DAG with ``x``; its pipeline run is closed, with the step, in the store at ``url``."""
    live.put_dag("isthmus_live_one_step", ONE_STEP_DAG)
    run_id, state = live.run_dag("isthmus_live_one_step", conf={"x": x})
    assert state == "success"
    record = live.wait_pipeline_status(
        derived_run_id("airflow", "isthmus_live_one_step", run_id), ("COMPLETED",), url=url
    )
    assert record["status"] == "COMPLETED"
    assert _steps(live, "isthmus_live_one_step", run_id, url)["square"]["params"] == {"x": x}
    live.assert_healthy()
    return run_id


def test_isthmus_connection_stored_in_the_airflow_db(live_airflow: LiveAirflow) -> None:
    live = live_airflow
    url, extra = _connection_extra(live.base / "store-from-db-connection")
    body = {"connection_id": "isthmus_default", "conn_type": "isthmus", "extra": json.dumps(extra)}
    live.api("POST", "/api/v2/connections", body)
    try:
        run_id = _one_step_run_closed_in(live, url, 5)
        assert _steps(live, "isthmus_live_one_step", run_id) == {}  # nothing in the default store
    finally:
        live.api("DELETE", "/api/v2/connections/isthmus_default")


def test_isthmus_connection_given_by_an_environment_variable(live_airflow: LiveAirflow) -> None:
    live = live_airflow
    url, extra = _connection_extra(live.base / "store-from-env-connection")
    conn = json.dumps({"conn_type": "isthmus", "extra": extra})
    live.restart_component("scheduler", {"AIRFLOW_CONN_ISTHMUS_DEFAULT": conn})  # tasks run in its workers
    try:
        _one_step_run_closed_in(live, url, 6)
    finally:
        live.restart_component("scheduler")
