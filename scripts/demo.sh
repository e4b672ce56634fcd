#!/usr/bin/env bash
# The main job: build the environment (.venv, pinned by constraints.txt), run the example pipeline
# twice on the embedded defaults (SQLite store + local artifacts under $ISTHMUS_HOME, default ~/.isthmus),
# and show what isthmus recorded: where, what the second run reused, runs show / diff / why, what next.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
had_uv="$(command -v uv || true)"  # before uv_env.sh: is uv on the caller's PATH?
source scripts/uv_env.sh

uv run --no-sync python -m dags_examples.local_ml_pipeline "$@"
if [[ -z "$had_uv" ]]; then
    printf '\nuv was installed in %s, which your shell does not search: run\n  %s\nbefore the uv run commands above (or: source .venv/bin/activate, and drop "uv run --no-sync").\n' \
        "$(dirname "$(command -v uv)")" "export PATH=\"$(dirname "$(command -v uv)"):\$PATH\""
fi
