"""Metadata store throughput: step records per second on SQLite and PostgreSQL, 1/4/8 writer processes.

    python bench/bench_store.py [--steps 50] [--writers 1 4 8] [--rounds 3] [--baseline DIR] [--prefill N]

A throwaway PostgreSQL server is started as the tests do (tests/postgres_server.py: Debian's postgresql
package, or ``ISTHMUS_TEST_PG_URL``). Each writer is a fresh process with its own chain of trivial steps;
all writers of a row start together (a start file), run the chain uncached (every step computes and is
recorded) and then cached (every step is a hit). Records/s = writers x steps / the slowest writer's time.
Pings: ``SELECT 1`` liveness checks the pool sent, per step. Lineage is off (this measures the store).
``--baseline DIR``: a tree with ``common/isthmus`` of another version (``git archive REV common | tar -x -C
DIR``); its rows are interleaved. ``--prefill N``: each row is also timed on a store that already holds
N synthetic step runs (``bench_lineage_gc.fill``; "vs empty": time per record against the empty store's
row, so 1.10x is 10 % slower). Nothing here passes or fails. On 2 cores the writers are CPU-bound
(Python bookkeeping); with more cores PostgreSQL's commit path (WAL flush, here fsync=off) and row locks
on the cache-key lease would bound it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

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


def _filled_templates(server: Any, stores: list[str], step_runs: int) -> dict[str, str]:
    """Per store kind, a store holding ``step_runs`` synthetic step runs (``bench_lineage_gc.fill``), built
    once: a SQLite file copied for each sample, a PostgreSQL database each sample's is created from."""
    from bench_lineage_gc import fill

    from isthmus.store.metadata import MetadataStore

    templates = {}
    for store in stores:
        if store == "sqlite":
            url = f"sqlite:///{tempfile.mkdtemp(prefix='isthmus-bench-filled-')}/isthmus.db"
        else:
            url = server.create_database("filled")
        meta = MetadataStore(url)
        t = time.perf_counter()
        fill(meta, step_runs)
        if store != "sqlite":
            with meta.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")  # as autovacuum would have, long before a store grows this big
        meta.dispose()
        print(f"{store}: {step_runs} step runs filled in {time.perf_counter() - t:.0f} s")
        templates[store] = url
    return templates


def _store_url(server: Any, store: str, template: str | None) -> str:
    """A fresh store for one sample: empty, or a copy of ``template``."""
    if store == "sqlite":
        path = f"{tempfile.mkdtemp(prefix='isthmus-bench-sqlite-')}/isthmus.db"
        if template:
            shutil.copyfile(template.removeprefix("sqlite:///"), path)
            os.sync()  # the copy's dirty pages written back now, not under the writers' commits
        return f"sqlite:///{path}"
    if not template:
        return str(server.create_database())
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:16]}"
    with server.admin_engine().connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(template).database}"'))
    os.sync()
    return make_url(template).set(database=name).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--prefill", type=int, default=0, help="also time stores already holding this many step runs")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    from tests.postgres_server import start_server

    server, reason = start_server()
    if server is None:
        print(f"PostgreSQL rows skipped: {reason}")
    codes = {"this": REPO} | ({"baseline": args.baseline} if args.baseline else {})
    stores = ["sqlite"] + (["postgresql"] if server else [])
    sizes = [0] + ([args.prefill] if args.prefill else [])
    rows = [(code, store, w, n) for w in args.writers for store in stores for n in sizes for code in codes]
    samples: dict[tuple[str, str, int, int], list[dict[str, float]]] = {r: [] for r in rows}
    try:
        templates = _filled_templates(server, stores, args.prefill) if args.prefill else {}
        for _ in range(args.rounds):
            for code, store, w, n in rows:
                url = _store_url(server, store, templates.get(store) if n else None)
                try:
                    samples[(code, store, w, n)].append(run_writers(url, codes[code], w, args.steps))
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
        "step runs before",
        "uncached rec/s",
        "cached rec/s",
        "vs SQLite (unc/cached)",
        "vs empty (unc/cached)",
        "pings/miss",
        "pings/hit",
    ):
        table.add_column(col)
    for code, store, w, n in rows:
        s = samples[(code, store, w, n)]
        base, empty = samples[(code, "sqlite", w, n)], samples[(code, store, w, 0)]
        m, h = med(x["miss_rps"] for x in s), med(x["hit_rps"] for x in s)
        bm, bh = med(x["miss_rps"] for x in base), med(x["hit_rps"] for x in base)
        em, eh = med(x["miss_rps"] for x in empty), med(x["hit_rps"] for x in empty)
        table.add_row(
            code,
            store,
            str(w),
            str(n),
            f"{m:.0f}",
            f"{h:.0f}",
            f"{m / bm:.2f}x / {h / bh:.2f}x",
            f"{em / m:.2f}x / {eh / h:.2f}x" if n else "",  # time per record against the empty store
            f"{med(x['miss_pings'] for x in s):.2f}",
            f"{med(x['hit_pings'] for x in s):.2f}",
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"({time.monotonic() - started:.0f} s)")
