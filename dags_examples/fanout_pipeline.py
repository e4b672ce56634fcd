"""Fan-out and fan-in with named outputs and logged metadata, on the diabetes dataset of the main example.

ingest -> age_bands -> band_stats.partial(raw=raw).map(band=bands)   (one step run per age decile, at run time)
ingest -> featurize -> [train_scored(n_estimators=n) for n in sizes]  (static fan-out while the body is traced)
       -> pick_best(scores)  -> (best_r2, best_size)                  (fan-in; two named outputs)
report(per_band, best_r2, best_size)                                  (fan-in of the mapped results)

    python -m dags_examples.fanout_pipeline [--max-workers 4]

runs it twice (the second run is all cache hits) and prints what isthmus recorded; ``--bands 5`` afterwards
computes only the new decile's step run (and the steps after the list). The same pipeline runs
as an Airflow DAG (``fanout_pipeline.to_airflow_dag()``) and a Flyte workflow (``to_flyte_workflow()``).
"""

from __future__ import annotations

import argparse
import time
from typing import Annotated

import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.metrics import r2_score

from dags_examples.steps import TARGET, _split, featurize, ingest
from isthmus import log_metadata, pipeline, step
from isthmus.cli import app


@step
def age_bands(raw: pd.DataFrame, bands: int = 4) -> list[str]:
    """The age deciles to summarize, youngest first, as labels ``d0`` … (one mapped step run each)."""
    return [f"d{i}" for i in range(min(bands, 10))]


@step
def band_stats(raw: pd.DataFrame, band: str) -> dict:
    """Disease progression within one age decile."""
    index = int(band[1:])
    low, high = raw["age"].quantile([index / 10, (index + 1) / 10]).to_list()
    rows = raw[(raw["age"] >= low) & (raw["age"] <= high)]
    stats = {"band": band, "patients": int(len(rows)), "mean_target": round(float(rows[TARGET].mean()), 2)}
    log_metadata({"patients": stats["patients"], "mean_target": stats["mean_target"]})
    return stats


@step
def train_scored(features: pd.DataFrame, n_estimators: int, seed: int = 0) -> dict:
    """Fit a forest of ``n_estimators`` trees and score it on the held-out split."""
    x_train, x_test, y_train, y_test = _split(features, seed)
    model = RandomForestRegressor(n_estimators=n_estimators, random_state=seed, n_jobs=1)
    model.fit(x_train, y_train)
    r2 = round(float(r2_score(y_test, model.predict(x_test))), 4)
    log_metadata({"r2": r2, "n_estimators": n_estimators})
    return {"n_estimators": n_estimators, "r2": r2}


@step
def pick_best(scores: list) -> tuple[Annotated[float, "best_r2"], Annotated[int, "best_size"]]:
    """The best of the statically fanned-out trainings (a fan-in of a list of outputs)."""
    best = max(scores, key=lambda s: s["r2"])
    log_metadata({"candidates": len(scores)})
    return best["r2"], best["n_estimators"]


@step
def report(per_band: list, best_r2: float, best_size: int) -> dict:
    """One summary: the bands in map order, and the model chosen."""
    log_metadata({"bands": len(per_band), "best_r2": best_r2})
    return {"bands": per_band, "best": {"r2": best_r2, "n_estimators": best_size}}


@pipeline
def fanout_pipeline(bands: int = 4):
    raw = ingest()
    per_band = band_stats.partial(raw=raw).map(band=age_bands(raw, bands))
    features = featurize(raw)
    scores = [train_scored(features, n_estimators=n) for n in (10, 30)]
    best_r2, best_size = pick_best(scores)
    return report(per_band, best_r2, best_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--max-workers", type=int, default=None)
    args = parser.parse_args()
    for label in ("first run", "second run"):
        t0 = time.perf_counter()
        run = fanout_pipeline.run(bands=args.bands, max_workers=args.max_workers)
        took = time.perf_counter() - t0
        computed = sorted(name for name, s in run.steps.items() if not s.cache_hit)
        print(
            f"{label}: run {run.id[:8]} {run.status} in {took:.2f} s — {len(run.steps)} step runs, "
            f"{run.cache_hits} cache hits, computed: {', '.join(computed) or 'none'}"
        )
        print(f"  best: {run.outputs['best']}")
    print()
    for argv in (["runs", "show", "latest"],):
        print(f"$ isthmus {' '.join(argv)}")
        app(argv, standalone_mode=False)


if __name__ == "__main__":
    main()
