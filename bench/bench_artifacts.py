"""Artifact save and load of large values against the libraries' own writers, with peak memory.

    python bench/bench_artifacts.py [--mb 1024] [--rounds 3] [--baseline DIR]

Each measurement runs in a fresh process: the value is built, then one operation is timed while a
sampler thread records the peak anonymous memory (``RssAnon``) above what the process held before it.
Peers: ``np.save`` / ``np.load`` to a file, ``DataFrame.to_parquet`` / ``pd.read_parquet`` (pyarrow).
isthmus: ``ArtifactStore.save`` (write, blake3 hash, atomic commit) and ``ArtifactStore.load`` (default
verify mode). ``cpu`` is the process's user + system time for the operation (all threads): on a busy
machine it moves less than the wall time. Before each operation, twice the data is written to a scratch
file and deleted, and dirty pages are flushed: every operation then finds its page-cache pages already
touched. (On a virtual machine, memory the guest has not touched yet is several times slower to fill: a
1 GiB ``np.save`` measured 0.2-1.3 s by where in the sequence it ran, and whichever save came second
paid for it.)
Rounds are interleaved; medians. ``--baseline DIR``: a tree with ``common/isthmus`` of
another version (``git archive REV common | tar -x -C DIR``), its rows interleaved. Nothing here passes
or fails. Target: within 1.2x of the peer, peak anonymous memory <= 1.1x the data. ``held after``: the
anonymous memory the process still holds once the operation returned (with a loaded value alive), over
the data: what it keeps for the rest of its life.
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
import json, os, sys, threading, time
kind, op, mb, workdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
import numpy as np

def anon():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0

def make():
    n = mb * 1024 * 1024 // 8
    if kind == "numpy":
        return np.random.default_rng(0).random(n)
    import pandas as pd
    cols = 8
    rng = np.random.default_rng(0)
    return pd.DataFrame({f"c{i}": rng.random(n // cols) for i in range(cols)})

def nbytes(v):
    return v.nbytes if kind == "numpy" else int(v.memory_usage(index=False).sum())

peer_path = os.path.join(workdir, "peer.bin")
ref_path = os.path.join(workdir, "ref.json")
from isthmus.artifacts.store import ArtifactStore
from isthmus.artifacts.refs import ArtifactRef
store = ArtifactStore(os.path.join(workdir, "artifacts"))
value = make() if op.endswith("save") else None
size = nbytes(value) if value is not None else None
base = anon()
peak = [base]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)
t = threading.Thread(target=sample, daemon=True)
t.start()
t0 = time.perf_counter()
c0 = os.times()
if op == "peer save":
    if kind == "numpy":
        np.save(peer_path, value)
    else:
        value.to_parquet(peer_path, engine="pyarrow")
elif op == "peer load":
    if kind == "numpy":
        out = np.load(peer_path + ".npy")
    else:
        import pandas as pd
        out = pd.read_parquet(peer_path, engine="pyarrow")
elif op == "isthmus save":
    ref = store.save(value)
elif op == "isthmus load":
    with open(ref_path) as fh:
        out = store.load(ArtifactRef.from_json(fh.read()))
took = time.perf_counter() - t0
c1 = os.times()
cpu = (c1.user - c0.user) + (c1.system - c0.system)
stop.set(); t.join()
held = anon()  # what the process keeps after the operation (a loaded value is still alive)
peak[0] = max(peak[0], held)
if op == "isthmus save":
    with open(ref_path, "w") as fh:
        fh.write(ref.to_json())
if op.endswith("load"):
    size = nbytes(out)
print(json.dumps({"seconds": took, "cpu": cpu, "extra_anon": peak[0] - base, "held_anon": held - base, "bytes": size}))
"""


def settle(mb: int, workdir: str) -> None:
    """Write ``2 * mb`` MiB to a scratch file and delete it, then flush dirty pages: the next operation
    finds the pages it fills already touched, and pays no writeback of the one before it (the dirty-page
    throttle)."""
    scratch = os.path.join(workdir, "scratch.bin")
    block = bytes(64 << 20)
    with open(scratch, "wb") as fh:
        for _ in range(max(1, 2 * mb // 64)):
            fh.write(block)
    os.remove(scratch)
    os.sync()


def run(kind: str, op: str, mb: int, workdir: str, code: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(code / "common"))
    settle(mb, workdir)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind, op, str(mb), workdir], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--kinds", nargs="+", default=["numpy", "pandas"])
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    codes = {"this": REPO} | ({"baseline": args.baseline} if args.baseline else {})
    ops = ["peer save", "isthmus save", "peer load", "isthmus load"]
    samples: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for kind in args.kinds:
            for code, path in codes.items():
                with tempfile.TemporaryDirectory(prefix="isthmus-bench-art-") as workdir:
                    for op in ops:  # save before load: the load reads what the save wrote
                        samples.setdefault((code, kind, op), []).append(run(kind, op, args.mb, workdir, path))
    med = statistics.median
    table = Table(title=f"Artifacts of ~{args.mb} MiB, whole processes, median of {args.rounds}")
    cols = (
        "code",
        "value",
        "operation",
        "time",
        "vs peer",
        "cpu",
        "cpu vs peer",
        "peak extra anon memory",
        "peak anon / data",
        "held after / data",
    )
    for col in cols:
        table.add_column(col)
    for (code, kind, op), s in samples.items():
        secs = med(x["seconds"] for x in s)
        peer_samples = samples[(code, kind, "peer " + op.split()[1])]
        peer = med(x["seconds"] for x in peer_samples)
        cpu = med(x["cpu"] for x in s)
        peer_cpu = med(x["cpu"] for x in peer_samples)
        extra = med(x["extra_anon"] for x in s)
        data = med(x["bytes"] for x in s)
        # a save holds the value before it starts (the data); a load builds it (the data is in the extra)
        total = (data + extra) if op.endswith("save") else max(extra, 1)
        table.add_row(
            code,
            kind,
            op,
            f"{secs:.2f} s",
            f"{secs / peer:.2f}x",
            f"{cpu:.2f} s",
            f"{cpu / peer_cpu:.2f}x",
            f"{extra / 2**20:.0f} MiB",
            f"{total / data:.2f}x",
            f"{((data if op.endswith('save') else 0) + med(x['held_anon'] for x in s)) / data:.2f}x",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
