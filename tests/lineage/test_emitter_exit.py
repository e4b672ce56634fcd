"""A short-lived process whose OpenLineage receiver is down says so once, with the count, before it exits
within the bounded flush time; a long-running one says so without waiting for exit."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isthmus import lineage, pipeline, step
from isthmus.lineage import openlineage as emitter_module
from tests.helpers import REPO, write_module

SHORT_LIVED = """
from isthmus import pipeline, step

@step
def load(n: int) -> list:
    return list(range(n))

@step
def total(xs: list) -> int:
    return sum(xs)

@pipeline
def flow(n: int = 3):
    return total(load(n))

print("result", flow.run(n=5).outputs)
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_short_lived_process_warns_once_with_the_count_and_exits_promptly(tmp_path: Path) -> None:
    write_module(tmp_path, "short_lived", SHORT_LIVED)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    env.update(ISTHMUS_HOME=str(tmp_path / "home"), OPENLINEAGE_URL=f"http://127.0.0.1:{_closed_port()}")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "short_lived.py")], env=env, capture_output=True, text=True, timeout=120
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "result 10" in proc.stdout
    warnings = [line for line in proc.stderr.splitlines() if "isthmus lineage" in line]
    # 6 events: the pipeline run and two step runs, START and COMPLETE each
    assert warnings == [warnings[0]] and "6 OpenLineage event(s) not delivered" in warnings[0], proc.stderr
    assert "runs go on without them" in warnings[0]
    # a correctness bound, not a benchmark: the exit flush is bounded by EXIT_FLUSH_SECONDS (5 s)
    assert took < 60, f"the process took {took:.1f} s to exit"


@step
def one(n: int) -> int:
    return n + 1


@pipeline
def tiny(n: int = 1):
    return one(n)


def test_a_long_running_process_reports_without_waiting_for_exit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    released = threading.Event()

    class DeadClient:
        def emit(self, event: object) -> None:
            released.wait(30)  # fail only once the run has queued all its events
            raise ConnectionError("receiver down")

    monkeypatch.setattr(emitter_module, "REPORT_AFTER_SECONDS", 0.2)
    emitter = emitter_module.OpenLineageEmitter(DeadClient())
    lineage.set_lineage_hook(emitter)
    try:
        with caplog.at_level(logging.WARNING, logger="isthmus.lineage"):
            tiny.run()
            released.set()
            deadline = time.monotonic() + 30
            while not caplog.records and time.monotonic() < deadline:
                time.sleep(0.05)  # no flush(): the report comes on its own
            assert [r.getMessage() for r in caplog.records] == [
                "isthmus lineage: 4 OpenLineage event(s) not delivered (ConnectionError: receiver down); "
                "runs go on without them"
            ]
            tiny.run()
            assert emitter.flush(30) is True
            assert caplog.records[-1].getMessage() == (
                "isthmus lineage: 4 more OpenLineage event(s) not delivered (8 in all)"
            )
            assert len(caplog.records) == 2
    finally:
        lineage.set_lineage_hook(None)
