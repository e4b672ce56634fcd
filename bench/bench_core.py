"""Core benchmarks: StepRunner bookkeeping per step (in one process; bench_chain_procs.py measures whole
processes against an older version), and hashing throughput.

    python bench/bench_core.py [--steps 50] [--repeat 5] [--mb 512]

Prints tables comparing isthmus with its peer (plain Python calls; the raw blake3 function) and the ratio.
Nothing here passes or fails: the numbers are for the notes and for spotting regressions.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console
from rich.table import Table

console = Console(width=120)


def _times(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _median_time(fn, repeat: int) -> float:
    return statistics.median(_times(fn, repeat))


def bench_steps(n_steps: int, repeat: int) -> None:
    home = tempfile.mkdtemp(prefix="isthmus-bench-")
    os.environ["ISTHMUS_HOME"] = home
    import isthmus
    from isthmus import lineage, pipeline, step

    isthmus.configure(home=home)

    def inc_fn(x: int) -> int:
        return x + 1

    inc = step(inc_fn, name="inc")

    @pipeline
    def chain(start: int = 0):
        x = start
        for _ in range(n_steps):
            x = inc(x)
        return x

    def plain(start: int = 0) -> int:
        x = start
        for _ in range(n_steps):
            x = inc_fn(x)
        return x

    t_plain = _median_time(lambda: plain(0), repeat)
    t = Table(title=f"Local pipeline, chain of {n_steps} trivial steps (SQLite, {repeat} runs each)")
    for col in ("run", "median wall time", "overhead per step vs plain (median)", "fastest .. slowest run", "target"):
        t.add_column(col)

    def per(s: float) -> str:
        return f"{(s - t_plain) / n_steps * 1000:.2f} ms"

    t.add_row("plain Python calls (peer)", f"{t_plain * 1000:.2f} ms", "-", "-", "-")
    counter = iter(range(1, 10**6))
    for mode in ("default (file lineage)", "ISTHMUS_LINEAGE=off"):  # the default configuration first
        if mode == "ISTHMUS_LINEAGE=off":
            lineage.set_lineage_hook(lineage.NoopLineage())
        else:
            lineage.set_lineage_hook(None)  # chosen as in a user's process
            emitter = lineage.get_lineage_hook()
        chain.run(start=-next(counter))  # warm-up: schema, fingerprints, environment snapshot
        uncached = _times(lambda: chain.run(start=next(counter) * 1000), repeat)
        fixed = next(counter) * 1000
        chain.run(start=fixed)
        cached = _times(lambda fixed=fixed: chain.run(start=fixed), repeat)
        assert chain.run(start=fixed).cache_hits == n_steps
        for label, times, target in (("uncached", uncached, "<= 3 ms"), ("all cached", cached, "<= 1.5 ms")):
            med = statistics.median(times)
            t.add_row(
                f"isthmus {label}, {mode}",
                f"{med * 1000:.1f} ms",
                per(med),
                f"{per(min(times))} .. {per(max(times))}",
                target if mode.startswith("default") else "-",
            )
        if mode.startswith("default") and hasattr(emitter, "flush"):
            emitter.flush(30)
    console.print(t)


def bench_hashing(mb: int, repeat: int) -> None:
    import numpy as np
    from blake3 import blake3

    from isthmus.hashing import hash_value

    arr = np.random.default_rng(0).integers(0, 255, size=mb * 1024 * 1024, dtype=np.uint8)
    assert hash_value(arr) == hash_value(arr.copy())
    gb = arr.nbytes / 1e9
    t_raw1 = _median_time(lambda: blake3(arr, max_threads=1).digest(), repeat)
    t_raw = _median_time(lambda: blake3(arr, max_threads=blake3.AUTO).digest(), repeat)
    t_isthmus = _median_time(lambda: hash_value(arr), repeat)
    t = Table(title=f"Hashing a {mb} MB numpy array (median of {repeat}, {os.cpu_count()} cores)")
    for col in ("hasher", "time", "throughput", "vs raw blake3 (same threads)", "target"):
        t.add_column(col)
    t.add_row("raw blake3, 1 thread", f"{t_raw1 * 1000:.0f} ms", f"{gb / t_raw1:.2f} GB/s", "-", "-")
    t.add_row("raw blake3, all cores (peer)", f"{t_raw * 1000:.0f} ms", f"{gb / t_raw:.2f} GB/s", "100 %", "-")
    t.add_row(
        "isthmus hash_value",
        f"{t_isthmus * 1000:.0f} ms",
        f"{gb / t_isthmus:.2f} GB/s",
        f"{t_raw / t_isthmus * 100:.0f} %",
        ">= 80 %",
    )
    console.print(t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--mb", type=int, default=512)
    args = parser.parse_args()
    bench_steps(args.steps, args.repeat)
    bench_hashing(args.mb, args.repeat)


if __name__ == "__main__":
    main()
