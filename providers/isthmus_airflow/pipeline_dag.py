"""``Pipeline.to_airflow_dag``: a whole isthmus ``@pipeline`` as an Airflow DAG of StepOperators."""

from __future__ import annotations

import inspect
from typing import Any

from airflow.sdk import DAG

from isthmus.errors import StepDefinitionError
from isthmus.pipeline import OutputHandle, Param, Pipeline
from isthmus_airflow.operators.step import StepOperator, param_ref


def pipeline_to_dag(pipeline: Pipeline, dag_id: str | None = None, **dag_kwargs: Any) -> DAG:
    """One StepOperator per step invocation; pipeline parameters become DAG ``params`` (their defaults),
    resolved with their native types when each task runs. Other keyword arguments go to ``DAG``."""
    placeholders = {name: Param(name) for name in pipeline.signature.parameters}
    try:
        graph = pipeline.compile(**placeholders)
    except StepDefinitionError:
        raise
    except Exception as exc:
        raise StepDefinitionError(
            f"pipeline {pipeline.name!r} cannot be turned into an Airflow DAG: its body computes with a "
            f"parameter ({type(exc).__name__}: {exc}); pass parameters straight to steps, or move the logic into a step"
        ) from exc
    params = dict(dag_kwargs.pop("params", None) or {})
    for name, p in pipeline.signature.parameters.items():
        if p.default is not inspect.Parameter.empty:
            params.setdefault(name, p.default)
    isthmus_conn_id = dag_kwargs.pop("isthmus_conn_id", None)
    dag_kwargs.setdefault("schedule", None)
    dag_kwargs.setdefault(
        "description", (pipeline.fn.__doc__ or f"isthmus pipeline {pipeline.name}").strip().splitlines()[0]
    )
    dag_kwargs.setdefault("tags", ["isthmus"])
    dag = DAG(dag_id=dag_id or pipeline.name, params=params, **dag_kwargs)
    ops: dict[str, StepOperator] = {}
    with dag:
        for node in graph.topological():
            op_kwargs: dict[str, Any] = {}
            for arg, value in node.arguments.items():
                if isinstance(value, Param):
                    op_kwargs[arg] = param_ref(value.name)
                elif isinstance(value, OutputHandle):
                    upstream = ops[value.invocation]
                    many = len(upstream.step.output_names) > 1
                    op_kwargs[arg] = upstream.output[value.output] if many else upstream.output  # type: ignore[index]
                else:
                    op_kwargs[arg] = value
            extra = {"isthmus_conn_id": isthmus_conn_id} if isthmus_conn_id else {}
            ops[node.invocation] = StepOperator(
                task_id=node.invocation, step=node.step, op_kwargs=op_kwargs, pipeline_name=pipeline.name, **extra
            )
    return dag
