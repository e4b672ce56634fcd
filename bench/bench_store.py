"""Metadata store throughput: step records per second on SQLite and PostgreSQL, 1/4/8 writer processes.

    python bench/bench_store.py [--steps 50] [--writers 1 4 8] [--rounds 3] [--baseline DIR]

A throwaway PostgreSQL server is started as the tests do (tests/postgres_server.py: Debian's postgresql
package, or ``ISTHMUS_TEST_PG_URL``). Each writer is a fresh process with its own chain of trivial steps;
all writers of a row start together (a start file), run the chain uncached (every step computes and is
recorded) and then cached (every step is a hit). Records/s = writers x steps / the slowest writer's time.
Pings: ``SELECT 1`` liveness checks the pool sent, per step. Lineage is off (this measures the store).
``--baseline DIR``: a tree with ``common/isthmus`` of another version (``git archive REV common | tar -x -C
DIR``); its rows are interleaved. Nothing here passes or fails. On 2 cores the writers are CPU-bound
(Python bookkeeping); with more cores PostgreSQL's commit path (WAL flush, here fsync=off) and row locks
on the cache-key lease would bound it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, os, sys, time
from isthmus import pipeline, step
from isthmus.runner import default_runner

N, seed, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def inc_fn(x: int) -> int:
    return x + 1

inc = step(inc_fn, name="inc")

@pipeline
def chain(start: int = 0):
    x = start
    for _ in range(N):
        x = inc(x)
    return x

chain.run(start=-1 - seed * 1000)  # warm-up: schema, fingerprints
dialect = default_runner().metadata.engine.dialect
pings = [0]
ping = dialect.do_ping
def counted(conn):
    pings[0] += 1
    return ping(conn)
dialect.do_ping = counted
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.002)
t = time.perf_counter()
assert chain.run(start=seed * 10**6).cache_hits == 0
uncached, miss_pings = time.perf_counter() - t, pings[0]
t = time.perf_counter()
assert chain.run(start=seed * 10**6).cache_hits == N
cached, hit_pings = time.perf_counter() - t, pings[0] - miss_pings
print(json.dumps({"uncached": uncached, "cached": cached, "miss_pings": miss_pings, "hit_pings": hit_pings}))
"""


def run_writers(url: str, code: Path, writers: int, steps: int) -> dict[str, float]:
    home = tempfile.mkdtemp(prefix="isthmus-bench-store-")
    go = os.path.join(home, "go")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENLINEAGE", "ISTHMUS_"))}
    env.update(ISTHMUS_HOME=home, ISTHMUS_STORE_URL=url, ISTHMUS_LINEAGE="off")
    env["PYTHONPATH"] = str(code / "common")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(steps), str(i + 1), go], env=env, stdout=subprocess.PIPE, text=True
        )
        for i in range(writers)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    Path(go).touch()
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    total = writers * steps
    return {
        "miss_rps": total / max(r["uncached"] for r in results),
        "hit_rps": total / max(r["cached"] for r in results),
        "miss_pings": sum(r["miss_pings"] for r in results) / total,
        "hit_pings": sum(r["hit_pings"] for r in results) / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path)
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    from tests.postgres_server import start_server

    server, reason = start_server()
    if server is None:
        print(f"PostgreSQL rows skipped: {reason}")
    codes = {"this": REPO} | ({"baseline": args.baseline} if args.baseline else {})
    stores = ["sqlite"] + (["postgresql"] if server else [])
    rows = [(code, store, w) for w in args.writers for store in stores for code in codes]
    samples: dict[tuple[str, str, int], list[dict[str, float]]] = {r: [] for r in rows}
    try:
        for _ in range(args.rounds):
            for code, store, w in rows:
                if store == "sqlite":
                    url = f"sqlite:///{tempfile.mkdtemp(prefix='isthmus-bench-sqlite-')}/isthmus.db"
                else:
                    url = server.create_database()
                try:
                    samples[(code, store, w)].append(run_writers(url, codes[code], w, args.steps))
                finally:
                    if store != "sqlite":
                        server.drop_database(url)
    finally:
        if server is not None:
            server.stop()
    med = statistics.median
    table = Table(title=f"Step records/s, chains of {args.steps} trivial steps per writer, median of {args.rounds}")
    for col in (
        "code",
        "store",
        "writers",
        "uncached rec/s",
        "cached rec/s",
        "vs SQLite (unc/cached)",
        "pings/miss",
        "pings/hit",
    ):
        table.add_column(col)
    for code, store, w in rows:
        s = samples[(code, store, w)]
        base = samples[(code, "sqlite", w)]
        m, h = med(x["miss_rps"] for x in s), med(x["hit_rps"] for x in s)
        bm, bh = med(x["miss_rps"] for x in base), med(x["hit_rps"] for x in base)
        table.add_row(
            code,
            store,
            str(w),
            f"{m:.0f}",
            f"{h:.0f}",
            f"{m / bm:.2f}x / {h / bh:.2f}x",
            f"{med(x['miss_pings'] for x in s):.2f}",
            f"{med(x['hit_pings'] for x in s):.2f}",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"({time.monotonic() - started:.0f} s)")
