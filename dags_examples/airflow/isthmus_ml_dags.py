"""The example ML pipeline as Airflow DAGs, from the same steps as the local and Flyte runs.

- ``isthmus_ml_taskflow``: TaskFlow style, each step wrapped with ``task.isthmus``;
- ``isthmus_ml_pipeline``: the whole ``@pipeline`` turned into a DAG with ``to_airflow_dag``.

Every task runs through the isthmus StepRunner: recorded, cached (also across these two DAGs, local
runs and Flyte), and described to OpenLineage. Only artifact refs travel through XCom.

This folder holds only Airflow DAG files: point Airflow's dags folder here
(``AIRFLOW__CORE__DAGS_FOLDER=$PWD/dags_examples/airflow``, see the README's "In Airflow").
"""

from __future__ import annotations

import sys
from pathlib import Path

from airflow.sdk import dag, task

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for dags_examples.steps

from dags_examples.steps import evaluate, featurize, ingest, ml_pipeline, train  # noqa: E402


@dag(
    dag_id="isthmus_ml_taskflow",
    schedule=None,
    params={"n_estimators": 100, "seed": 0},
    render_template_as_native_obj=True,  # "{{ params.n_estimators }}" stays an int
    tags=["isthmus", "example"],
)
def isthmus_ml_taskflow():
    raw = task.isthmus(ingest)()
    feats = task.isthmus(featurize)(raw)
    model = task.isthmus(train)(feats, n_estimators="{{ params.n_estimators }}", seed="{{ params.seed }}")
    task.isthmus(evaluate)(model, feats, seed="{{ params.seed }}")


taskflow_dag = isthmus_ml_taskflow()

isthmus_ml_pipeline = ml_pipeline.to_airflow_dag(dag_id="isthmus_ml_pipeline", tags=["isthmus", "example"])
