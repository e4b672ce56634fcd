"""Small steps and pipelines for the flytekit plugin tests (an importable module, as in a real project)."""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

from isthmus import Resources, pipeline, step


@step
def make_numbers(n: int = 3) -> list[int]:
    return list(range(n))


@step
def total(numbers: list[int]) -> int:
    return sum(numbers)


@step
def describe(value: int, label: str = "sum") -> str:
    return f"{label}={value}"


class Stats(NamedTuple):
    count: int
    mean: float


@step
def stats(numbers: list[int]) -> Stats:
    return Stats(len(numbers), sum(numbers) / max(len(numbers), 1))


@pipeline
def small_pipeline(n: int = 3, label: str = "sum"):
    numbers = make_numbers(n)
    value = total(numbers)
    parts = stats(numbers)
    return {"text": describe(value, label=label), "count": parts.count}


@step
def explode(n: int) -> int:
    raise RuntimeError(f"boom <b>{n}</b>")


@pipeline
def failing_pipeline(n: int = 1):
    return explode(total(make_numbers(n)))


@step(
    resources=Resources(
        cpu=0.5,
        memory="3Gi",
        gpu=2,
        gpu_type="A100",
        time_limit="2h",
        node_selector={"pool": "gpu"},
        extra={"tolerations": "nvidia.com/gpu:NoSchedule,team=ml:NoExecute"},
    )
)
def gpu_step(n: int) -> int:
    return n * 2


@step(resources=Resources(cpu=2, memory="512Mi", gpu=1, gpu_type="T4"))
def plain_gpu_step(n: int) -> int:
    return n + 1


@step
def count_rows(frame: pd.DataFrame | None = None, extra: int = 0) -> int:
    return (0 if frame is None else len(frame)) + extra


@step
def triple(n: int):  # no return annotation: its output type is unknown to Flyte
    return n * 3


@step
def plus_one(x: int) -> int:
    return x + 1


@step
def halve(x: float) -> float:
    return x / 2


@step
def show(value) -> str:  # no parameter annotation
    return repr(value)


@pipeline
def loosely_typed(n: int = 2):
    a = plus_one(triple(n))
    return halve(a), show(a), plus_one(a)


@step
def login_with(host: str, value: str) -> int:  # an innocent parameter name
    if value != "ok":
        raise PermissionError(f"login to {host} refused for {value}")
    return 1


@step
def value_length(host: str, value: str) -> int:
    return len(host) + len(value)


@pipeline
def secret_login(host: str, password: str) -> int:
    return login_with(host, password)  # positional: the step never sees the name 'password'


@pipeline
def secret_measure(host: str, password: str) -> int:
    return value_length(host, password)
