"""Every day-2 command on a store with 100,000 step runs (SQLite, or PostgreSQL): how long each takes (prints a table).

    python bench/bench_day2.py [--step-runs 100000] [--repeat 3] [--postgres]

Builds the store once (the synthetic shape of ``bench_lineage_gc.py``: pipeline runs of four chained step
runs over ten pipelines, every first step reading one shared raw dataset; plus a promoted and rolled-back
alias, one failed run; every artifact's object is written to the local artifact store and every step run
records its input and output refs, so gc walks a real objects directory, ``cache prune`` checks every
output and ``diff`` loads the small values it shows), then times each command through ``isthmus.Client`` in this process (median of
``--repeat``), then each as a whole ``isthmus …`` process (what a person at the terminal waits for:
start-up, imports and the query) beside the same command on a store of ``--small`` step runs of the same
shape (interleaved; the ratio is what the store's size adds), and ``isthmus version`` for the start-up
alone. With ``--postgres`` both stores are databases of a throwaway PostgreSQL server (started as the
tests start theirs, from Debian's ``postgresql`` package; analyzed after the fill, as autovacuum would).
Nothing here passes or fails: the numbers are for the notes and for spotting regressions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lineage_gc import fill  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from isthmus.cli.artifacts import INVALIDATE_SHOWN  # noqa: E402  # the table's rows
from isthmus.cli.lineage_gc import LINEAGE_LIMIT  # noqa: E402  # the CLI's default: what a person waits for

console = Console(width=120)


def _cases(client: Any, raw: str, newest: str) -> dict[str, Callable[[], Any]]:
    def runs_show() -> Any:  # what `isthmus runs show` asks the client for
        run = client.run("latest")
        return client.step_runs(run["id"]), client.reasons(run["id"])

    return {
        "why latest:train": lambda: client.explain(f"{newest}:train"),
        "why <step-run prefix>": lambda: client.explain(client.step_runs(newest)[0]["id"][:10]),
        "runs list": lambda: client.runs(limit=20),
        "runs show latest (with reasons)": runs_show,
        "diff --last p0": lambda: client.diff_last("p0"),
        "diff --last-good p1": lambda: client.diff_last_good("p1"),
        "diff STEP_RUN_A STEP_RUN_B": lambda: client.diff_step_runs("latest~1:train", "latest:train"),
        "lineage latest (both)": lambda: client.lineage("latest"),
        "lineage raw --downstream --depth 1": lambda: client.lineage(
            raw, direction="downstream", depth=1, max_step_runs=LINEAGE_LIMIT
        ),
        "lineage raw --downstream --depth 1 --limit 2000": lambda: client.lineage(
            raw, direction="downstream", depth=1, max_step_runs=2000
        ),
        "artifacts show train.output~1": lambda: client.artifact("train.output~1"),
        # every step run derives from raw: the table lists the first rows (and counts all), --json every row
        "invalidate raw --dry-run": lambda: client.invalidate(raw, dry_run=True, listing=INVALIDATE_SHOWN),
        "invalidate raw --dry-run --json": lambda: client.invalidate(raw, dry_run=True),
        "artifacts list": lambda: client.artifact_versions(limit=50),
        "artifacts history train.output@production": lambda: client.alias_history("train.output@production"),
        "gc --dry-run (keeps every run)": lambda: client.gc(dry_run=True),
        "gc --keep-last 5 --dry-run": lambda: client.gc(keep_last=5, dry_run=True),
        "gc --keep-last 5 --prune-cache --dry-run": lambda: client.gc(keep_last=5, prune_cache=True, dry_run=True),
        "gc --keep-last 1000 --dry-run (keeps 40%)": lambda: client.gc(keep_last=1000, dry_run=True),
        "gc --older-than 30d --dry-run": lambda: client.gc(older_than=30 * 86400, dry_run=True),
        "cache prune --dry-run": lambda: client.prune_cache(dry_run=True),
        "cache prune --artifacts --dry-run": lambda: client.prune_cache(delete_unreferenced=True, dry_run=True),
    }


def _build(home: str, step_runs: int, url: str | None) -> tuple[str, str]:
    """A store of ``step_runs`` step runs at ``home`` (its metadata at ``url`` if given; see the module
    docstring); (raw hash, newest run id)."""
    from sqlalchemy import text

    os.environ.update(_store_env(home, url))
    from isthmus import Client, config, defaults

    config.reset()  # settings re-read from the environment: this store's home
    meta = defaults.metadata_store()
    t0 = time.perf_counter()
    raw, newest = fill(meta, step_runs, artifacts_root=os.path.join(home, "artifacts"))
    objects = step_runs // 4 * 4 + 1  # one per step run's output, and the raw dataset
    client = Client()
    client.promote("train.output@production", "train.output~2")
    client.promote("train.output@production", "train.output~1")
    client.rollback("train.output@production")
    failed = client.last_runs("p1", 2)[0]["id"]
    with meta.engine.begin() as conn:
        conn.execute(text("UPDATE pipeline_runs SET status = 'FAILED' WHERE id = :id"), {"id": failed})
    if url is not None:
        with meta.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    console.print(f"filled {step_runs} step runs, {objects} objects in {time.perf_counter() - t0:.1f} s ({home})")
    return raw, newest


def _store_env(home: str, url: str | None) -> dict[str, str]:
    return {"ISTHMUS_HOME": home, **({"ISTHMUS_STORE_URL": url} if url else {})}


def _process(argv: list[str], store: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "isthmus", *argv],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, **store, "COLUMNS": "160"},
    )
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--step-runs", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=100, help="step runs of the store the processes are compared to")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="both stores on a throwaway PostgreSQL server")
    args = parser.parse_args()
    os.environ.pop("ISTHMUS_STORE_URL", None)
    if not args.postgres:
        _run(args, None, None, "SQLite")
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.postgres_server import start_server

    server, reason = start_server()
    if server is None:
        sys.exit(f"bench_day2 --postgres: no PostgreSQL server: {reason}")
    try:
        _run(args, server.create_database("day2small"), server.create_database("day2"), "PostgreSQL")
    finally:
        server.stop()


def _run(args: argparse.Namespace, small_url: str | None, url: str | None, backend: str) -> None:
    small_home = tempfile.mkdtemp(prefix="isthmus-bench-day2-small-")
    small = _build(small_home, args.small, small_url)
    home = tempfile.mkdtemp(prefix="isthmus-bench-day2-")
    raw, newest = _build(home, args.step_runs, url)
    from isthmus import Client

    client = Client()
    table = Table(title=f"day-2 commands on {args.step_runs} step runs ({backend}), median of {args.repeat}")
    for col in ("command", "median", "min", "max"):
        table.add_column(col)
    for name, fn in _cases(client, raw, newest).items():
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        table.add_row(name, *(f"{x * 1000:.0f} ms" for x in (statistics.median(times), min(times), max(times))))
    console.print(table)

    procs = Table(
        title=f"whole processes: {args.step_runs} against {args.small} step runs ({backend}), interleaved, "
        f"median of {args.repeat}"
    )
    for col in ("command", f"{args.small} step runs", f"{args.step_runs} step runs", "ratio", "max (large)"):
        procs.add_column(col)
    for argv, small_argv in zip(_commands(raw, newest), _commands(*small), strict=True):
        large_t, small_t = [], []
        for _ in range(args.repeat):  # interleaved: the two stores see the same machine state
            small_t.append(_process(small_argv, _store_env(small_home, small_url)))
            large_t.append(_process(argv, _store_env(home, url)))
        a, b = statistics.median(small_t), statistics.median(large_t)
        procs.add_row(
            "isthmus " + " ".join(x if len(x) < 24 else x[:12] + "…" for x in argv),
            f"{a * 1000:.0f} ms",
            f"{b * 1000:.0f} ms",
            f"{b / a:.2f}×",
            f"{max(large_t) * 1000:.0f} ms",
        )
    console.print(procs)


def _commands(raw: str, newest: str) -> list[list[str]]:
    """The read-only commands (and dry runs) of the day-2 API, as typed at the terminal."""
    return [
        ["version"],
        ["runs", "list"],
        ["runs", "show", "latest"],
        ["why", f"{newest}:train"],
        ["diff", "--last", "p0"],
        ["diff", "--last-good", "p1"],
        ["lineage", "latest"],
        ["lineage", raw, "--downstream", "--depth", "1"],
        ["artifacts", "list"],
        ["artifacts", "show", "train.output~1"],
        ["artifacts", "history", "train.output@production"],
        ["cache", "list"],
        ["invalidate", "train.output~1", "--downstream", "--dry-run"],
        ["invalidate", raw, "--downstream", "--dry-run"],
        ["gc", "--dry-run"],
        ["gc", "--keep-last", "5", "--dry-run"],
        ["gc", "--keep-last", "5", "--prune-cache", "--dry-run"],
        ["cache", "prune", "--dry-run"],
        ["cache", "prune", "--artifacts", "--dry-run"],
        ["audit"],
    ]


if __name__ == "__main__":
    main()
