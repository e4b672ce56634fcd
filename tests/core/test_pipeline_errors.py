"""A pipeline body that uses a step output's value, or calls itself, fails at build time with a message
naming the pipeline, the call and the fix."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from isthmus import pipeline, step
from isthmus.errors import PipelineDefinitionError, StepDefinitionError
from isthmus.pipeline import OutputHandle, OutputHandleMisuse


@step
def load(n: int) -> list:
    return list(range(n))


@step
def total(xs: list) -> int:
    return sum(xs)


def plain_helper(rows: Any) -> Any:
    return [r * 2 for r in rows.values]  # touches the output like a DataFrame


FIX = "do this inside a step: decorate the function that does it with @step"

CASES: dict[str, tuple[Callable[[Any], Any], str]] = {
    "len": (lambda h: len(h), "len(load.output)"),
    "add": (lambda h: h + 1, "load.output + int"),
    "radd": (lambda h: 1 + h, "int + load.output"),
    "mul": (lambda h: h * 2.0, "load.output * float"),
    "neg": (lambda h: -h, "-(load.output)"),
    "str": (lambda h: str(h), "str(load.output)"),
    "fstring": (lambda h: f"rows: {h}", "format(load.output)"),
    "float": (lambda h: float(h), "float(load.output)"),
    "index": (lambda h: h[0], "load.output[0]"),
    "attribute": (lambda h: h.shape, "load.output.shape"),
    "plain function": (plain_helper, "load.output.values"),
    "compare": (lambda h: h > 3, "load.output > int"),
    "equals": (lambda h: h == "x", "load.output == str"),
    "contains": (lambda h: 3 in h, "... in load.output"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_using_an_output_value_names_the_pipeline_the_call_and_the_fix(case: str) -> None:
    use, call = CASES[case]

    def body(n: int = 3) -> Any:
        return total(use(load(n)))

    body.__name__ = f"uses_{case.replace(' ', '_')}"
    p = pipeline(body)
    with pytest.raises(OutputHandleMisuse) as info:
        p.run(n=3)
    message = str(info.value)
    assert message.startswith(f"pipeline 'uses_{case.replace(' ', '_')}': {call}"), message
    assert "step 'load'" in message and FIX in message
    assert isinstance(info.value, (StepDefinitionError, TypeError, AttributeError))


def test_truth_and_unpacking_name_the_pipeline() -> None:
    @pipeline
    def branches(n: int = 3):
        xs = load(n)
        return total(xs) if xs else None

    @pipeline
    def unpacks(n: int = 3):
        a, b = load(n)
        return total(a)

    with pytest.raises(PipelineDefinitionError, match="^pipeline 'branches': output 'output' of step 'load'"):
        branches.run()
    with pytest.raises(PipelineDefinitionError, match="^pipeline 'unpacks': output load.output is a single"):
        unpacks.run()


@pipeline
def recursive(n: int = 2):
    return recursive(n)


@pipeline
def ping(n: int = 2):
    return pong(n)


@pipeline
def pong(n: int = 2):
    return ping(n)


@pipeline
def inner(n: int = 2):
    return total(load(n))


@pipeline
def outer(n: int = 2):
    return inner(n + 1)


def test_a_pipeline_that_calls_itself_fails_with_the_chain() -> None:
    with pytest.raises(PipelineDefinitionError, match=r"pipeline 'recursive' calls itself \(recursive -> recursive\)"):
        recursive.run()
    with pytest.raises(PipelineDefinitionError, match=r"pipeline 'ping' calls itself \(ping -> pong -> ping\)"):
        ping.compile()
    with pytest.raises(PipelineDefinitionError, match="move the recursion into a step"):
        pong.run()


def test_pipelines_may_call_other_pipelines_and_handles_stay_usable() -> None:
    assert outer.run(n=3).outputs == 6
    assert inner(4) == 6  # outside a build, a pipeline is its plain function
    handle = OutputHandle("load", "output", "p")
    assert copy.deepcopy(handle) == handle and pickle.loads(pickle.dumps(handle)) == handle
    assert {handle: 1}[OutputHandle("load", "output")] == 1
    assert not hasattr(handle, "shape") and handle != None  # noqa: E711 - probing libraries keep working
    assert "load" in repr(handle) and not callable(handle)


def test_repeated_steps_are_named_in_call_order_around_a_step_already_named_like_a_repeat() -> None:
    """``name``, then the first free ``name_2``, ``name_3`` …: the tracer resumes its search where the last
    one ended, and a step whose own name takes a suffix is skipped over."""
    from isthmus import pipeline, step

    @step
    def a() -> int:
        return 1

    @step(name="a_3")
    def other() -> int:
        return 2

    @pipeline
    def repeats() -> list[int]:
        return [a(), other(), a(), a(), a()]

    assert list(repeats.compile().nodes) == ["a", "a_3", "a_2", "a_4", "a_5"]
