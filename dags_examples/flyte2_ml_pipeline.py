"""The example ML pipeline as Flyte 2 tasks (the ``flyte`` 2.x SDK), from the same steps as the local,
Airflow and flytekit runs:

    flyte run --local dags_examples/flyte2_ml_pipeline.py ml_pipeline --n_estimators 50

Each step is a task of the ``ml`` environment that runs through the isthmus StepRunner, so a step
already computed locally, under Airflow or by flytekit against the same isthmus store is a cache hit
here, and the other way round. ``ml_pipeline`` is a plain Flyte 2 task that calls them.
"""

from __future__ import annotations

import flyte

from dags_examples import steps
from isthmus_flyte2 import isthmus_task

env = flyte.TaskEnvironment(name="ml")

ingest = isthmus_task(steps.ingest, env=env)
featurize = isthmus_task(steps.featurize, env=env)
train = isthmus_task(steps.train, env=env)  # Resources(cpu=2, memory="2Gi") -> flyte.Resources
evaluate = isthmus_task(steps.evaluate, env=env)


@env.task
def ml_pipeline(n_estimators: int = 100, seed: int = 0) -> dict:
    """The pipeline, as a Flyte 2 task calling the step tasks."""
    raw = ingest()
    feats = featurize(raw=raw)
    model = train(features=feats, n_estimators=n_estimators, seed=seed)
    return evaluate(model=model, features=feats, seed=seed)


if __name__ == "__main__":
    flyte.init()
    print(flyte.run(ml_pipeline, n_estimators=50).outputs())
