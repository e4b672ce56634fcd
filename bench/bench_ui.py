"""The web UI's pages and API on a SQLite store with 100,000 step runs: how long each request takes
through the whole app (FastAPI TestClient, in this process; prints a table).

    python bench/bench_ui.py [--step-runs 100000] [--repeat 5]

The store is the synthetic shape of ``bench_lineage_gc.py`` (25,000 pipeline runs of four chained steps).
Nothing here passes or fails: the numbers are for the notes and for spotting regressions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lineage_gc import fill  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

console = Console(width=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--step-runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="isthmus-bench-ui-")
    os.environ["ISTHMUS_HOME"] = home
    from fastapi.testclient import TestClient

    from isthmus import Client, defaults
    from isthmus.ui import create_app

    meta = defaults.metadata_store()
    t0 = time.perf_counter()
    _, newest = fill(meta, args.step_runs)
    console.print(f"filled {args.step_runs} step runs in {time.perf_counter() - t0:.1f} s ({home})")
    client = Client()
    ui = TestClient(create_app(client))
    page = ui.get("/api/v1/runs", params={"limit": 50}).json()
    deep = page["next_cursor"]
    for _ in range(200):  # page 201
        deep = ui.get("/api/v1/runs", params={"limit": 50, "cursor": deep}).json()["next_cursor"]
    oldest = client.runs(limit=1, pipeline="p3")[0]["id"]
    cases = {
        "GET /runs (page 1, 50 runs)": "/runs",
        "GET /runs page 201 (keyset cursor)": f"/runs?cursor={deep}",
        "GET /runs?pipeline=p3": "/runs?pipeline=p3",
        "GET /runs?status=FAILED (none: walks the index)": "/runs?status=FAILED",
        "GET /api/v1/runs (page 1)": "/api/v1/runs",
        "GET /runs/<newest> (graph, reasons)": f"/runs/{newest}",
        f"GET /step-runs/{newest[:8]}:train": f"/step-runs/{newest}:train",
        "GET /diff (two runs of p3)": f"/diff?a={oldest}&b={newest}",
        "GET /lineage?target=<newest run>": f"/lineage?target={newest}",
        "GET /artifacts": "/artifacts",
        "GET /audit": "/audit",
    }
    table = Table(title=f"web UI requests on {args.step_runs} step runs (SQLite), median of {args.repeat}")
    for col in ("request", "median", "min", "max"):
        table.add_column(col)
    for name, path in cases.items():
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            response = ui.get(path)
            times.append(time.perf_counter() - t)
            assert response.status_code == 200, (path, response.status_code, response.text[:300])
        table.add_row(name, *(f"{x * 1000:.0f} ms" for x in (statistics.median(times), min(times), max(times))))
    console.print(table)


if __name__ == "__main__":
    main()
