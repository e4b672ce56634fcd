#!/usr/bin/env bash
# Build the test environment (.venv, pinned by constraints.txt) and run the whole test suite.
# Used by the README and by CI (.ci/run). Extra arguments go to pytest: scripts/test.sh tests/core -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/uv_env.sh

uv run --no-sync pytest "$@"
