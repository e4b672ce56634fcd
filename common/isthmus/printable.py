"""Recorded text made safe to show: its control characters written as escapes.

A parameter, an alias reason or an error is recorded as given; shown in a terminal (the CLI) or on a page
(the web UI, ``diff --html``), a control character in it must not move the cursor, retitle the window,
reorder or hide what follows. Newline and tab stay.
"""

from __future__ import annotations

import re

# C0 controls but newline and tab, DEL and C1 controls
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with each control character shown as an escape (``\\x1b``), never sent as one."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
