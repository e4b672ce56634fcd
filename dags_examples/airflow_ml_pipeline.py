"""The example DAGs under their old path. They live in ``dags_examples/airflow/``, the folder to give
Airflow as its dags folder (this directory also holds the step library and the Flyte example)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from dags_examples.airflow.isthmus_ml_dags import isthmus_ml_pipeline, taskflow_dag  # noqa: E402

__all__ = ["isthmus_ml_pipeline", "taskflow_dag"]
