"""The "isthmus step run" button of every isthmus task: its step-run page in the isthmus UI that the
provider's plugin mounts at ``/isthmus`` on the api-server."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from airflow.sdk import BaseOperatorLink


def step_run_url(base_url: str, dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    query = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id}
    if map_index is not None and map_index >= 0:
        query["map_index"] = str(map_index)
    return f"{base_url.rstrip('/')}/isthmus/airflow/task-instance?{urlencode(query)}"


class IsthmusStepRunLink(BaseOperatorLink):
    """Links a task instance to its isthmus step run (through the api-server's ``base_url``)."""

    name = "isthmus step run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        try:
            from airflow.configuration import conf

            base = str(conf.get("api", "base_url", fallback="") or "")
        except Exception:  # no configuration here: a link relative to the api-server
            base = ""
        return step_run_url(base, ti_key.dag_id, ti_key.run_id, ti_key.task_id, getattr(ti_key, "map_index", -1))
