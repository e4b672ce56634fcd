"""Steps for the gc and lineage tests, importable by a fresh process (``python -m tests.core.gc_steps N``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from isthmus import pipeline, step


@step
def make(n: int) -> list:
    return list(range(n))


@step
def count(items: list) -> int:
    return len(items)


@step
def double(value: int, token: str = "") -> int:
    return 2 * value


@step
def keep_file(path: Path) -> Path:
    return path


@pipeline
def chain(n: int = 3):
    return double(count(make(n)))


def main(args: list[str]) -> None:
    """Run ``chain`` for each n given; print one JSON line per run (how each step ran, the result)."""
    for arg in args:
        run = chain.run(n=int(arg))
        steps = {name: r.cache_hit for name, r in run.steps.items()}
        print(json.dumps({"n": int(arg), "id": run.id, "hits": steps, "value": run.outputs}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
