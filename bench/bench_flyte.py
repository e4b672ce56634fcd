"""Flyte plugin benchmark: a chain of trivial tasks under flytekit's local executor, plain vs isthmus.

    python bench/bench_flyte.py [--repeat 15]          # ISTHMUS_BENCH_TASKS=20: the chain length

- plain flytekit: ``@task def inc(x: int) -> int`` chained N times in a ``@workflow``;
- isthmus tasks: the same chain of ``isthmus_task(inc)`` (cached and recorded through the StepRunner);
- isthmus pipeline: the chain as a ``@pipeline`` turned into a workflow with ``to_flyte_workflow()``
  (adds its pipeline-run bookkeeping node).

Uncached runs start from a new value each time (every task computes); cached runs repeat one value
(every task is an isthmus cache hit). Prints the median wall time and the time added per task against
plain flytekit in the default configuration first (OpenLineage events to the default file), and in two
more rows with ``ISTHMUS_LINEAGE=off``. Tasks do no work: the table shows the whole overhead. Nothing
here passes or fails.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import tempfile
import time

os.environ.setdefault("ISTHMUS_HOME", tempfile.mkdtemp(prefix="isthmus-bench-flyte-"))

from flytekit import task, workflow  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from flytekitplugins.isthmus import isthmus_task  # noqa: E402
from isthmus import lineage, pipeline, step  # noqa: E402

console = Console(width=130)
N_TASKS = int(os.environ.get("ISTHMUS_BENCH_TASKS", "20"))


def inc_fn(x: int) -> int:
    return x + 1


plain_inc = task(inc_fn)
inc = step(inc_fn, name="inc")
isthmus_inc = isthmus_task(inc, name="bench.isthmus_inc")


@workflow
def plain_chain(x: int = 0) -> int:
    for _ in range(N_TASKS):
        x = plain_inc(x=x)
    return x


@workflow
def isthmus_chain(x: int = 0) -> int:
    for _ in range(N_TASKS):
        x = isthmus_inc(x=x)
    return x


@pipeline
def chain(x: int = 0):
    for _ in range(N_TASKS):
        x = inc(x)
    return x


pipeline_chain = chain.to_flyte_workflow(name="bench.pipeline_chain")


def _timed(fn) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    logging.getLogger("isthmus").setLevel(logging.WARNING)
    n = N_TASKS
    # The default configuration first (the lineage hook chosen as in a user's process); lineage off beside.
    lineage.set_lineage_hook(None)

    for wf in (plain_chain, isthmus_chain, pipeline_chain):  # warm-up: schema, fingerprints, environment
        assert wf(x=-1000) == n - 1000
    chain.run(x=-1000)
    fixed = {"tasks": -2000, "pipeline": -3000, "core": -4000}
    isthmus_chain(x=fixed["tasks"])
    pipeline_chain(x=fixed["pipeline"])
    chain.run(x=fixed["core"])

    # Interleaved rounds: a busy machine slows every variant of a round alike; the added time per task
    # is taken per round (paired with that round's plain run), then the median over rounds.
    counter = iter(range(1, 10**9))
    variants = {
        "plain": lambda: plain_chain(x=next(counter) * 1000),
        "python": lambda: [inc_fn(i) for i in range(n)],
        "tasks uncached": lambda: isthmus_chain(x=next(counter) * 1000),
        "tasks cached": lambda: isthmus_chain(x=fixed["tasks"]),
        "pipeline uncached": lambda: pipeline_chain(x=next(counter) * 1000),
        "pipeline cached": lambda: pipeline_chain(x=fixed["pipeline"]),
        "core uncached": lambda: chain.run(x=next(counter) * 1000),
        "core cached": lambda: chain.run(x=fixed["core"]),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeat):
        for name, fn in variants.items():
            times[name].append(_timed(fn))

    hook = lineage.get_lineage_hook()
    if hasattr(hook, "flush"):
        hook.flush(60)
    default_hook = type(hook).__name__
    lineage.set_lineage_hook(lineage.NoopLineage())
    fixed["off"] = -5000
    isthmus_chain(x=fixed["off"])
    lineage_off = {
        "plain (lineage-off rounds)": lambda: plain_chain(x=next(counter) * 1000),
        "tasks uncached, lineage off": lambda: isthmus_chain(x=next(counter) * 1000),
        "tasks cached, lineage off": lambda: isthmus_chain(x=fixed["off"]),
    }
    times.update({k: [] for k in lineage_off})
    for _ in range(args.repeat):
        for name, fn in lineage_off.items():
            times[name].append(_timed(fn))
    lineage.set_lineage_hook(None)

    def added(name: str, base: str) -> list[float]:
        return [(a - b) / n * 1000 for a, b in zip(times[name], times[base], strict=True)]

    med = statistics.median
    table = Table(
        title=f"flytekit local execution, chain of {n} trivial tasks (SQLite, {args.repeat} interleaved rounds; "
        f"default configuration: lineage hook {default_hook})"
    )
    for col in ("run", "median wall time", "added per task vs plain (median)", "spread over rounds", "target"):
        table.add_column(col)
    plain = times["plain"]
    table.add_row(
        "plain flytekit tasks (peer)",
        f"{med(plain) * 1000:.1f} ms",
        f"({med(plain) / n * 1000:.2f} ms per task)",
        f"{min(plain) * 1000:.1f} .. {max(plain) * 1000:.1f} ms",
        "-",
    )
    labels = {
        "tasks uncached": "isthmus tasks, uncached (default)",
        "tasks cached": "isthmus tasks, all cached (default)",
        "pipeline uncached": "isthmus pipeline workflow, uncached (default)",
        "pipeline cached": "isthmus pipeline workflow, all cached (default)",
    }
    for key, label in labels.items():
        per = added(key, "plain")
        table.add_row(
            label,
            f"{med(times[key]) * 1000:.1f} ms",
            f"{med(per):.2f} ms",
            f"{min(per):.2f} .. {max(per):.2f} ms",
            "<= 3 ms",
        )
    lineage_labels = {
        "tasks uncached, lineage off": "isthmus tasks, uncached, ISTHMUS_LINEAGE=off",
        "tasks cached, lineage off": "isthmus tasks, all cached, ISTHMUS_LINEAGE=off",
    }
    for key, label in lineage_labels.items():
        per = added(key, "plain (lineage-off rounds)")
        table.add_row(
            label, f"{med(times[key]) * 1000:.1f} ms", f"{med(per):.2f} ms", f"{min(per):.2f} .. {max(per):.2f} ms", "-"
        )
    console.print(table)

    core = Table(title="Where the added time goes: the same chain through the isthmus StepRunner alone (no Flyte)")
    for col in ("run", "median wall time", "StepRunner per step vs plain Python", "plugin's own share per task"):
        core.add_column(col)
    for kind in ("uncached", "cached"):
        runner_per = added(f"core {kind}", "python")
        flyte_per = added(f"tasks {kind}", "plain")
        own = [f - r for f, r in zip(flyte_per, runner_per, strict=True)]
        core.add_row(
            f"chain.run(), {'all cached' if kind == 'cached' else kind}",
            f"{med(times[f'core {kind}']) * 1000:.1f} ms",
            f"{med(runner_per):.2f} ms",
            f"{med(own):.2f} ms",
        )
    console.print(core)


if __name__ == "__main__":
    main()
