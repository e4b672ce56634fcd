"""What the ``@task.isthmus*`` TaskFlow decorators share: the decorated function is the operator's step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory

from isthmus.step import Step, as_step


class StepDecoratedOperator(DecoratedOperator):
    """First base of a TaskFlow operator class ``(StepDecoratedOperator, <step operator>)``: the decorated
    callable becomes the step operator's ``step``; the call's arguments its arguments. (An operator base,
    so Airflow's operator metaclass wraps its ``__init__`` as it does every operator's.)"""

    def __init__(self, *, python_callable: Any, op_args: Any = None, op_kwargs: Any = None, **kwargs: Any) -> None:
        kwargs_to_upstream = {"step": python_callable, "op_args": op_args, "op_kwargs": op_kwargs}
        super().__init__(
            kwargs_to_upstream=kwargs_to_upstream,
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            **kwargs,
        )


def step_task(
    operator_class: type,
    python_callable: Step[Any, Any] | Callable[..., Any] | None,
    multiple_outputs: bool | None,
    kwargs: dict[str, Any],
) -> Any:
    """``task.<decorator>(fn)`` or ``@task.<decorator>(...)`` building ``operator_class`` tasks for a step
    (a plain function becomes one); several outputs push one XCom each unless ``multiple_outputs`` says."""

    def build(fn: Step[Any, Any] | Callable[..., Any]) -> Any:
        step = as_step(fn)
        multi = multiple_outputs if multiple_outputs is not None else len(step.output_names) > 1
        return task_decorator_factory(
            python_callable=step,
            multiple_outputs=multi,
            decorated_operator_class=operator_class,
            **kwargs,
        )

    if python_callable is not None:
        return build(python_callable)
    return build
