"""The fan-out example (``dags_examples/fanout_pipeline.py``) as an Airflow DAG: the age bands become an Airflow
mapped task (one task instance and one isthmus step run per band), the two trainings two tasks, and the
joins receive the mapped results in map order. A run computed locally (``python -m
dags_examples.fanout_pipeline``) is all cache hits here, and the other way round.

Trigger with config ``{"bands": 5}`` to add a decile (only it and the steps after the list compute), or
``{"isthmus_cache": false}`` to compute everything again.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for dags_examples

from dags_examples.fanout_pipeline import fanout_pipeline  # noqa: E402

isthmus_fanout_pipeline = fanout_pipeline.to_airflow_dag(dag_id="isthmus_fanout_pipeline", tags=["isthmus", "example"])
