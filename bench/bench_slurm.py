"""Slurm benchmark: time from submitting a trivial job to seeing it COMPLETED, against ``sbatch --wait``.

    python bench/bench_slurm.py [--repeat 5] [--poll 0.5]

Starts the private single-node test cluster of ``tests/slurm/cluster.py`` (needs root and Debian's
Slurm packages; it installs them when missing) and measures, on the same cluster:

1. a trivial shell job (``true``): ``sbatch --wait`` vs isthmus' ``SlurmClient`` submit + poll, for the
   ``cli`` and ``rest`` backends;
2. a trivial isthmus step (a fresh parameter each time, so every job computes): ``sbatch --wait`` of
   the very batch script isthmus generates vs what the operator does (``SlurmExecutor``: submit, poll
   until COMPLETED — the same loop as ``SlurmJobTrigger`` — then read the manifest), per backend.

Prints medians and spreads (min-max) in seconds; never passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _fmt(samples: list[float]) -> str:
    return f"{statistics.median(samples):6.2f} s  ({min(samples):.2f}-{max(samples):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--poll", type=float, default=0.5, help="isthmus poll interval in seconds")
    args = parser.parse_args()

    from tests.slurm.cluster import start_cluster

    cluster, reason = start_cluster()
    if cluster is None:
        sys.exit(f"no Slurm cluster: {reason}")
    home = Path(tempfile.mkdtemp(prefix="isthmus-bench-slurm-"))
    os.environ["ISTHMUS_HOME"] = str(home)
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        rows = run(cluster, home, args.repeat, args.poll)
    finally:
        cluster.stop()
    width = max(len(r[0]) for r in rows)
    print(
        f"\nSlurm 22.05 single node, {args.repeat} runs each, isthmus poll interval {args.poll} s (median, min-max)\n"
    )
    for label, samples in rows:
        print(f"  {label:<{width}}  {_fmt(samples)}")


def run(cluster, home: Path, repeat: int, poll: float) -> list[tuple[str, list[float]]]:
    from isthmus.context import RunContext
    from isthmus.runner import default_runner
    from isthmus.slurm import JobSpec, SlurmExecutor, connect
    from tests.slurm import steps

    env = {**os.environ, **cluster.env}
    logs = home / "logs"
    logs.mkdir(parents=True)

    def sbatch_wait(script: str, extra: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run(
            ["sbatch", "--wait", "--parsable", *extra],
            input=script,
            text=True,
            env=env,
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - t0

    clients = {
        "cli": lambda: connect("cli", env=cluster.env),
        "rest": lambda: connect("rest", socket=str(cluster.rest_socket)),
    }
    rows: list[tuple[str, list[float]]] = []

    # 1. a trivial shell job
    out = ["--output", f"{logs}/%j.out", "--chdir", str(logs)]
    rows.append(("shell job 'true': sbatch --wait", [sbatch_wait("#!/bin/bash\ntrue\n", out) for _ in range(repeat)]))
    for name, make in clients.items():

        async def once(make=make) -> float:
            client = make()
            try:
                spec = JobSpec(
                    name=f"bench-{time.time_ns()}", script="true", stdout=f"{logs}/%j.out", work_dir=str(logs)
                )
                t0 = time.perf_counter()
                job_id = await client.submit(spec)
                await client.wait(job_id, poll_interval=poll)
                return time.perf_counter() - t0
            finally:
                await client.close()

        rows.append((f"shell job 'true': isthmus {name} submit+poll", [asyncio.run(once()) for _ in range(repeat)]))

    # 2. a trivial isthmus step, fresh parameters (every job computes)
    runner = default_runner()
    counter = iter(range(10**9))
    ex = SlurmExecutor(clients["cli"](), runner, poll_interval=poll)
    samples = []
    for _ in range(repeat):
        spec, _job = ex.build(
            steps.square, {}, {"x": next(counter)}, RunContext(orchestrator="slurm", invocation="bench")
        )
        os.makedirs(spec.work_dir, exist_ok=True)
        samples.append(sbatch_wait(spec.full_script(), spec.sbatch_args()))
    rows.append(("isthmus step job: sbatch --wait of its script", samples))
    for name, make in clients.items():
        seen: list[float] = []
        whole: list[float] = []
        for _ in range(repeat):
            ex = SlurmExecutor(make(), runner, poll_interval=poll)
            marks: dict[str, float] = {}
            t0 = time.perf_counter()
            ex.run(
                steps.square,
                {"x": next(counter)},
                RunContext(orchestrator="slurm", invocation="bench"),
                on_submit=lambda job, m=marks: m.setdefault("submitted", time.perf_counter()),
            )
            t1 = time.perf_counter()
            whole.append(t1 - t0)
            seen.append(t1 - marks["submitted"])
        rows.append((f"isthmus step job: {name} submit -> COMPLETED seen + manifest", seen))
        rows.append((f"isthmus step job: {name} whole (cache lookup + submit + wait)", whole))
    return rows


if __name__ == "__main__":
    main()
