# Sourced by scripts/demo.sh and scripts/test.sh: make sure uv exists, then build .venv from
# constraints.txt with every extra (idempotent; fast when nothing changed).
export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install -q uv \
        || python3 -m pip install -q --user uv \
        || python3 -m pip install -q --break-system-packages uv
    hash -r
fi
# Imports in test subprocesses are much faster with bytecode caches.
unset PYTHONDONTWRITEBYTECODE
uv venv --python 3.11 --allow-existing -q .venv
uv pip install -q --python .venv -c constraints.txt -e '.[all,dev]'
