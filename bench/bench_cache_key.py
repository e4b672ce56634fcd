"""Per-call cost of the cache key: what every step call pays before the lookup.

    python bench/bench_cache_key.py [--calls 3000] [--repeat 7]

``StepRunner.cache_key`` runs the part of a step call that builds the key (arguments split into values
and refs, the memoized code and dependency fingerprints, the classes of argument values, the key hash)
without touching the store's rows. Peer: hashing the same parameters alone with ``hash_value``. The
first call (the fingerprint itself, computed once per process and step) is timed separately. Nothing
passes or fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(width=120)

PROJECT = """
import functools
import re
import types
from dataclasses import dataclass

from isthmus import step

@dataclass
class Settings:
    threshold: float = 0.5
    labels: tuple = ("a", "b", "c")

class Model:
    def __init__(self, w):
        self.w = w

    def predict(self, x):
        return self.w * x

def scale(x, k=1):
    return x * k

OPS = {"scale": functools.partial(scale, k=2), "offset": 1}
PATTERN = re.compile(r"[a-z]+", re.I)
NS = types.SimpleNamespace(factor=3)
SETTINGS = Settings()

@step
def trivial(x: int) -> int:
    return x + 1

@step
def rich(x: int, name: str, model=None) -> float:
    y = OPS["scale"](x) + OPS["offset"] + NS.factor
    return y * SETTINGS.threshold + len(PATTERN.findall(name)) + (model.predict(1) if model else 0)
"""


def _per_call(fn, calls: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="isthmus-bench-key-")
    os.environ["ISTHMUS_HOME"] = home
    project = Path(home) / "project"
    project.mkdir()
    (project / "bench_key_steps.py").write_text(textwrap.dedent(PROJECT))
    sys.path.insert(0, str(project))

    import isthmus
    from isthmus.hashing import hash_value
    from isthmus.runner import default_runner

    isthmus.configure(home=home)
    import bench_key_steps as m

    runner = default_runner()
    model = m.Model(2)
    cases = [
        ("trivial step, one int", m.trivial, {"x": 1}),
        ("helpers, partial, state", m.rich, {"x": 1, "name": "abc", "model": None}),
    ]
    t = Table(title=f"Cache key per call ({args.calls} calls x {args.repeat}, median)")
    for col in ("step", "first call (fingerprint)", "per call", "peer: hash_value(params)", "ratio"):
        t.add_column(col)
    for label, step, arguments in cases:
        t0 = time.perf_counter()
        runner.cache_key(step, arguments)
        first = time.perf_counter() - t0
        per = _per_call(lambda s=step, a=arguments: runner.cache_key(s, a), args.calls, args.repeat)
        peer = _per_call(lambda a=arguments: hash_value(a), args.calls, args.repeat)
        t.add_row(label, f"{first * 1000:.1f} ms", f"{per * 1e6:.0f} us", f"{peer * 1e6:.1f} us", f"{per / peer:.0f}x")
    # An object parameter: its class joins the code fingerprint (memoized per class) and it becomes an
    # input artifact (saved once; later calls find it by content).
    arguments = {"x": 1, "name": "abc", "model": model}
    t0 = time.perf_counter()
    runner.cache_key(m.rich, arguments)
    first = time.perf_counter() - t0
    per = _per_call(lambda: runner.cache_key(m.rich, arguments), max(args.calls // 10, 1), args.repeat)
    t.add_row("an object parameter (artifact)", f"{first * 1000:.1f} ms", f"{per * 1e6:.0f} us", "-", "-")
    console.print(t)


if __name__ == "__main__":
    main()
