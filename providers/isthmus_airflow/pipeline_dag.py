"""``Pipeline.to_airflow_dag``: a whole isthmus ``@pipeline`` as an Airflow DAG of StepOperators.

One task per step invocation, named after it. A mapped step (``step.partial(...).map(...)``) becomes an
Airflow mapped task (``StepOperator.partial(...).expand(...)``): one map index, and one isthmus step run
``name[i]``, per item, with the cache key a local run computes. Several mapped arguments are zipped
(``XComArg.zip``, with a fill value that fails a shorter list by name), never Airflow's cross product.
Airflow expands straight over literal lists, a step output that is a list (that task pushes one item ref
per item) and the results of a mapped step; a DAG param, a list of step outputs, one output of a step with
several, or a literal zipped with a step output is pushed first by a small ``MapItemsOperator`` task,
``<invocation>__<argument>``.

A mapped task with no item is skipped by Airflow; the tasks that take its results have the trigger rule
``none_failed`` and receive ``[]``, as in a local run.

DAG params: the pipeline's parameters (their defaults), plus ``isthmus_cache`` (``False`` computes every
step again) and ``isthmus_recompute`` (the steps to compute again), for "Trigger DAG w/ config".
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import DAG
from airflow.sdk import Param as DagParam

from isthmus.errors import PipelineDefinitionError, StepDefinitionError
from isthmus.pipeline import MappedOutput, Node, OutputHandle, Param, Pipeline, PipelineGraph, handles_in
from isthmus_airflow.mapping import MISSING_ITEM
from isthmus_airflow.operators.map_items import MapItemsOperator
from isthmus_airflow.operators.step import CACHE_PARAM, RECOMPUTE_PARAM, StepOperator, param_ref

RUN_PARAMS = (CACHE_PARAM, RECOMPUTE_PARAM)


def pipeline_to_dag(pipeline: Pipeline, dag_id: str | None = None, **dag_kwargs: Any) -> DAG:
    """One StepOperator per step invocation (a mapped task for a mapped step); pipeline parameters become
    DAG ``params`` (their defaults), resolved with their native types when each task runs. Other keyword
    arguments go to ``DAG``."""
    clash = [name for name in pipeline.signature.parameters if name in RUN_PARAMS]
    if clash:
        raise PipelineDefinitionError(
            f"pipeline {pipeline.name!r}: parameter {clash[0]!r} has the name of a DAG run param that "
            f"to_airflow_dag adds ({', '.join(RUN_PARAMS)}); rename the parameter"
        )
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
    params.update(_run_params(graph, params))
    isthmus_conn_id = dag_kwargs.pop("isthmus_conn_id", None)
    dag_kwargs.setdefault("schedule", None)
    dag_kwargs.setdefault(
        "description", (pipeline.fn.__doc__ or f"isthmus pipeline {pipeline.name}").strip().splitlines()[0]
    )
    dag_kwargs.setdefault("tags", ["isthmus"])
    dag = DAG(dag_id=dag_id or pipeline.name, params=params, **dag_kwargs)
    with dag:
        builder = _DagBuilder(pipeline.name, graph, {"isthmus_conn_id": isthmus_conn_id} if isthmus_conn_id else {})
        for node in graph.topological():
            builder.add(node)
    return dag


def _run_params(graph: PipelineGraph, given: dict[str, Any]) -> dict[str, Any]:
    """``isthmus_cache`` and ``isthmus_recompute`` (validated when a run is triggered), unless given."""
    names = sorted(set(graph.nodes) | {node.step.name for node in graph.nodes.values()})
    defaults = {
        CACHE_PARAM: DagParam(
            True,
            type="boolean",
            title="isthmus: use the cache",
            description="false: compute every step again, without looking up the cache (the results are cached)",
        ),
        RECOMPUTE_PARAM: DagParam(
            [],
            type="array",
            items={"type": "string", "enum": names},
            title="isthmus: steps to compute again",
            description='steps (or task ids) to compute again without looking up the cache, e.g. ["train"]',
        ),
    }
    return {name: value for name, value in defaults.items() if name not in given}


@dataclass
class _DagBuilder:
    """Adds the tasks of ``graph``'s nodes to the DAG being defined, in dependency order."""

    pipeline: str
    graph: PipelineGraph
    operator_kwargs: dict[str, Any]
    tasks: dict[str, Any] = field(default_factory=dict)  # by invocation: a StepOperator or a mapped one
    task_ids: set[str] = field(default_factory=set)

    def add(self, node: Node) -> None:
        rule = self._trigger_rule(node.upstream)
        if node.is_mapped:
            fixed = {k: self._argument(v) for k, v in node.arguments.items() if k not in node.mapped}
            self.tasks[node.invocation] = StepOperator.partial(
                task_id=node.invocation,
                step=node.step,
                op_kwargs=fixed,
                map_names=node.mapped,
                pipeline_name=self.pipeline,
                **rule,
                **self.operator_kwargs,
            ).expand(map_values=self._map_values(node))
        else:
            self.tasks[node.invocation] = StepOperator(
                task_id=node.invocation,
                step=node.step,
                op_kwargs={k: self._argument(v) for k, v in node.arguments.items()},
                pipeline_name=self.pipeline,
                **rule,
                **self.operator_kwargs,
            )
        self.task_ids.add(node.invocation)

    # -- arguments ---------------------------------------------------------------------------------
    def _xcom(self, handle: OutputHandle) -> Any:
        task = self.tasks[handle.invocation]
        many = len(self.graph.nodes[handle.invocation].step.output_names) > 1
        return task.output[handle.output] if many else task.output

    def _argument(self, value: Any) -> Any:
        """An unmapped argument: a param placeholder, an XComArg, a list of XComArgs, or the value."""
        if isinstance(value, Param):
            return param_ref(value.name)
        if isinstance(value, OutputHandle):
            return self._xcom(value)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, OutputHandle) for v in value):
            return [self._xcom(v) for v in value]
        return value

    def _trigger_rule(self, upstream: list[str]) -> dict[str, Any]:
        """``none_failed`` after a mapped task: it may have had no item (skipped) and its results are ``[]``."""
        return {"trigger_rule": "none_failed"} if any(self.graph.nodes[u].is_mapped for u in upstream) else {}

    # -- mapping -----------------------------------------------------------------------------------
    def _map_values(self, node: Node) -> Any:
        """What the mapped task expands ``map_values`` over: the item (one mapped argument) or the zipped
        items of each map index."""
        given = [node.arguments[name] for name in node.mapped]
        if not any(isinstance(v, (OutputHandle, Param)) or handles_in(v) for v in given):  # literals only
            lists = [list(v) for v in given]
            return lists[0] if len(lists) == 1 else [list(items) for items in zip(*lists, strict=True)]
        sources = [self._map_source(node, name) for name in node.mapped]
        return sources[0] if len(sources) == 1 else sources[0].zip(*sources[1:], fillvalue=MISSING_ITEM)

    def _map_source(self, node: Node, name: str) -> Any:
        """An XComArg of the list ``node`` maps argument ``name`` over (its items, in order)."""
        value = node.arguments[name]
        if isinstance(value, OutputHandle):
            upstream = self.graph.nodes[value.invocation]
            if len(upstream.step.output_names) == 1:
                return self._xcom(value)  # a list output (its task pushes the items), or a mapped task's results
            if not isinstance(value, MappedOutput):
                return self._items_task(node, name, self._xcom(value), (upstream.step.name, value.output))
            return self._items_task(node, name, self._xcom(value))
        return self._items_task(node, name, self._argument(value))  # a DAG param, literals, a list of outputs

    def _items_task(self, node: Node, name: str, value: Any, split: tuple[str, str] | None = None) -> Any:
        task_id = f"{node.invocation}__{name}"
        n = 2
        while task_id in self.graph.nodes or task_id in self.task_ids:
            task_id = f"{node.invocation}__{name}_{n}"
            n += 1
        self.task_ids.add(task_id)
        upstream = [h.invocation for h in handles_in(node.arguments[name])]
        task = MapItemsOperator(
            task_id=task_id,
            value=value,
            label=f"pipeline {self.pipeline!r}: step {node.step.name!r}: map({name}=...)",
            split=split,
            **self._trigger_rule(upstream),
            **self.operator_kwargs,
        )
        return task.output
