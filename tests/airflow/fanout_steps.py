"""Fan-out pipelines for the Airflow tests, in a module of their own so that ``dag.test()``, a live deployment
and a local run in a fresh process import the same steps by the same path (and compute the same keys).

Every step notes its call in the file named by ``ISTHMUS_TEST_CALLS`` (when set), to tell what was
computed from what was a cache hit by the step bodies themselves."""

from __future__ import annotations

import os
from typing import Annotated

from isthmus import pipeline, step

MOVIES_CSV = "heat,action,4\nup,animation,5\nalien,horror,3\nrocky,action,2\n"


def _note(name: str) -> None:
    path = os.environ.get("ISTHMUS_TEST_CALLS")
    if path:
        with open(path, "a") as f:
            f.write(name + "\n")


@step
def list_genres(csv: str, top: int) -> list[str]:
    _note("list_genres")
    return sorted({line.split(",")[1] for line in csv.strip().splitlines()})[:top]


@step
def genre_stats(csv: str, genre: str) -> dict:
    _note("genre_stats:" + genre)
    rows = [r.split(",") for r in csv.strip().splitlines() if r.split(",")[1] == genre]
    return {"genre": genre, "n": len(rows), "mean": sum(float(r[2]) for r in rows) / len(rows)}


@step
def train(lr: float) -> float:
    _note(f"train:{lr}")
    return round(1 - lr, 3)


@step
def pick_best(scores: list) -> float:
    _note("pick_best")
    return max(scores)


@step
def join_stats(stats: list, best: float) -> dict:
    _note("join_stats")
    return {"genres": [s["genre"] for s in stats], "best": best}


@pipeline
def movie_stats(csv: str = MOVIES_CSV, top: int = 2):
    """Statistics per genre (one step run per genre), and the best of two trainings."""
    genres = list_genres(csv, top)
    per_genre = genre_stats.partial(csv=csv).map(genre=genres)
    best = [train(lr=lr) for lr in (0.01, 0.1)]
    return join_stats(per_genre, pick_best(best))


# -- every kind of mapped argument ----------------------------------------------------------------


@step
def numbers(n: int) -> list[int]:
    _note(f"numbers:{n}")
    return list(range(n))


@step
def square(x: int, offset: int = 0) -> int:
    _note(f"square:{x}+{offset}")
    return x * x + offset


@step
def total(values: list) -> int:
    _note("total")
    return sum(values)


@step
def describe(x: int) -> tuple[Annotated[int, "value"], Annotated[str, "label"]]:
    return x, f"#{x}"


@step
def halves(values: list) -> tuple[Annotated[list, "low"], Annotated[list, "high"]]:
    middle = len(values) // 2
    return values[:middle], values[middle:]


@step
def labels(values: list, names: list) -> list:
    return [f"{n}={v}" for v, n in zip(values, names, strict=True)]


@step
def sizes(lists: list) -> list:
    return [len(items) for items in lists]


@pipeline
def every_map(n: int = 3, xs: list = [5, 6]):  # noqa: B006 - a pipeline parameter's default, never mutated
    """Mapped arguments of every kind, zipped, and mapped results mapped again."""
    nums = numbers(n)
    zipped = square.map(x=nums, offset=square.map(x=nums))  # two step outputs, zipped
    mixed = square.map(x=nums, offset=[10, 20, 30])  # a step output zipped with literals
    again = square.map(x=zipped)  # the results of a mapped step, mapped again
    from_param = square.map(x=xs)  # a pipeline parameter
    literal = square.map(x=[1, 2], offset=[3, 4])  # literals only
    handles = square.partial(offset=1).map(x=[square(x=2), square(x=3)])  # a list of step outputs
    value, label = describe.map(x=nums)  # a mapped step with two outputs: each maps and joins
    low, high = halves(nums)  # one output of a step with two outputs
    return {
        "zipped": total(zipped),
        "mixed": total(mixed),
        "again": total(again),
        "from_param": total(from_param),
        "literal": total(literal),
        "handles": total(handles),
        "labels": labels(value, label),
        "relabelled": total(square.map(x=value)),
        "high": total(square.map(x=high)),
        "parts": total([total(low), total(high)]),
        "sizes": sizes([nums, low]),  # a list output that is mapped over, in a list of outputs
    }


@pipeline
def empty_map(n: int = 0):
    """Zero items: no step run for the mapped steps; the joins get empty lists."""
    squares = square.map(x=numbers(n))
    return {"total": total(squares), "again": total(square.map(x=squares))}


@pipeline
def uneven_map(xs: list = [1]):  # noqa: B006 - a pipeline parameter's default, never mutated
    """Lists of different lengths zipped, and a DAG param that must hold a list: errors, never a shorter map."""
    return {"uneven": total(square.map(x=numbers(2), offset=numbers(3))), "param": total(square.map(x=xs))}
