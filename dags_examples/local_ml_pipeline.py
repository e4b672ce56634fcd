"""Run the example pipeline locally twice (the second run is all cache hits), then show what isthmus
recorded: the run table and the diff of the two runs.

    python -m dags_examples.local_ml_pipeline [--n-estimators 100]
"""

from __future__ import annotations

import argparse
import time

from dags_examples.steps import ml_pipeline
from isthmus.cli import app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-estimators", type=int, default=100)
    args = parser.parse_args()
    for label in ("first run", "second run"):
        t0 = time.perf_counter()
        run = ml_pipeline.run(n_estimators=args.n_estimators)
        took = time.perf_counter() - t0
        hits = ", ".join(f"{name}={'hit' if s.cache_hit else 'computed'}" for name, s in run.steps.items())
        print(f"{label}: run {run.id[:8]} {run.status} in {took:.2f} s — {hits}")
        print(f"  metrics: {run.outputs}")
    print()
    for argv in (["runs", "list", "--limit", "5"], ["runs", "show", "latest"], ["diff", "latest~1", "latest"]):
        print(f"$ isthmus {' '.join(argv)}")
        app(argv, standalone_mode=False)
        print()


if __name__ == "__main__":
    main()
