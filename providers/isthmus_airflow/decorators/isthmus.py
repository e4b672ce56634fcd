"""``@task.isthmus``: TaskFlow for isthmus steps (``task.isthmus(train)`` or ``@task.isthmus`` on a function)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from isthmus.step import Step
from isthmus_airflow.operators.slurm import slurm_task
from isthmus_airflow.operators.step import StepOperator
from isthmus_airflow.taskflow import StepDecoratedOperator, step_task


class _IsthmusDecoratedOperator(StepDecoratedOperator, StepOperator):  # type: ignore[misc]  # op_args/op_kwargs: list/dict here
    """A StepOperator built by ``@task.isthmus``; call arguments are the step's arguments."""

    custom_operator_name = "@task.isthmus"
    template_fields = StepOperator.template_fields
    template_fields_renderers = StepOperator.template_fields_renderers


EXECUTORS = ("local", "slurm", "kubernetes")


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
    ``"local"`` runs it in the Airflow worker. ``executor="kubernetes"`` runs it in a pod
    (:class:`~isthmus_airflow.operators.kubernetes.KubernetesStepOperator`: ``image``, ``namespace``,
    ``kubernetes_conn_id``, ...).
    """
    if executor == "slurm":
        return slurm_task(python_callable, multiple_outputs=multiple_outputs, **kwargs)
    if executor in ("kubernetes", "k8s"):
        from isthmus_airflow.operators.kubernetes import kubernetes_task  # the cncf provider, only when asked for

        return kubernetes_task(python_callable, multiple_outputs=multiple_outputs, **kwargs)
    if executor != "local":
        what = getattr(python_callable, "name", None) or getattr(python_callable, "__name__", None)
        raise ValueError(
            f"@task.isthmus{f' for step {what!r}' if what else ''}: executor={executor!r} is not one of "
            f"{', '.join(map(repr, EXECUTORS))}; use 'slurm' for a Slurm job, 'kubernetes' for a pod"
        )

    return step_task(_IsthmusDecoratedOperator, python_callable, multiple_outputs, kwargs)
