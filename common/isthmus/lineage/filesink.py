"""The default lineage destination: events appended as JSON lines to ``$ISTHMUS_HOME/lineage/events.jsonl``.

Each event is one ``write`` to a file opened with ``O_APPEND``, made by the thread that emits it: nothing
waits in memory (a killed process has written every event it emitted), a run's events are in the order
they were emitted, and processes appending to the same file never interleave within a line.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class FileSink:
    """Appends lines to one file, opened on first use (and again if the file was removed meanwhile)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()

    def write(self, line: bytes) -> None:
        """Append ``line`` (one event); raises OSError when it cannot be written."""
        with self._lock:
            fd = self._open()
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]

    def _open(self) -> int:
        fd = self._fd
        if fd is not None:
            try:
                if os.fstat(fd).st_nlink > 0:
                    return fd
            except OSError:
                pass
            self._close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        return self._fd

    def close(self) -> None:
        """Close the file (a later write opens it again)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
