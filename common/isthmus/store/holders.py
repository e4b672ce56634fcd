"""Who holds a cache lease, and whether that holder is provably dead.

A holder is written ``host:pid:step_run_id:boot.pidns.start``: the host name, the process id, the step
run it is computing, and what tells this process apart from a later one with the same pid — the boot id,
the inode of its pid namespace and its start time in clock ticks since boot (Linux ``/proc``; ``-`` where
a part is unknown).

The rule for taking a lease over at once, without waiting for it to expire: the holder ran on this host
(same host name), in this boot, in this pid namespace, and its pid is gone, is a zombie, or belongs to a
process that started at another time (the pid was reused). Everything else is trusted until its lease
expires (``ISTHMUS_LEASE_TTL``): holders on other hosts; other containers, which may share the host name
(``--network host``, ``--uts host``) but never the pid namespace; holders in an unknown format.
Without ``/proc`` (macOS), a gone pid on this host counts as dead, and pid reuse makes us wait for the TTL.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import lru_cache

_UNKNOWN = "-"


@dataclass(frozen=True)
class LeaseHolder:
    """A parsed holder string."""

    host: str
    pid: int
    step_run_id: str
    boot: str = _UNKNOWN
    pidns: str = _UNKNOWN
    start: str = _UNKNOWN

    def format(self) -> str:
        return f"{self.host}:{self.pid}:{self.step_run_id}:{self.boot}.{self.pidns}.{self.start}"

    @classmethod
    def parse(cls, text: str) -> LeaseHolder | None:
        """The holder written by :meth:`format`, or None for any other string (trusted until expiry)."""
        parts = text.split(":")
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        proc = parts[3].split(".")
        if len(proc) != 3:
            return None
        return cls(parts[0], int(parts[1]), parts[2], *proc)


@lru_cache(maxsize=1)
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip().replace("-", "")[:16] or _UNKNOWN
    except OSError:
        return _UNKNOWN


@lru_cache(maxsize=1)
def _pid_namespace() -> str:
    try:
        link = os.readlink("/proc/self/ns/pid")  # 'pid:[4026531836]'
    except OSError:
        return _UNKNOWN
    inode = link.rpartition("[")[2].rstrip("]")
    return inode if inode.isdigit() else _UNKNOWN


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of ``pid`` in this namespace, or None when there is no such
    process. Raises OSError when /proc cannot tell (not mounted, not readable)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except FileNotFoundError:
        if not os.path.isdir("/proc/self"):
            raise
        return None
    fields = text.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    return fields[0], fields[19]


@lru_cache(maxsize=8)
def _own_start(pid: int) -> str:
    try:
        stat = _proc_stat(pid)
    except OSError:
        return _UNKNOWN
    return stat[1] if stat else _UNKNOWN


def current_holder(step_run_id: str) -> str:
    """The holder string of this process computing ``step_run_id``."""
    pid = os.getpid()  # read each time: a forked child is another holder
    return LeaseHolder(socket.gethostname(), pid, step_run_id, _boot_id(), _pid_namespace(), _own_start(pid)).format()


def holder_is_dead(text: str) -> bool:
    """True only when ``text`` names a process of this host, boot and pid namespace that no longer runs
    (see the module docstring for the rule)."""
    holder = LeaseHolder.parse(text)
    if holder is None or holder.host != socket.gethostname():
        return False
    if (holder.boot, holder.pidns) != (_boot_id(), _pid_namespace()):
        return False
    if holder.boot == _UNKNOWN or holder.pidns == _UNKNOWN:  # no /proc: a gone pid is all we can see
        return _UNKNOWN == holder.boot == holder.pidns and not _pid_exists(holder.pid)
    try:
        stat = _proc_stat(holder.pid)
    except OSError:
        return False
    if stat is None:
        return True
    state, start = stat
    return state == "Z" or (holder.start != _UNKNOWN and start != holder.start)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True
