"""The isthmus Airflow provider: portable isthmus steps as Airflow 3 tasks (hooks, operators, ``@task.isthmus``)."""

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: importing the provider package must stay cheap for Airflow
    if name == "StepOperator":
        from isthmus_airflow.operators.step import StepOperator

        return StepOperator
    if name == "IsthmusHook":
        from isthmus_airflow.hooks.isthmus import IsthmusHook

        return IsthmusHook
    if name == "isthmus_task":
        from isthmus_airflow.decorators.isthmus import isthmus_task

        return isthmus_task
    raise AttributeError(name)
