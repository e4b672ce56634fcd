"""``log_metadata`` in an Airflow task: recorded with the step run, and carried by the task's own
OpenLineage events (apache-airflow-providers-openlineage calls the operator's facet methods) as the
``isthmus_metadata`` run facet and, per output, dataset facet — for a computed run and for a cache hit."""

from __future__ import annotations

import pytest

from tests.airflow.conftest import lineage_events, load_dag, put_dag
from tests.lineage import metadata_steps as ms

pytestmark = pytest.mark.usefixtures("airflow_db")

METADATA_DAG = """
from airflow.sdk import dag, task
from tests.lineage.metadata_steps import evaluate


@dag(dag_id="isthmus_log_metadata", schedule=None)
def isthmus_log_metadata():
    task.isthmus(evaluate)(1200)


isthmus_log_metadata()
"""

LOGGED = {"accuracy": ms.ACCURACY, "rows": 1200, "passed": True, "classes": ["cat", "dog"]}


def test_airflow_task_records_logged_metadata_and_its_events_carry_it() -> None:
    from isthmus import defaults
    from isthmus.context import derived_run_id
    from isthmus_airflow.plugins.run_closer import flush
    from tests.lineage import schemas

    dag = load_dag(put_dag("isthmus_log_metadata", METADATA_DAG), "isthmus_log_metadata")
    before = len(lineage_events())
    rows = []
    for _ in range(2):  # computed, then a cache hit
        dr = dag.test()
        assert dr.state == "success"
        assert flush(30), "the pipeline run was not closed"
        (row,) = defaults.metadata_store().step_runs_of(derived_run_id("airflow", dag.dag_id, dr.run_id))
        rows.append(row)
    first, hit = rows
    assert not first["cache_hit"] and hit["cache_hit"] and hit["source_step_run_id"] == first["id"]
    assert first["metadata"] == LOGGED and hit["metadata"] == LOGGED
    assert first["outputs"]["model"]["metadata"]["logged"] == {"framework": "sklearn", "n_features": 3}

    events = [e for e in lineage_events()[before:] if e["job"]["name"] == "isthmus_log_metadata.evaluate"]
    for event in events:
        schemas.validate_event(event)
    completes = [e for e in events if e["eventType"] == "COMPLETE"]
    assert len(completes) == 2, [e["eventType"] for e in events]
    facets = [e["run"]["facets"]["isthmus_metadata"] for e in completes]
    assert [(f["metadata"], f["loggedByStepRunId"], f["fromCache"]) for f in facets] == [
        (LOGGED, first["id"], False),
        (LOGGED, first["id"], True),
    ]
    assert type(facets[0]["metadata"]["rows"]) is int and type(facets[0]["metadata"]["accuracy"]) is float
    for event in completes:
        (output,) = event["outputs"]
        model = output["facets"]["isthmus_metadata"]
        assert model["output"] == "model" and model["metadata"] == {"framework": "sklearn", "n_features": 3}
