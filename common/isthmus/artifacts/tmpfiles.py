"""Partial writes (``.part`` files) named after their writer, so a dead writer's leftovers go at once.

A name is ``<random>.<pid>@<host>.part``; ``host`` is the host name plus the pid namespace, so two
containers that share a host name (and a filesystem) never judge each other's pids. A part whose writer
is on this host and whose pid is gone is removed immediately; any other part only after an age limit.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid

SUFFIX = ".part"
_NAME = re.compile(r"[0-9a-f]{32}\.(\d{1,10})@([A-Za-z0-9._~-]{1,200})\.part")


def _host_id() -> str:
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:120] or "host"
    try:
        host += f"~{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        pass
    return host


HOST_ID = _host_id()


def part_name() -> str:
    """A fresh temp file name that says which process writes it."""
    return f"{uuid.uuid4().hex}.{os.getpid()}@{HOST_ID}{SUFFIX}"


def writer_gone(name: str) -> bool:
    """True when ``name`` was written by a process of this host that no longer exists."""
    match = _NAME.fullmatch(name)
    if match is None or match.group(2) != HOST_ID:
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return _zombie(pid)  # killed, not yet reaped by its parent: it writes nothing more


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    except OSError:
        return False
    return bool(fields) and fields[0] == "Z"


def remove_parts(directory: str, older_than: float | None, *, parts_only: bool = False) -> int:
    """Remove ``.part`` files of dead writers of this host, and (when ``older_than`` is set) any file
    (any ``.part`` file with ``parts_only``) not modified for ``older_than`` seconds; returns how many."""
    removed = 0
    cutoff = None if older_than is None else time.time() - older_than
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if parts_only and not entry.name.endswith(SUFFIX):
            continue
        try:
            if writer_gone(entry.name) or (cutoff is not None and entry.stat().st_mtime < cutoff):
                os.remove(entry.path)
                removed += 1
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue
    return removed
