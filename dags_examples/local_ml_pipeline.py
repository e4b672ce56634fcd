"""Run the example pipeline locally twice (the second run is all cache hits), then show what isthmus
recorded — where it keeps it, what the second run reused, what ``runs show``, ``diff`` and ``why`` say —
and what to try next.

    python -m dags_examples.local_ml_pipeline [--n-estimators 100]
"""

from __future__ import annotations

import argparse
import time

from dags_examples.steps import ml_pipeline
from isthmus import PipelineRun, get_settings
from isthmus.cli import app

CLI = "uv run --no-sync isthmus"  # how the commands are typed after the README's two set-up commands


def _say(text: str = "") -> None:
    print(text, flush=True)


def _cli(*argv: str, why: str) -> None:
    _say(f"# {why}")
    _say(f"$ {CLI} {' '.join(argv)}")
    app(list(argv), standalone_mode=False)
    _say()


def _describe(label: str, run: PipelineRun, took: float) -> None:
    computed = [name for name, s in run.steps.items() if not s.cache_hit]
    reused = [name for name, s in run.steps.items() if s.cache_hit]
    _say(f"{label}: pipeline run {run.id[:8]} {run.status} in {took:.2f} s")
    if computed:
        _say(f"  computed: {', '.join(computed)}")
    for name in reused:
        step = run.steps[name]
        _say(
            f"  {name}: cache hit, reused step run {str(step.source_step_run_id)[:8]} (its code, inputs and "
            "dependencies are unchanged)"
        )
    _say(f"  metrics: {run.outputs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-estimators", type=int, default=100)
    args = parser.parse_args()
    settings = get_settings()
    _say("isthmus records every step run of the example pipeline (ingest -> featurize -> train -> evaluate):")
    _say(f"  metadata store: {settings.store_url}")
    _say(f"  artifacts:      {settings.artifact_root}")
    _say("  (set ISTHMUS_HOME to keep them elsewhere)")
    _say()
    runs = []
    for label in ("first run", "second run"):
        t0 = time.perf_counter()
        run = ml_pipeline.run(n_estimators=args.n_estimators)
        _describe(label, run, time.perf_counter() - t0)
        runs.append(run)
        _say()
    second = runs[-1]
    _say(
        f"The second run reused results instead of computing them: {second.cache_hits} of {len(second.steps)} "
        "steps were cache hits."
    )
    _say(f"Ids like {second.id[:8]} (or 'latest', 'latest~1', 'latest:train') work in every command below.")
    _say()
    _cli("runs", "list", "--limit", "5", why="the recent pipeline runs")
    _cli("runs", "show", "latest", why="one run: each step, computed or reused, and why")
    _cli("diff", "latest~1", "latest", why="what changed between the two runs (nothing), apart from how they ran")
    _cli("why", "latest:train", why="where the cache hit of 'train' came from")
    _say("What to try next:")
    _say("  - edit _interaction_terms in dags_examples/steps.py and run the demo again: featurize and what")
    _say(f"    follows compute again in its first run; '{CLI} why latest~1:featurize' shows the diff of that function")
    _say(f"  - '{CLI} lineage latest' shows where every artifact came from and what it fed,")
    _say(f"    '{CLI} artifacts list' the versions, '{CLI} artifacts alias train.output@production ID' promotes one")
    _say("  - 'uv run --no-sync python -m dags_examples.fanout_pipeline': fan-out, named outputs, logged metrics")
    _say("  - the README's 'In Airflow' and 'In Flyte' sections run these same steps there, sharing this cache")


if __name__ == "__main__":
    main()
