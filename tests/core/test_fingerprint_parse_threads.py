"""Steps fingerprinted in parallel worker threads parse sources at once. On CPython 3.11 two ``ast.parse``
calls interleaved by a finalizer run mid-parse can fail with ``SystemError: AST constructor recursion
depth mismatch`` (a parallel local run failed so); isthmus parses one call at a time."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO

STRESS = r"""
import gc, sys, threading, time
from isthmus.fingerprint.syntax import parse

sys.setswitchinterval(1e-6)
gc.set_threshold(50, 5, 5)
source = "def f(x):\n" + "".join(f"    y{i} = [(a, {{b: (c, [d, (e, f)])}}) for a in x if a]\n" for i in range(40))


class Finalized:
    def __del__(self):
        time.sleep(0)  # lets another thread run while this one is inside a parse


errors = []


def work(depth):
    if depth:  # threads at different stack depths
        return work(depth - 1)
    try:
        for _ in range(400):
            garbage = Finalized()
            garbage.cycle = garbage  # collected, and finalized, in the middle of some parse
            del garbage
            parse(source)
    except SystemError as exc:
        errors.append(exc)


threads = [threading.Thread(target=work, args=(d * 7,)) for d in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(errors), errors[:1])
"""


def test_sources_parsed_in_many_threads_at_once_never_fail() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", STRESS], capture_output=True, text=True, timeout=300, cwd=REPO,
        env={"PYTHONPATH": str(REPO / "common"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "0", proc.stdout
