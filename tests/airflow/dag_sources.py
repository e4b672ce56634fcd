"""DAG files shared by the ``dag.test()`` tests and the live-Airflow tests (written into a dags folder)."""

from __future__ import annotations

MAP_DAG = """
import isthmus
from airflow.sdk import dag, task
from tests.airflow.steps import count, join, names, shout


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
from tests.airflow.steps import settings, shout


@dag(dag_id="isthmus_map_refused", schedule=None)
def isthmus_map_refused():
    task.isthmus(shout).expand(name=task.isthmus(settings)())


isthmus_map_refused()
"""

PARAMS_DAG = """
from airflow.sdk import dag, task
from tests.airflow.steps import line_count


@dag(dag_id="isthmus_params_{native}", schedule=None, params={{"header": "a,b"}}, render_template_as_native_obj={native})
def isthmus_params():
    task.isthmus(line_count, task_id="literal")("a,b\\n1,2\\n")
    task.isthmus(line_count, task_id="rendered")("{{{{ params.header }}}}\\n1,2\\n")
    task.isthmus(line_count, task_id="digits")("007\\n")


isthmus_params()
"""

FAIL_DAG = """
from airflow.sdk import dag, task
from tests.airflow.steps import broken, square


@dag(dag_id="isthmus_live_fail", schedule=None)
def isthmus_live_fail():
    task.isthmus(square)(4)
    task.isthmus(broken, retries=0)(42)


isthmus_live_fail()
"""

SECRET_DAG = """
from airflow.sdk import dag, task
from tests.airflow.steps import call_api


@dag(dag_id="isthmus_live_secret", schedule=None)
def isthmus_live_secret():
    task.isthmus(call_api, retries=0)(endpoint="https://api.example/v1", api_token="{canary}")


isthmus_live_secret()
"""

ONE_STEP_DAG = """
from airflow.sdk import dag, task
from tests.airflow.steps import square


@dag(dag_id="isthmus_live_one_step", schedule=None, params={"x": 3}, render_template_as_native_obj=True)
def isthmus_live_one_step():
    task.isthmus(square)("{{ params.x }}")


isthmus_live_one_step()
"""

SECRET_PARAM_DAG = """
from airflow.sdk import DAG
from isthmus_airflow.operators.step import StepOperator, param_ref
from tests.airflow.steps import login_with, secret_etl, value_length

with DAG("isthmus_secret_param", schedule=None, params={{"password": "{canary}", "host": "db1"}}):
    StepOperator(task_id="login", step=login_with, retries=0,
                 op_kwargs={{"host": param_ref("host"), "value": param_ref("password")}})
    StepOperator(task_id="templated", step=value_length, op_kwargs={{"host": "db1", "value": "{{{{ params.password }}}}"}})

secret_etl_dag = secret_etl.to_airflow_dag(dag_id="isthmus_secret_etl")
"""

FANOUT_DAGS = """
from tests.airflow.fanout_steps import empty_map, every_map, movie_stats, uneven_map

movie_stats_dag = movie_stats.to_airflow_dag(dag_id="isthmus_movie_stats")
every_map_dag = every_map.to_airflow_dag(dag_id="isthmus_every_map")
empty_map_dag = empty_map.to_airflow_dag(dag_id="isthmus_empty_map")
uneven_map_dag = uneven_map.to_airflow_dag(dag_id="isthmus_uneven_map")
"""

LIVE_FANOUT_DAG = """
from tests.airflow.fanout_steps import movie_stats

movie_stats_dag = movie_stats.to_airflow_dag(dag_id="isthmus_live_movie_stats")
"""
