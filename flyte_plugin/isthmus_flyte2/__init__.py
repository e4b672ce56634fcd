"""isthmus steps as Flyte 2 tasks (the ``flyte`` 2.x SDK; extra ``flyte2``).

    import flyte
    from isthmus_flyte2 import isthmus_task

    env = flyte.TaskEnvironment(name="ml")
    train = isthmus_task(steps.train, env=env)   # a Flyte 2 task of env, running the step

Each task runs its step through the isthmus StepRunner: cached (a result computed locally, in Airflow
or by flytekit is a hit here, and the other way round), recorded under the pipeline run of its Flyte 2
run, and closed like flytekit's hand-written workflows (:mod:`isthmus.run_closing`). Nothing here
imports flytekit.
"""

from __future__ import annotations

from isthmus_flyte2.resources import flyte2_resources
from isthmus_flyte2.task import SUMMARY_LOGGER, isthmus_task

__all__ = ["SUMMARY_LOGGER", "flyte2_resources", "isthmus_task"]
