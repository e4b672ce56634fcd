#!/usr/bin/env bash
# The main job: build the environment (.venv, pinned by constraints.txt), run the example pipeline
# twice on the embedded defaults (SQLite store + local artifacts under $ISTHMUS_HOME, default ~/.isthmus),
# and show what isthmus recorded: where, what the second run reused, runs show / diff / why, what next.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/uv_env.sh

uv run --no-sync python -m dags_examples.local_ml_pipeline "$@"
