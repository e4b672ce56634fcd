"""Per-step cost of the default configuration, measured the way users run it: whole processes.

    python bench/bench_chain_procs.py [--steps 50 200] [--rounds 7] [--profile]

Each round starts, for every chain length and both lineage settings (the default file lineage and
``ISTHMUS_LINEAGE=off``), one fresh Python process in a fresh ``ISTHMUS_HOME`` that runs the chain of
trivial steps three times: a warm-up (schema, fingerprints), an uncached run (all misses) and a cached run
(all hits). Each run's time includes writing its lineage events (the emitter's ``flush``). Variants are
interleaved within a round; the table shows medians over rounds. A last column measures, in a fresh
process, ``import isthmus`` plus one step. Nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
import isthmus
from isthmus import lineage, pipeline, step

def inc_fn(x: int) -> int:
    return x + 1

inc = step(inc_fn, name="inc")
N = int(sys.argv[1])

@pipeline
def chain(start: int = 0):
    x = start
    for _ in range(N):
        x = inc(x)
    return x

def flush():
    hook = lineage.get_lineage_hook()
    if hasattr(hook, "flush"):
        hook.flush(60)

def timed(start):
    c = time.process_time()
    t = time.perf_counter()
    # profiled: in this thread (cProfile sees one thread); timed: as users run it
    run = chain.run(start=start, max_workers=1) if os.environ.get("BENCH_PROFILE") else chain.run(start=start)
    flush()
    return time.perf_counter() - t, run.cache_hits, time.process_time() - c

if N == 1:
    inc(1) if False else chain.run(start=7)
    flush()
    print(json.dumps({"first": time.perf_counter() - t0, "first_cpu": time.process_time()}))
    sys.exit(0)
timed(-1)
profile = os.environ.get("BENCH_PROFILE")
if profile:
    import cProfile
    prof = cProfile.Profile()
    prof.enable()
unc, hits_u, unc_cpu = timed(1000)
cac, hits_c, cac_cpu = timed(1000)
if profile:
    prof.disable()
    prof.dump_stats(profile)
assert hits_u == 0 and hits_c == N, (hits_u, hits_c)
print(json.dumps({"uncached": unc, "cached": cac, "uncached_cpu": unc_cpu, "cached_cpu": cac_cpu}))
"""


def run_child(
    n: int, lineage: str, profile: str | None = None, code: Path = REPO, home: str | None = None
) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENLINEAGE", "ISTHMUS_"))}
    env["ISTHMUS_HOME"] = home or tempfile.mkdtemp(prefix="isthmus-bench-chain-")
    if lineage == "off":
        env["ISTHMUS_LINEAGE"] = "off"
    env["PYTHONPATH"] = os.pathsep.join([str(code / "common"), env.get("PYTHONPATH", "")])
    if profile:
        env["BENCH_PROFILE"] = profile
    cmd = [sys.executable, "-c", CHILD, str(n)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a tree holding common/isthmus of another version (git archive REV common | tar -x -C DIR): "
        "its rows are interleaved with this checkout's",
    )
    parser.add_argument(
        "--profile", help="write a cProfile of the uncached and cached runs of one default-lineage process here"
    )
    args = parser.parse_args()
    if args.profile:
        print(run_child(args.steps[0], "default", args.profile))
        return
    from rich.console import Console
    from rich.table import Table

    codes = {"this": REPO} | ({"baseline": args.baseline} if args.baseline else {})
    variants = [(code, n, lin) for n in args.steps for code in codes for lin in ("default", "off")]
    results: dict[tuple[str, int, str], dict[str, list[float]]] = {
        v: {"uncached": [], "cached": [], "uncached_cpu": [], "cached_cpu": []} for v in variants
    }
    first: dict[tuple[str, str, str], list[dict[str, float]]] = {
        (c, lin, h): [] for c in codes for lin in ("default", "off") for h in ("fresh", "existing")
    }
    homes = {c: tempfile.mkdtemp(prefix="isthmus-bench-first-") for c in codes}
    for code, home in homes.items():
        run_child(1, "default", code=codes[code], home=home)  # the existing home: database, environment
    for _ in range(args.rounds):
        for code, n, lin in variants:
            r = run_child(n, lin, code=codes[code])
            for k in results[(code, n, lin)]:
                results[(code, n, lin)][k].append(r[k])
        for code, lin, h in first:
            home = homes[code] if h == "existing" else None
            first[(code, lin, h)].append(run_child(1, lin, code=codes[code], home=home))
    med = statistics.median
    table = Table(title=f"Chain of trivial steps, whole processes, {args.rounds} interleaved rounds (SQLite)")
    cols = (
        "code",
        "steps",
        "lineage",
        "uncached per step",
        "cached per step",
        "uncached vs off",
        "cached vs off",
        "CPU uncached / cached per step",
    )
    for col in cols:
        table.add_column(col)
    for code, n, lin in variants:
        u = med(results[(code, n, lin)]["uncached"]) / n * 1000
        c = med(results[(code, n, lin)]["cached"]) / n * 1000
        uo = med(results[(code, n, "off")]["uncached"]) / n * 1000
        co = med(results[(code, n, "off")]["cached"]) / n * 1000
        uc = med(results[(code, n, lin)]["uncached_cpu"]) / n * 1000
        cc = med(results[(code, n, lin)]["cached_cpu"]) / n * 1000
        table.add_row(
            code,
            str(n),
            lin,
            f"{u:.2f} ms",
            f"{c:.2f} ms",
            f"{u / uo:.2f}x",
            f"{c / co:.2f}x",
            f"{uc:.2f} / {cc:.2f} ms",
        )
    Console(width=130).print(table)
    print("targets (50 steps, default lineage): <= 3 ms uncached, <= 1.5 ms cached per step")
    for (code, lin, h), rs in first.items():
        wall, cpu = med(r["first"] for r in rs) * 1000, med(r["first_cpu"] for r in rs) * 1000
        print(
            f"{code}: import isthmus + first step (lineage {lin}, {h} home): median {wall:.0f} ms wall, "
            f"{cpu:.0f} ms CPU (target < 500 ms)"
        )


if __name__ == "__main__":
    main()
