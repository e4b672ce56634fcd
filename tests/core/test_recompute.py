"""Forcing work: ``run(cache=False)`` and ``recompute=[...]`` compute again and cache the fresh result."""

from __future__ import annotations

from pathlib import Path

import pytest

from isthmus.errors import PipelineDefinitionError, StepDefinitionError
from tests.helpers import import_fresh, run_python, write_module

STEPS = """
from pathlib import Path
from isthmus import pipeline, step

LOG = Path(__file__).with_name("calls.log")


def _note(name):
    with LOG.open("a") as f:
        f.write(name + "\\n")


@step
def load(n: int) -> list:
    _note("load")
    return list(range(n))


@step
def train(rows: list, scale: int) -> int:
    _note("train")
    return sum(rows) * scale


@pipeline
def flow(n: int = 3):
    rows = load(n)
    return {"first": train(rows, 1), "second": train(rows, 2)}
"""


def _calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().split() if log.exists() else []


def test_cache_false_recomputes_every_step_and_the_next_run_hits_the_fresh_result(tmp_path: Path) -> None:
    write_module(tmp_path, "rc_steps", STEPS)
    mod = import_fresh(tmp_path, "rc_steps")
    first = mod.flow.run()
    assert first.cache_hits == 0
    assert first.runner.metadata.get_step_run(first.steps["train"].step_run_id)["cache_hit"] is False
    forced = mod.flow.run(cache=False)
    assert forced.cache_hits == 0
    assert _calls(tmp_path) == ["load", "train", "train", "load", "train", "train"]
    assert forced.outputs == {"first": 3, "second": 6}
    third = mod.flow.run()
    assert third.cache_hits == 3
    assert third.steps["load"].source_step_run_id == forced.steps["load"].step_run_id
    assert len(_calls(tmp_path)) == 6


def test_recompute_names_a_step_or_an_invocation(tmp_path: Path) -> None:
    write_module(tmp_path, "rc_steps2", STEPS)
    mod = import_fresh(tmp_path, "rc_steps2")
    mod.flow.run()
    by_step = mod.flow.run(recompute=["train"])
    assert {k: v.cache_hit for k, v in by_step.steps.items()} == {"load": True, "train": False, "train_2": False}
    by_invocation = mod.flow.run(recompute="train_2")
    assert {k: v.cache_hit for k, v in by_invocation.steps.items()} == {"load": True, "train": True, "train_2": False}
    assert _calls(tmp_path) == ["load", "train", "train", "train", "train", "train"]


def test_recompute_of_an_unknown_name_is_a_one_line_error(tmp_path: Path) -> None:
    write_module(tmp_path, "rc_steps3", STEPS)
    mod = import_fresh(tmp_path, "rc_steps3")
    with pytest.raises(PipelineDefinitionError) as info:
        mod.flow.run(recompute=["trian"])
    message = str(info.value)
    assert "\n" not in message
    assert "'flow'" in message and "'trian'" in message and "['load', 'train', 'train_2']" in message
    with pytest.raises(PipelineDefinitionError, match="cache='no'"):
        mod.flow.run(cache="no")
    assert _calls(tmp_path) == []


def test_step_run_with_cache_false_recomputes(tmp_path: Path) -> None:
    write_module(tmp_path, "rc_steps4", STEPS)
    mod = import_fresh(tmp_path, "rc_steps4")
    first = mod.load.run(4)
    assert not first.cache_hit
    forced = mod.load.run(4, cache=False)
    assert not forced.cache_hit and forced.value == [0, 1, 2, 3]
    again = mod.load.run(4)
    assert again.cache_hit and again.source_step_run_id == forced.step_run_id
    assert _calls(tmp_path) == ["load", "load"]
    with pytest.raises(StepDefinitionError, match="cache=0"):
        mod.load.run(4, cache=0)


RUN = """
import json, sys
from rc_proc import flow
run = flow.run(cache=sys.argv[-1] != "force")
print(json.dumps({k: [v.cache_hit, v.step_run_id, v.source_step_run_id] for k, v in run.steps.items()}))
"""


def test_cache_false_across_fresh_processes(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "rc_proc", STEPS)
    env = {"ISTHMUS_HOME": str(isthmus_home)}
    first = run_python(RUN, env=env, cwd=tmp_path)
    forced = run_python(RUN.replace('sys.argv[-1] != "force"', "False"), env=env, cwd=tmp_path)
    third = run_python(RUN, env=env, cwd=tmp_path)
    assert [hit for hit, _, _ in first.values()] == [False, False, False]
    assert [hit for hit, _, _ in forced.values()] == [False, False, False]
    assert {k: v[0] for k, v in third.items()} == {"load": True, "train": True, "train_2": True}
    assert third["load"][2] == forced["load"][1]
    assert third["train_2"][2] == forced["train_2"][1]
    assert _calls(tmp_path) == ["load", "train", "train", "load", "train", "train"]
