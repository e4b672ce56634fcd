"""``@task.isthmus``: TaskFlow for isthmus steps (``task.isthmus(train)`` or ``@task.isthmus`` on a function)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory

from isthmus.step import Step, as_step
from isthmus_airflow.operators.slurm import slurm_task
from isthmus_airflow.operators.step import StepOperator


class _IsthmusDecoratedOperator(DecoratedOperator, StepOperator):  # type: ignore[misc]  # op_args/op_kwargs: list/dict here
    """A StepOperator built by ``@task.isthmus``; call arguments are the step's arguments."""

    custom_operator_name = "@task.isthmus"
    template_fields = StepOperator.template_fields
    template_fields_renderers = StepOperator.template_fields_renderers

    def __init__(self, *, python_callable: Any, op_args: Any = None, op_kwargs: Any = None, **kwargs: Any) -> None:
        kwargs_to_upstream = {"step": python_callable, "op_args": op_args, "op_kwargs": op_kwargs}
        super().__init__(
            kwargs_to_upstream=kwargs_to_upstream,
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            **kwargs,
        )


EXECUTORS = ("local", "slurm")


def isthmus_task(
    python_callable: Step[Any, Any] | Callable[..., Any] | None = None,
    multiple_outputs: bool | None = None,
    executor: str = "local",
    **kwargs: Any,
) -> Any:
    """Wrap a step (or plain function, which becomes a step) into an Airflow task.

    Operator keyword arguments (``task_id``, ``retries``, ``isthmus_conn_id``, …) pass through.
    ``executor="slurm"`` runs the step as a Slurm job (:class:`SlurmStepOperator`, whose keyword
    arguments — ``slurm_conn_id``, ``partition``, ``deferrable``, … — are then accepted too); the default
    ``"local"`` runs it in the Airflow worker.
    """
    if executor == "slurm":
        return slurm_task(python_callable, multiple_outputs=multiple_outputs, **kwargs)
    if executor != "local":
        what = getattr(python_callable, "name", None) or getattr(python_callable, "__name__", None)
        raise ValueError(
            f"@task.isthmus{f' for step {what!r}' if what else ''}: executor={executor!r} is not one of "
            f"{', '.join(map(repr, EXECUTORS))}; use executor='slurm' to run the step as a Slurm job"
        )

    def build(fn: Step[Any, Any] | Callable[..., Any]) -> Any:
        step = as_step(fn)
        multi = multiple_outputs if multiple_outputs is not None else len(step.output_names) > 1
        return task_decorator_factory(
            python_callable=step,
            multiple_outputs=multi,
            decorated_operator_class=_IsthmusDecoratedOperator,
            **kwargs,
        )

    if python_callable is not None:
        return build(python_callable)
    return build
