"""The example ML pipeline as a Flyte workflow, built from the same steps as the local and Airflow runs.

    pyflyte run dags_examples/flyte_ml_pipeline.py ml_pipeline --n_estimators 50

Each step becomes a Flyte ``python-task`` that runs through the isthmus StepRunner: a step computed
under Airflow or locally (``python -m dags_examples.local_ml_pipeline``) against the same isthmus store
is a cache hit here, and the other way round. ``train_task`` shows a single step as a task built in
this module; the isthmus task resolver rebuilds it from ``dags_examples.steps:train`` in a container.
"""

from __future__ import annotations

from flytekit import workflow

from dags_examples import steps
from flytekitplugins.isthmus import isthmus_task

# The whole pipeline, one task per step (resources, retries and cache policies come from the steps).
ml_pipeline = steps.ml_pipeline.to_flyte_workflow(enable_deck=True)

# Single steps as tasks, for hand-written workflows.
ingest_task = isthmus_task(steps.ingest)
featurize_task = isthmus_task(steps.featurize)
train_task = isthmus_task(steps.train)
evaluate_task = isthmus_task(steps.evaluate)


@workflow
def hand_written(n_estimators: int = 100, seed: int = 0) -> dict:
    """The same pipeline wired by hand from isthmus tasks."""
    raw = ingest_task()
    feats = featurize_task(raw=raw)
    model = train_task(features=feats, n_estimators=n_estimators, seed=seed)
    return evaluate_task(model=model, features=feats, seed=seed)
