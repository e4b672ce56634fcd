"""Hand-written Flyte workflows of isthmus tasks (no ``to_flyte_workflow``): ``@workflow``, ``@dynamic``,
``eager`` and a launch plan, as a Flyte user writes them. Importable, and runnable with ``pyflyte run``."""

from __future__ import annotations

from flytekit import LaunchPlan, dynamic, eager, workflow

from flytekitplugins.isthmus import isthmus_task
from isthmus import step
from tests.flyte import flyte_steps as fs

make_numbers = isthmus_task(fs.make_numbers)
total = isthmus_task(fs.total)
describe = isthmus_task(fs.describe)
explode = isthmus_task(fs.explode)


@step
def interrupted(n: int) -> int:
    raise KeyboardInterrupt  # what Ctrl-C raises in the step


interrupt = isthmus_task(interrupted)


@workflow
def summed(n: int = 3) -> str:
    return describe(value=total(numbers=make_numbers(n=n)), label="sum")


@workflow
def failing(n: int = 2) -> int:
    return explode(n=total(numbers=make_numbers(n=n)))


@workflow
def stopped(n: int = 1) -> int:
    return interrupt(n=total(numbers=make_numbers(n=n)))


@dynamic
def fan_out(sizes: list[int]) -> list[int]:
    return [total(numbers=make_numbers(n=k)) for k in sizes]


@workflow
def dynamic_sums(sizes: list[int] = [2, 3]) -> list[int]:  # noqa: B006 - a Flyte workflow default
    return fan_out(sizes=sizes)


@dynamic
def fan_out_failing(sizes: list[int]) -> list[int]:
    return [explode(n=total(numbers=make_numbers(n=k))) for k in sizes]


@workflow
def dynamic_failing(sizes: list[int] = [2]) -> list[int]:  # noqa: B006 - a Flyte workflow default
    return fan_out_failing(sizes=sizes)


summed_plan = LaunchPlan.get_or_create(summed, name="tests.flyte.hand_workflows.summed_plan", default_inputs={"n": 4})


@eager
async def eager_sum(n: int = 3) -> str:
    numbers = make_numbers(n=n)
    return describe(value=total(numbers=numbers), label="eager")
