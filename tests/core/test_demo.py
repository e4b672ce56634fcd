"""The main job (``bash scripts/demo.sh`` runs ``python -m dags_examples.local_ml_pipeline``) says what it did
in words a newcomer follows, and the commands it suggests work as it types them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import skip_or_fail
from tests.helpers import REPO


def test_the_demo_explains_what_it_recorded_and_its_suggested_commands_work(isthmus_home: Path) -> None:
    env = {**os.environ, "ISTHMUS_HOME": str(isthmus_home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "dags_examples.local_ml_pipeline", "--n-estimators", "10"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"metadata store: sqlite:///{isthmus_home / 'isthmus.db'}" in out
    assert "computed: ingest, featurize, train, evaluate" in out
    assert "4 of 4 steps were cache hits" in out
    second = re.search(r"second run: pipeline run ([0-9a-f]{8})", out)
    assert second is not None
    assert "train: cache hit, reused step run" in out
    for shown in ("runs list --limit 5", "runs show latest", "diff latest~1 latest", "why latest:train"):
        assert f"$ uv run --no-sync isthmus {shown}" in out
    assert "steps: no changes (4 identical)" in out and "why: hit: from" in out
    assert "What to try next:" in out

    uv = shutil.which("uv")
    if uv is None:
        skip_or_fail("uv is not on PATH: cannot run the demo's suggested commands as typed")
    typed = subprocess.run(
        [uv, "run", "--no-sync", "isthmus", "runs", "show", second.group(1)],
        env={**os.environ, "ISTHMUS_HOME": str(isthmus_home)}, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert typed.returncode == 0, typed.stderr
    assert "ml_pipeline run" in typed.stdout and "hit (from" in typed.stdout
