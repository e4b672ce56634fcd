"""The isthmus Airflow provider: portable isthmus steps as Airflow 3 tasks (hooks, operators, ``@task.isthmus``)."""

import importlib.metadata

try:  # one version for the three packages: the one of the distribution that ships them (pyproject.toml)
    __version__ = importlib.metadata.version("isthmus")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


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
