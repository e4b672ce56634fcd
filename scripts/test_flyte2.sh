#!/usr/bin/env bash
# Build the Flyte 2 test environment (.venv-flyte2: isthmus with the `flyte` 2.x SDK and flytekit 1.16,
# pinned by constraints.txt except rich-click, which flyte pins itself) and run the Flyte 2 tests in it.
#
#   scripts/test_flyte2.sh                       mypy of isthmus_flyte2 (real flyte types), then tests/flyte2
#   scripts/test_flyte2.sh [PYTEST ARGS...]      tests/flyte2 unless a test path is given
#
# flyte 2.x pins rich-click==1.8.9, below the main environment's pin, so it cannot join `.venv`
# (scripts/test.sh); uv makes a second environment cheap.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$HOME/.local/bin:$PATH"
command -v uv >/dev/null 2>&1 || { echo "scripts/test_flyte2.sh: uv is not installed; run scripts/test.sh once first" >&2; exit 1; }
unset PYTHONDONTWRITEBYTECODE
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
grep -v '^rich-click==' constraints.txt >"$constraints"
echo 'rich-click==1.8.9' >>"$constraints"
uv venv --python 3.11 --allow-existing -q .venv-flyte2
uv pip install -q --python .venv-flyte2 -c "$constraints" -e '.[flyte,flyte2,k8s,postgres,s3,dev]'
if [[ $# -eq 0 ]]; then  # the whole run: mypy of the Flyte 2 package against the real flyte types first
    echo "==> mypy flyte_plugin/isthmus_flyte2 (in .venv-flyte2)"
    .venv-flyte2/bin/mypy flyte_plugin/isthmus_flyte2
fi
paths=0
for arg in "$@"; do
    if [[ $arg != -* && -e ${arg%%::*} ]]; then
        paths=1
    fi
done
if [[ $paths -eq 0 ]]; then  # options only: the Flyte 2 tests
    set -- tests/flyte2 "$@"
fi
exec .venv-flyte2/bin/python -m pytest "$@"
