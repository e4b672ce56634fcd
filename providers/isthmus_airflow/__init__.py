"""The isthmus Airflow provider: portable isthmus steps as Airflow 3 tasks (hooks, operators, ``@task.isthmus``)."""

__version__ = "0.1.0"
