"""Flyte 2 tasks for the tests (an importable module, as in a real project)."""

from __future__ import annotations

import flyte

from isthmus_flyte2 import isthmus_task
from tests.flyte import flyte_steps as fs

env = flyte.TaskEnvironment(name="tests_f2")

make_numbers = isthmus_task(fs.make_numbers, env=env)
total = isthmus_task(fs.total, env=env)
explode = isthmus_task(fs.explode, env=env)
stats = isthmus_task(fs.stats, env=env)


@env.task
def summed(n: int = 3) -> int:
    return total(numbers=make_numbers(n=n))


@env.task
def failing(n: int = 2) -> int:
    return explode(n=total(numbers=make_numbers(n=n)))


@env.task
async def async_summed(n: int = 3) -> tuple[int, float]:
    numbers = await make_numbers.aio(n=n)
    return await stats.aio(numbers=numbers)
