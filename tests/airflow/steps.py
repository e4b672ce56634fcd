"""Steps for the mapping and parameter tests, in a module of their own so that Airflow (any process)
and a local run import them by the same path and compute the same cache keys."""

from __future__ import annotations

from isthmus import step


@step
def names() -> list:
    return ["ada", "grace", "edsger"]


@step
def shout(name: str) -> str:
    return name.upper() + "!"


@step
def join(words: list) -> str:
    return " ".join(words)


@step
def count(items: list) -> int:
    return len(items)


@step
def settings() -> dict:
    return {"uri": "not a list", "size": 3}


@step
def line_count(text: str) -> int:
    return text.count("\n")
