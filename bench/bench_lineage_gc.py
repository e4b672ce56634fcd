"""Lineage and gc on a large store: how long ``Client.lineage`` and ``Client.gc(dry_run=True)`` take.

    python bench/bench_lineage_gc.py [--step-runs 100000] [--repeat 3]

Fills a fresh SQLite store with synthetic records (pipeline runs of four chained step runs; every run's
first step reads one shared raw dataset, so its downstream is as wide as the store) and prints a table.
Nothing here passes or fails: the numbers are for the notes and for spotting regressions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console
from rich.table import Table

console = Console(width=120)
STEPS = ("load", "clean", "featurize", "train")


def _content(i: int, j: int) -> bytes:
    """The stored bytes of artifact (i, j): the JSON list ``[i, j]`` as the json materializer writes it."""
    from isthmus.artifacts.materializers import JsonMaterializer

    return JsonMaterializer().dumps([i, j])


def _hash(i: int, j: int) -> str:
    from isthmus.hashing import hash_bytes

    return hash_bytes(_content(i, j))


def fill(meta: object, n_step_runs: int, artifacts_root: str | None = None) -> tuple[str, str]:
    """Synthetic runs; returns (the shared raw hash, the newest run id). Each artifact is a small JSON list
    named by its real content hash. With ``artifacts_root`` (a local artifact store's directory), every
    object is written there (dated a day ago) and each step run records its input and output refs into
    that store, as the runner does: commands that read or load them (``cache prune``, ``diff``) do their
    real work per step run. Without it, refs point nowhere and step runs record none."""
    from isthmus.artifacts.refs import ArtifactRef
    from isthmus.artifacts.store import ArtifactStore
    from isthmus.store import schema as s

    where = ArtifactStore(artifacts_root) if artifacts_root else None
    day_ago = time.time() - 86400

    def ref(i: int, j: int) -> dict[str, object]:
        content = _content(i, j)
        content_hash = _hash(i, j)
        uri = "file:///x"
        if where is not None:
            uri = where.uri_for(content_hash)
            path = where.path_for(content_hash)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(content)
            os.utime(path, (day_ago, day_ago))
        return ArtifactRef(uri, content_hash, len(content), "json@1", "builtins:list").to_dict()

    raw_ref = ref(-1, 0)
    raw = str(raw_ref["content_hash"])
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=60)
    runs, steps, links, arts, entries = [], [], [], [], []
    arts.append(
        dict(
            content_hash=raw,
            uri=raw_ref["uri"],
            size=raw_ref["size"],
            materializer="json@1",
            python_type="builtins:list",
            metadata=None,
            producer_step_run_id=None,
            created_at=now,
        )
    )
    run_id = ""
    for i in range(n_step_runs // len(STEPS)):
        run_id = str(uuid.uuid4())
        started = now + dt.timedelta(seconds=i)
        runs.append(
            dict(
                id=run_id,
                pipeline=f"p{i % 10}",
                orchestrator="local",
                status="COMPLETED",
                params={},
                context={},
                started_at=started,
                ended_at=started,
            )
        )
        previous = raw_ref
        for j, name in enumerate(STEPS):
            sid, out_ref = str(uuid.uuid4()), ref(i, j)
            out = str(out_ref["content_hash"])
            steps.append(
                dict(
                    id=sid,
                    pipeline_run_id=run_id,
                    invocation=name,
                    step_name=name,
                    step_path=f"m:{name}",
                    orchestrator="local",
                    attempt=1,
                    status="COMPLETED",
                    params={"i": i},
                    inputs={"data": previous} if where else {},
                    outputs={"output": out_ref} if where else {},
                    cache_key=f"k{i}/{j}",
                    cache_hit=False,
                    context={},
                    started_at=started,
                    ended_at=started,
                )
            )
            links.append(
                dict(
                    step_run_id=sid,
                    role="input",
                    name="data",
                    content_hash=previous["content_hash"],
                    artifact_name="data",
                )
            )
            links.append(
                dict(step_run_id=sid, role="output", name="output", content_hash=out, artifact_name=f"{name}.output")
            )
            arts.append(
                dict(
                    content_hash=out,
                    uri=out_ref["uri"],
                    size=out_ref["size"],
                    materializer="json@1",
                    python_type="builtins:list",
                    metadata=None,
                    producer_step_run_id=sid,
                    created_at=started,
                )
            )
            entries.append(
                dict(cache_key=f"k{i}/{j}", step_run_id=sid, step_name=name, created_at=0.0, expires_at=None)
            )
            previous = out_ref
    with meta.engine.begin() as conn:  # type: ignore[attr-defined]
        for table, rows in (
            (s.pipeline_runs, runs),
            (s.step_runs, steps),
            (s.step_run_artifacts, links),
            (s.artifacts, arts),
            (s.cache_entries, entries),
        ):
            for k in range(0, len(rows), 5000):
                conn.execute(table.insert(), rows[k : k + 5000])
    return raw, run_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--step-runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="isthmus-bench-")
    os.environ["ISTHMUS_HOME"] = home
    from isthmus import Client, defaults

    meta = defaults.metadata_store()
    t0 = time.perf_counter()
    raw, newest = fill(meta, args.step_runs)
    console.print(f"filled {args.step_runs} step runs in {time.perf_counter() - t0:.1f} s ({home})")
    client = Client()
    cases = {
        "lineage latest (both)": lambda: client.lineage("latest"),
        "lineage RUN:train --upstream": lambda: client.lineage(f"{newest}:train", direction="upstream"),
        "lineage raw --downstream --depth 1 (capped 2000 step runs)": lambda: client.lineage(
            raw, direction="downstream", depth=1
        ),
        "lineage <hash prefix> --upstream": lambda: client.lineage(raw.split(":")[1][:12], direction="upstream"),
        "gc --keep-last 5 --dry-run": lambda: client.gc(keep_last=5, dry_run=True),
        "gc --keep-last 5 --prune-cache --dry-run": lambda: client.gc(keep_last=5, prune_cache=True, dry_run=True),
    }
    table = Table(title=f"lineage and gc on {args.step_runs} step runs (SQLite), median of {args.repeat}")
    for col in ("command", "median", "nodes / candidates"):
        table.add_column(col)
    for name, fn in cases.items():
        times, result = [], None
        for _ in range(args.repeat):
            t = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t)
        size = (
            f"{len(result.step_runs) + len(result.artifacts)}{' (truncated)' if result.truncated else ''}"
            if hasattr(result, "step_runs")
            else str(result.artifacts_deleted)
        )
        table.add_row(name, f"{statistics.median(times) * 1000:.0f} ms", size)
    console.print(table)


if __name__ == "__main__":
    main()
