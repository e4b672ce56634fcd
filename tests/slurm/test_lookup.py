"""``StepRunner.lookup`` and ``StepRunner.cache_key``: what the Slurm submitter uses before it submits."""

from __future__ import annotations

from isthmus.runner import default_runner
from tests.slurm import steps


def test_lookup_misses_without_recording_then_hits_after_a_run(isthmus_home):
    runner = default_runner()
    assert runner.lookup(steps.add, {"a": 1, "b": 2}) is None
    assert runner.metadata.count_runs() == 0
    key = runner.cache_key(steps.add, {"a": 1, "b": 2})
    first = runner.run(steps.add, {"a": 1, "b": 2})
    assert first.cache_key == key and not first.cache_hit
    hit = runner.lookup(steps.add, {"a": 1, "b": 2})
    assert hit is not None and hit.cache_hit and hit.source_step_run_id == first.step_run_id
    assert hit.value == 3
    assert runner.metadata.get_step_run(hit.step_run_id)["cache_hit"]
    assert runner.lookup(steps.add, {"a": 1, "b": 3}) is None
    assert runner.cache_key(steps.add, {"a": 1, "b": 3}) != key


def test_lookup_never_returns_a_deleted_artifact(isthmus_home):
    runner = default_runner()
    first = runner.run(steps.add, {"a": 5, "b": 5})
    path = first.outputs["output"].uri.removeprefix("file://")
    import os

    os.remove(path)
    assert runner.lookup(steps.add, {"a": 5, "b": 5}) is None
