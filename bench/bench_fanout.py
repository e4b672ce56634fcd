"""Fan-out benchmarks: a 100-way map of trivial steps, and a CPU-bound map, against their peers.

    python bench/bench_fanout.py [--items 100] [--rounds 5] [--metaflow-python /path/to/python]

Every variant runs as a whole process (start-up included), in interleaved rounds; the table shows medians,
the ratio to the plain-Python loop and the per-item cost above it. Peers: flytekit ``map_task`` run locally
(records nothing, caches nothing) and Metaflow ``foreach`` (local runtime, one process per task; give
``--metaflow-python`` an interpreter that has metaflow installed, e.g. a separate venv: metaflow is not a
dependency of isthmus). The CPU-bound table compares isthmus threads and processes with a plain process pool on the same work.
Nothing here passes or fails.
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
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(width=130)
REPO = Path(__file__).resolve().parents[1]

STEPS = """
from isthmus import pipeline, step

@step
def items(n: int) -> list[int]:
    return list(range(n))

@step
def inc(x: int) -> int:
    return x + 1

@step
def total(values: list) -> int:
    return sum(values)

@pipeline
def fan(n: int):
    return total(inc.map(x=items(n)))

def burn_fn(seed: int) -> int:
    acc = seed
    for i in range(WORK):
        acc = (acc * 31 + i) % 1000003
    return acc

@step
def burn(seed: int) -> int:
    return burn_fn(seed)

@pipeline
def cpu(n: int):
    return total(burn.map(seed=items(n)))
"""

PLAIN = """
import sys
n = int(sys.argv[1])
values = [x + 1 for x in list(range(n))]
print(sum(values))
"""

ISTHMUS = """
import sys
import fan_steps
n, workers = int(sys.argv[1]), int(sys.argv[2])
run = fan_steps.fan.run(n=n, max_workers=workers)
print(run.outputs, run.cache_hits)
"""

ISTHMUS_CPU = """
import sys
import fan_steps
n, workers, pool = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if __name__ == "__main__":
    print(fan_steps.cpu.run(n=n, max_workers=workers, pool=pool).outputs)
"""

PROCESS_POOL_CPU = """
import sys
from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp
import fan_steps
n, workers = int(sys.argv[1]), int(sys.argv[2])
if __name__ == "__main__":
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        print(sum(pool.map(fan_steps.burn_fn, range(n))))
"""

PLAIN_CPU = """
import sys
import fan_steps
n = int(sys.argv[1])
print(sum(fan_steps.burn_fn(i) for i in range(n)))
"""

FLYTE = """
import sys
from flytekit import map_task, task, workflow

@task
def items(n: int) -> list[int]:
    return list(range(n))

@task
def inc(x: int) -> int:
    return x + 1

@task
def total(values: list[int]) -> int:
    return sum(values)

@workflow
def fan(n: int) -> int:
    return total(values=map_task(inc)(x=items(n=n)))

print(fan(n=int(sys.argv[1])))
"""

METAFLOW = """
from metaflow import FlowSpec, step

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

if __name__ == "__main__":
    FanFlow()
"""


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def _write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu-items", type=int, default=8)
    parser.add_argument("--cpu-work", type=int, default=2_000_000)
    parser.add_argument("--metaflow-python", default=os.environ.get("METAFLOW_PYTHON"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="isthmus-fanout-bench-"))
    _write(work, "fan_steps.py", STEPS.replace("WORK", str(args.cpu_work)))
    scripts = {
        name: _write(work, f"run_{name}.py", source)
        for name, source in {
            "plain": PLAIN,
            "isthmus": ISTHMUS,
            "flyte": FLYTE,
            "cpu_isthmus": ISTHMUS_CPU,
            "cpu_pool": PROCESS_POOL_CPU,
            "cpu_plain": PLAIN_CPU,
        }.items()
    }
    metaflow = _write(work, "fan_flow.py", METAFLOW.replace("N", str(args.items)))
    base_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(work), str(REPO)]), "ISTHMUS_LINEAGE": "file"}
    py = sys.executable
    n = str(args.items)
    workers = str(max(4, min(16, (os.cpu_count() or 1) + 2)))

    def fresh_home() -> dict[str, str]:
        home = work / f"home-{time.monotonic_ns()}"
        return {**base_env, "ISTHMUS_HOME": str(home)}

    cached_home = {**base_env, "ISTHMUS_HOME": str(work / "home-cached")}
    _timed([py, str(scripts["isthmus"]), n, "1"], cached_home, work)  # fill the cache once

    variants: dict[str, tuple[list[str], object]] = {
        "plain Python loop (peer)": ([py, str(scripts["plain"]), n], lambda: base_env),
        "isthmus sequential (max_workers=1)": ([py, str(scripts["isthmus"]), n, "1"], fresh_home),
        f"isthmus parallel ({workers} threads)": ([py, str(scripts["isthmus"]), n, workers], fresh_home),
        f"isthmus parallel, all cache hits ({workers} threads)": (
            [py, str(scripts["isthmus"]), n, workers],
            lambda: cached_home,
        ),
        "flytekit map_task, local (peer)": ([py, str(scripts["flyte"]), n], lambda: base_env),
    }
    skipped = ""
    if (
        args.metaflow_python
        and shutil.which(args.metaflow_python)
        or (args.metaflow_python and Path(args.metaflow_python).exists())
    ):
        mf_env = {**os.environ, "METAFLOW_HOME": str(work / "mf"), "USERNAME": "bench"}
        variants["Metaflow foreach, local (peer)"] = (
            [args.metaflow_python, str(metaflow), "--quiet", "--no-pylint", "run", "--max-workers", workers],
            lambda: {**mf_env, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(work / f"mf-{time.monotonic_ns()}")},
        )
    else:
        skipped = "Metaflow: not measured (pass --metaflow-python with an interpreter that has metaflow)"

    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, (cmd, env) in variants.items():
            times[name].append(_timed(cmd, env(), work))  # type: ignore[operator]
    plain = statistics.median(times["plain Python loop (peer)"])
    table = Table(title=f"{args.items}-way fan-out of trivial steps, whole process ({args.rounds} rounds, median)")
    for col in ("variant", "seconds", "x plain", "ms per item above plain"):
        table.add_column(col, justify="right" if col != "variant" else "left")
    for name, values in times.items():
        med = statistics.median(values)
        table.add_row(name, f"{med:.2f}", f"{med / plain:.1f}", f"{(med - plain) / args.items * 1000:.1f}")
    console.print(table)
    if skipped:
        console.print(skipped)

    cpu_n = str(args.cpu_items)
    cpu_variants = {
        "plain Python, one process (peer)": ([py, str(scripts["cpu_plain"]), cpu_n], lambda: base_env),
        "isthmus max_workers=1": ([py, str(scripts["cpu_isthmus"]), cpu_n, "1", "threads"], fresh_home),
        "isthmus max_workers=2 (threads)": ([py, str(scripts["cpu_isthmus"]), cpu_n, "2", "threads"], fresh_home),
        "isthmus max_workers=2, pool='processes'": (
            [py, str(scripts["cpu_isthmus"]), cpu_n, "2", "processes"],
            fresh_home,
        ),
        "process pool of 2, spawn (peer)": ([py, str(scripts["cpu_pool"]), cpu_n, "2"], lambda: base_env),
    }
    cpu_times: dict[str, list[float]] = {k: [] for k in cpu_variants}
    for _ in range(max(3, args.rounds // 2)):
        for name, (cmd, env) in cpu_variants.items():
            cpu_times[name].append(_timed(cmd, env(), work))  # type: ignore[operator]
    base = statistics.median(cpu_times["plain Python, one process (peer)"])
    table = Table(
        title=f"CPU-bound map: {args.cpu_items} items of pure-Python work ({args.cpu_work:,} loop turns each), "
        f"{os.cpu_count()} cores, whole process, median"
    )
    for col in ("variant", "seconds", "x plain"):
        table.add_column(col, justify="right" if col != "variant" else "left")
    for name, values in cpu_times.items():
        med = statistics.median(values)
        table.add_row(name, f"{med:.2f}", f"{med / base:.2f}")
    console.print(table)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
