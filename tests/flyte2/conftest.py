"""Flyte 2 tests run in their own environment (``scripts/test_flyte2.sh``: the ``flyte`` 2.x SDK pins
rich-click below the main environment's pin). In an environment without ``flyte`` they are not
collected, and the session header says so."""

from __future__ import annotations

import importlib.util

FLYTE2 = importlib.util.find_spec("flyte") is not None

if not FLYTE2:
    collect_ignore_glob = ["test_*.py"]


def pytest_report_header() -> str:
    if FLYTE2:
        return "flyte2: the flyte 2.x SDK is installed; tests/flyte2 run"
    return "flyte2: tests/flyte2 not collected (no flyte 2.x SDK here); run them with scripts/test_flyte2.sh"
