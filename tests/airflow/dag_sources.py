"""DAG files shared by the ``dag.test()`` tests and the live-Airflow tests (written into a dags folder)."""

from __future__ import annotations

MAP_DAG = """
import isthmus
from airflow.sdk import dag, task
from tests.airflow.map_steps import count, join, names, shout


@task
def check_joined(ref) -> None:
    value = isthmus.load(ref)
    if value != "ADA! GRACE! EDSGER!":
        raise ValueError(f"joined {value!r}")


@task
def check_item(ref) -> str:
    value = isthmus.load(ref)
    if value not in ("ada", "grace", "edsger"):
        raise ValueError(f"item {value!r}")
    return value


@dag(dag_id="isthmus_map_outputs", schedule=None)
def isthmus_map_outputs():
    ns = task.isthmus(names)()
    shouted = task.isthmus(shout).expand(name=ns)
    check_joined(task.isthmus(join)(shouted))
    task.isthmus(count)(ns)
    check_item.expand(ref=ns)


isthmus_map_outputs()
"""

REFUSED_DAG = """
from airflow.sdk import dag, task
from tests.airflow.map_steps import settings, shout


@dag(dag_id="isthmus_map_refused", schedule=None)
def isthmus_map_refused():
    task.isthmus(shout).expand(name=task.isthmus(settings)())


isthmus_map_refused()
"""

PARAMS_DAG = """
from airflow.sdk import dag, task
from tests.airflow.map_steps import line_count


@dag(dag_id="isthmus_params_{native}", schedule=None, params={{"header": "a,b"}}, render_template_as_native_obj={native})
def isthmus_params():
    task.isthmus(line_count, task_id="literal")("a,b\\n1,2\\n")
    task.isthmus(line_count, task_id="rendered")("{{{{ params.header }}}}\\n1,2\\n")
    task.isthmus(line_count, task_id="digits")("007\\n")


isthmus_params()
"""
