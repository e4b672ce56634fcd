#!/usr/bin/env bash
# Build the test environment (.venv, pinned by constraints.txt) and run the test suite.
# Used by the README and by CI (.ci/run). Extra arguments go to pytest: scripts/test.sh tests/core -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

uv venv --python 3.11 --allow-existing .venv && uv pip install --python .venv -c constraints.txt -e '.[all,dev]' && uv run --no-sync pytest "$@"
