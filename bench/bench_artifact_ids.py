"""Artifact ids, alias history and invalidate on a SQLite store with 100,000 step runs (prints a table).

The store is synthetic but shaped like a year of a team's work: pipeline runs of ingest -> featurize ->
train, every ingest a new dataset version, and one dataset that 1,000 later step runs read (the one found
bad). Usage: ``.venv/bin/python bench/bench_artifact_ids.py [STEP_RUNS]``.
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from isthmus import Client
from isthmus.store import schema as s
from isthmus.store.metadata import MetadataStore


def _h(i: int, tag: str) -> str:
    return "blake3:" + uuid.uuid5(uuid.NAMESPACE_OID, f"{tag}{i}").hex * 2


def build(store: MetadataStore, step_runs: int) -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    runs, steps, links, arts, entries = [], [], [], [], []
    pipelines = step_runs // 3
    for p in range(pipelines):
        run_id = str(uuid.uuid4())
        at = t0 + dt.timedelta(minutes=p)
        runs.append(
            {
                "id": run_id,
                "pipeline": "ml",
                "orchestrator": "local",
                "status": "COMPLETED",
                "params": {},
                "context": {},
                "started_at": at,
            }
        )
        # the first 1,000 runs read dataset 0 (a pinned input): it is what gets invalidated
        data = _h(0 if p < 1000 else p, "data")
        chain = [("ingest", None, data), ("featurize", data, _h(p, "feat")), ("train", _h(p, "feat"), _h(p, "model"))]
        for k, (name, given, made) in enumerate(chain):
            sid = str(uuid.uuid4())
            hit = name == "ingest" and 0 < p < 1000
            steps.append(
                {"id": sid, "pipeline_run_id": run_id, "invocation": name, "step_name": name, "step_path": f"m:{name}",
                 "orchestrator": "local", "attempt": 1, "status": "COMPLETED", "params": {}, "inputs": {},
                 "cache_key": _h(p, f"key{name}"), "cache_hit": hit, "context": {},
                 "started_at": at + dt.timedelta(seconds=k)}
            )  # fmt: skip
            links.append(
                {
                    "step_run_id": sid,
                    "role": "output",
                    "name": "output",
                    "content_hash": made,
                    "artifact_name": f"{name}.output",
                }
            )
            if given:
                links.append(
                    {"step_run_id": sid, "role": "input", "name": "x", "content_hash": given, "artifact_name": "x"}
                )
            if not hit:
                arts.append({"content_hash": made, "uri": f"file:///a/{made[7:]}", "size": 10, "materializer": "json",
                             "python_type": "builtins:list", "producer_step_run_id": sid, "created_at": at})  # fmt: skip
                entries.append(
                    {"cache_key": _h(p, f"key{name}"), "step_run_id": sid, "step_name": name, "created_at": p}
                )
    with store.engine.begin() as conn:
        for table, rows in ((s.pipeline_runs, runs), (s.step_runs, steps), (s.step_run_artifacts, links),
                            (s.artifacts, arts), (s.cache_entries, entries)):  # fmt: skip
            for i in range(0, len(rows), 5000):
                conn.execute(table.insert(), rows[i : i + 5000])


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        store = MetadataStore(f"sqlite:///{Path(tmp) / 'isthmus.db'}")
        t_build, _ = timed(lambda: build(store, n))
        client = Client(store)
        newest_model = client.artifact("train.output").content_hash
        cases = [
            ("artifact ingest.output (newest of ~33k versions)", lambda: client.artifact("ingest.output")),
            ("artifact ingest.output~100", lambda: client.artifact("ingest.output~100")),
            ("artifact by 12-char hash prefix", lambda: client.artifact(newest_model[7:19])),
            ("artifact ingest.output~20000 (scans every version)", lambda: client.artifact("ingest.output~20000")),
            ("artifact: an old version's hash (its number: a scan)", lambda: client.artifact(_h(5000, "model"))),
            ("artifacts list (50 newest versions)", lambda: client.artifact_versions(limit=50)),
            ("artifacts list --name train.output", lambda: client.artifact_versions("train.output", limit=50)),
            ("artifacts alias (promote)", lambda: client.promote("train.output@production", "train.output~1")),
            ("artifacts alias (promote again)", lambda: client.promote("train.output@production", "train.output")),
            ("rollback", lambda: client.rollback("train.output@production")),
            ("artifacts history", lambda: client.alias_history("train.output@production")),
            ("invalidate --dry-run (2,000 derived runs)", lambda: client.invalidate(_h(0, "data"), dry_run=True)),
            ("invalidate (2,000 derived runs)", lambda: client.invalidate(_h(0, "data"))),
        ]
        print(f"store: {n:,} step runs (built in {t_build / 1000:.1f} s)")
        print(f"{'operation':<50} {'ms':>8}")
        for label, fn in cases:
            ms, _ = timed(fn)
            print(f"{label:<50} {ms:>8.1f}")
        store.dispose()


if __name__ == "__main__":
    main()
