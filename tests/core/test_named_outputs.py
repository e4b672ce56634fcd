"""Output names from ``Annotated[X, "name"]`` return annotations (single outputs and tuples)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NamedTuple

import pytest

from isthmus import pipeline, step
from isthmus.errors import StepDefinitionError
from tests.helpers import run_python, write_module


@step
def load(n: int) -> Annotated[list, "dataset_trn"]:
    return list(range(n))


@step
def split(rows: list) -> tuple[Annotated[list, "train"], Annotated[list, "test"]]:
    return rows[:-1], rows[-1:]


@step
def partly(n: int) -> tuple[Annotated[int, "low"], int, Annotated[int, 3]]:
    return n, n + 1, n + 2


@step(outputs=["first", "second"])
def explicit(n: int) -> tuple[Annotated[int, "a"], Annotated[int, "b"]]:
    return n, n


@step
def not_a_name(n: int) -> Annotated[int, {"unit": "rows"}]:
    return n


class Pair(NamedTuple):
    left: int
    right: int


@step
def annotated_namedtuple(n: int) -> Annotated[Pair, 42]:
    return Pair(n, n)


@pipeline
def flow(n: int = 4):
    parts = split(load(n))
    return {"train": parts[0], "test": parts[1]}


def test_annotated_names_name_outputs() -> None:
    assert load.output_names == ("dataset_trn",)
    assert split.output_names == ("train", "test")
    assert partly.output_names == ("low", "output_1", "output_2")
    assert explicit.output_names == ("first", "second")
    assert not_a_name.output_names == ("output",)
    assert annotated_namedtuple.output_names == ("left", "right")


def test_named_outputs_through_runs_and_pipelines() -> None:
    result = load.run(3)
    assert list(result.outputs) == ["dataset_trn"] and result.load("dataset_trn") == [0, 1, 2]
    run = flow.run()
    assert list(run.steps["split"].outputs) == ["train", "test"]
    assert run.outputs == {"train": [0, 1, 2], "test": [3]}


@pytest.mark.parametrize("names", [("a b",), ("same", "same")])
def test_bad_annotated_names_are_one_line_errors(names: tuple[str, ...]) -> None:
    ret: Any = tuple[tuple(Annotated[int, n] for n in names)] if len(names) > 1 else Annotated[int, names[0]]

    def bad(n: int) -> Any:
        return n

    bad.__annotations__["return"] = ret
    s = step(bad)
    with pytest.raises(StepDefinitionError, match="step 'bad': output names") as info:
        _ = s.output_names
    assert "\n" not in str(info.value)


MODULE = """
from typing import Annotated
from isthmus import step

@step
def make(n: int) -> Annotated[list, "{name}"]:
    return list(range(n))
"""

RUN = """
import json
from proj_named import make
r = make.run(3)
print(json.dumps({"hit": r.cache_hit, "outputs": list(r.outputs)}))
"""


def test_renaming_an_annotated_output_misses_in_a_fresh_process(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "proj_named", MODULE.replace("{name}", "dataset_trn"))
    env = {"ISTHMUS_HOME": str(isthmus_home)}
    assert run_python(RUN, env=env, cwd=tmp_path) == {"hit": False, "outputs": ["dataset_trn"]}
    assert run_python(RUN, env=env, cwd=tmp_path) == {"hit": True, "outputs": ["dataset_trn"]}
    write_module(tmp_path, "proj_named", MODULE.replace("{name}", "dataset_val"))
    assert run_python(RUN, env=env, cwd=tmp_path) == {"hit": False, "outputs": ["dataset_val"]}
