"""isthmus against its peers in one table: a chain of trivial steps and a fan-out of trivial steps.

    python bench/bench_peers.py [--steps 200] [--items 100] [--rounds 3]
                                [--metaflow-python /tmp/mfenv/bin/python] [--zenml-python /tmp/zenmlenv/bin/python]

Every run is a whole process (interpreter start and imports included), rounds interleave all variants,
the table shows medians and the ratio to isthmus in its default configuration. Workloads:

- chain: ``--steps`` steps, each ``x + 1`` of the previous one; run uncached (a fresh value) and, where
  the tool caches, again with the same value (all hits);
- fan-out: one step makes ``--items`` numbers, a mapped step adds one to each, a last step sums them.

Peers, each in an environment of its own (none is a dependency of isthmus):

- plain Python (the floor) and flytekit's local runner (records nothing, caches nothing here): the project venv;
- Metaflow: ``uv venv /tmp/mfenv && uv pip install --python /tmp/mfenv/bin/python metaflow``;
- ZenML: ``uv venv /tmp/zenmlenv && uv pip install --python /tmp/zenmlenv/bin/python "zenml[local]"`` (its local
  SQLite store is made in a fresh ``ZENML_CONFIG_PATH`` per run).

A peer whose interpreter is missing or cannot import it is skipped with the reason printed. Nothing here
passes or fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ISTHMUS = """
import sys
from isthmus import pipeline, step

@step
def inc(x: int) -> int:
    return x + 1

@step
def items(n: int) -> list[int]:
    return list(range(n))

@step
def total(values: list) -> int:
    return sum(values)

@pipeline
def chain(x: int, n: int):
    for _ in range(n):
        x = inc(x)
    return x

@pipeline
def fan(n: int):
    return total(inc.map(x=items(n)))

kind, n, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
run = chain.run(x=start, n=n) if kind == "chain" else fan.run(n=n)
print(run.outputs)
"""

PLAIN = """
import sys
kind, n, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def inc(x):
    return x + 1
if kind == "chain":
    x = start
    for _ in range(n):
        x = inc(x)
    print(x)
else:
    print(sum(inc(i) for i in range(n)))
"""

FLYTE = """
import sys
from flytekit import map_task, task, workflow, dynamic

kind, N, START = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

@task
def inc(x: int) -> int:
    return x + 1

@task
def items(n: int) -> list[int]:
    return list(range(n))

@task
def total(values: list[int]) -> int:
    return sum(values)

@workflow
def chain(x: int) -> int:
    for _ in range(N):
        x = inc(x=x)
    return x

@workflow
def fan(n: int) -> int:
    return total(values=map_task(inc)(x=items(n=n)))

print(chain(x=START) if kind == "chain" else fan(n=N))
"""

METAFLOW_HEAD = """
import os
from metaflow import FlowSpec, step

KIND, N, START = os.environ["BENCH_KIND"], int(os.environ["BENCH_N"]), int(os.environ["BENCH_START"])


class FanFlow(FlowSpec):
    @step
    def start(self):
        self.items = list(range(N))
        self.next(self.inc, foreach="items")

    @step
    def inc(self):
        self.value = self.input + 1
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(i.value for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        print(self.total)


class ChainFlow(FlowSpec):
    @step
    def start(self):
        self.x = START
        self.next(self.s0)
"""

# Metaflow has no loops in a flow's graph: its chain is written out step by step.
METAFLOW_CHAIN_STEP = """
    @step
    def s{i}(self):
        self.x += 1
        self.next(self.{nxt})
"""

METAFLOW_TAIL = """
    @step
    def end(self):
        print(self.x)


if __name__ == "__main__":
    FanFlow() if KIND == "fan" else ChainFlow()
"""

ZENML = """
import sys
from zenml import pipeline, step

kind, N, START = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

@step
def inc(x: int) -> int:
    return x + 1

@pipeline(enable_cache=True)
def chain(x: int):
    for i in range(N):
        x = inc(x, id=f"inc_{i}")

chain(x=START)
print("done")
"""


def metaflow_source(n: int) -> str:
    """The Metaflow flows: the chain's ``n`` steps written out, and the fan-out."""
    steps = "".join(METAFLOW_CHAIN_STEP.format(i=i, nxt=f"s{i + 1}" if i + 1 < n else "end") for i in range(n))
    return METAFLOW_HEAD + steps + METAFLOW_TAIL


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}")
    return elapsed


def _usable(python: str | None, module: str, hint: str) -> str | None:
    """None when ``python`` can import ``module``, else why not."""
    if not python:
        return f"no interpreter given ({hint})"
    if not (shutil.which(python) or Path(python).exists()):
        return f"{python} does not exist ({hint})"
    proc = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"{python} cannot import {module}: {proc.stderr.strip().splitlines()[-1:]} ({hint})"
    return None


Variant = tuple[list[str], Callable[[], dict[str, str]]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--metaflow-python", default=os.environ.get("METAFLOW_PYTHON", "/tmp/mfenv/bin/python"))
    parser.add_argument("--zenml-python", default=os.environ.get("ZENML_PYTHON", "/tmp/zenmlenv/bin/python"))
    parser.add_argument("--only", nargs="*", help="run only variants whose name contains one of these words")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    work = Path(tempfile.mkdtemp(prefix="isthmus-bench-peers-"))
    for name, source in {
        "isthmus_run.py": ISTHMUS,
        "plain_run.py": PLAIN,
        "flyte_run.py": FLYTE,
        "zenml_run.py": ZENML,
    }.items():
        (work / name).write_text(textwrap.dedent(source))
    (work / "metaflow_run.py").write_text(metaflow_source(args.steps))
    py = sys.executable
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("ISTHMUS_", "OPENLINEAGE", "ZENML_", "METAFLOW_"))
    }
    base = {**clean, "PYTHONPATH": os.pathsep.join([str(work), str(REPO / "common")])}
    counter = iter(range(1, 10**9))

    def fresh(extra: dict[str, str] | None = None) -> Callable[[], dict[str, str]]:
        return lambda: {**base, "ISTHMUS_HOME": str(work / f"home-{next(counter)}"), **(extra or {})}

    def cached_home(name: str, extra: dict[str, str] | None = None) -> Callable[[], dict[str, str]]:
        return lambda: {**base, "ISTHMUS_HOME": str(work / f"cached-{name}"), **(extra or {})}

    skipped: list[str] = []
    workloads: dict[str, dict[str, Variant]] = {"chain": {}, "fan-out": {}}
    for kind, n in (("chain", args.steps), ("fan-out", args.items)):
        k = "chain" if kind == "chain" else "fan"
        rows = workloads[kind]

        def uncached(
            script: str, env: Callable[[], dict[str, str]], python: str = py, k: str = k, n: int = n
        ) -> Variant:
            return ([python, str(work / script), k, str(n), "START"], env)

        rows["plain Python (floor)"] = uncached("plain_run.py", lambda: base)
        rows["isthmus, default, uncached"] = uncached("isthmus_run.py", fresh())
        rows["isthmus, default, all cached"] = ([py, str(work / "isthmus_run.py"), k, str(n), "7"], cached_home(k))
        rows["isthmus, lineage off, uncached"] = uncached("isthmus_run.py", fresh({"ISTHMUS_LINEAGE": "off"}))
        rows["isthmus, lineage off, all cached"] = (
            [py, str(work / "isthmus_run.py"), k, str(n), "7"],
            cached_home(k + "-off", {"ISTHMUS_LINEAGE": "off"}),
        )
        if _usable(py, "flytekit", "install the project's flyte extra") is None:
            rows["flytekit local (records nothing)"] = uncached("flyte_run.py", lambda: base)
        elif kind == "chain":
            skipped.append(f"flytekit: {_usable(py, 'flytekit', 'install the flyte extra')}")
        why = _usable(
            args.metaflow_python,
            "metaflow",
            "uv venv /tmp/mfenv && uv pip install --python /tmp/mfenv/bin/python metaflow",
        )
        if why is None:
            mf_env = lambda k=k, n=n: {  # noqa: E731
                **clean,
                "METAFLOW_HOME": str(work / "mf"),
                "USERNAME": "bench",
                "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(work / f"mf-{next(counter)}"),
                "BENCH_KIND": k,
                "BENCH_N": str(n),
                "BENCH_START": str(next(counter)),
            }
            rows["Metaflow local"] = (
                [args.metaflow_python, str(work / "metaflow_run.py"), "--quiet", "--no-pylint", "run"],
                mf_env,
            )
        elif kind == "chain":
            skipped.append(f"Metaflow: {why}")
        why = _usable(
            args.zenml_python,
            "zenml",
            "uv venv /tmp/zenmlenv && uv pip install --python /tmp/zenmlenv/bin/python 'zenml[local]'",
        )
        if kind != "chain":
            if why is None:
                skipped.append("ZenML fan-out: not written (its map API differs between versions)")
        elif why is None:

            def zen(cached: bool, k: str = k, n: int = n, zen_cached: str = str(work / f"zen-cached-{k}")) -> Variant:
                return (
                    [args.zenml_python, str(work / "zenml_run.py"), k, str(n), "7" if cached else "START"],
                    lambda: {
                        **clean,
                        "ZENML_CONFIG_PATH": zen_cached if cached else str(work / f"zen-{next(counter)}"),
                        "ZENML_ANALYTICS_OPT_IN": "false",
                        "ZENML_LOGGING_VERBOSITY": "ERROR",
                    },
                )

            rows["ZenML local, uncached"] = zen(False)
            rows["ZenML local, all cached"] = zen(True)
        else:
            skipped.append(f"ZenML: {why}")
    if args.only:
        for rows in workloads.values():
            for name in [r for r in rows if not any(w in r for w in args.only)]:
                if not name.startswith("isthmus, default") and name != "plain Python (floor)":
                    del rows[name]  # (the defaults and the floor stay: every ratio is against them)

    # fill the caches the "all cached" rows hit (one run each, not timed)
    for rows in workloads.values():
        for name, (cmd, env) in rows.items():
            if "all cached" in name:
                _timed([c.replace("START", "7") for c in cmd], env(), work)

    times: dict[tuple[str, str], list[float]] = {}
    failures: dict[tuple[str, str], str] = {}
    for _ in range(args.rounds):
        for kind, rows in workloads.items():
            for name, (cmd, env) in rows.items():
                if (kind, name) in failures:
                    continue
                start = str(next(counter) * 1000)
                try:
                    elapsed = _timed([c.replace("START", start) for c in cmd], env(), work)
                except RuntimeError as exc:
                    failures[(kind, name)] = str(exc).strip().splitlines()[-1][:200]
                    continue
                times.setdefault((kind, name), []).append(elapsed)

    console = Console(width=140)
    table = Table(
        title=f"Peers: chain of {args.steps} trivial steps, fan-out of {args.items}; whole processes, "
        f"{args.rounds} interleaved rounds, medians"
    )
    for col in ("workload", "variant", "median", "vs isthmus default (same caching)", "per step above plain"):
        table.add_column(col)
    med = statistics.median
    for kind, rows in workloads.items():
        n = args.steps if kind == "chain" else args.items
        floor = med(times[(kind, "plain Python (floor)")])
        for name in rows:
            if (kind, name) in failures:
                table.add_row(kind, name, "failed", failures[(kind, name)], "-")
                continue
            t = med(times[(kind, name)])
            ref = "isthmus, default, all cached" if "all cached" in name else "isthmus, default, uncached"
            ratio = t / med(times[(kind, ref)])
            table.add_row(kind, name, f"{t:.2f} s", f"{ratio:.2f}x", f"{(t - floor) / n * 1000:.2f} ms")
    console.print(table)
    for line in skipped:
        console.print(f"skipped {line}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
