"""Content digests of files and directories a step declares it reads (``CachePolicy(files=...)``, ``Path``
parameters).

A file counts by its bytes; a directory by its listing and the bytes of every file under it (sorted
relative paths; symbolic links followed, as ``open()`` follows them, except a link back into a directory
being read, which counts by its target so a link loop cannot hang a run); a missing path by the fact that
it is missing. Digests are remembered per process by (device, inode, size, mtime, ctime): a rewrite
changes ctime even when it keeps size and mtime.
"""

from __future__ import annotations

import glob
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Sequence

from isthmus.hashing import PROCESS_KEY, hash_file, hash_parts

MISSING = "missing"
_MAGIC = frozenset("*?[")
_memo: OrderedDict[tuple[int, int, int, int, int], str] = OrderedDict()
_memo_lock = threading.Lock()
_MEMO_SIZE = 8192


def _file_digest(path: str, st: os.stat_result) -> str:
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _memo_lock:
        hit = _memo.get(key)
    if hit is not None:
        return hit
    try:
        digest = hash_file(path)[0]
    except OSError as exc:  # unreadable here: what the step reads cannot be seen, so never reuse the key
        return hash_parts("unreadable", PROCESS_KEY, path, str(exc.errno))
    with _memo_lock:
        _memo[key] = digest
        while len(_memo) > _MEMO_SIZE:
            _memo.popitem(last=False)
    return digest


def path_digest(path: str | os.PathLike[str]) -> str:
    """Digest of what is at ``path``: a file's bytes, a directory's listing and contents, or 'missing'."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return MISSING
    except OSError as exc:
        return hash_parts("unreadable", PROCESS_KEY, p, str(exc.errno))
    if stat.S_ISREG(st.st_mode):
        return _file_digest(p, st)
    if not stat.S_ISDIR(st.st_mode):  # a FIFO or device: never opened (it could block or never end)
        return hash_parts("special", p, str(stat.S_IFMT(st.st_mode)))
    parts: list[str] = ["dir"]
    _directory(p, "", {(st.st_dev, st.st_ino)}, parts)
    return hash_parts(*parts)


def _directory(path: str, rel: str, reading: set[tuple[int, int]], parts: list[str]) -> None:
    """Append the listing and contents under ``path``; ``reading``: the directories being read (a link
    to one of them is a loop, recorded by its target)."""
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        parts.append(f"{rel}/ unreadable {exc.errno} {hash_parts(PROCESS_KEY, path)}")
        return
    for name in names:
        full, sub = os.path.join(path, name), os.path.join(rel, name) if rel else name
        try:
            st = os.stat(full)
        except OSError:  # a dangling link: its target counts
            parts.append(f"{sub} -> {_link(full)}")
            continue
        if not stat.S_ISDIR(st.st_mode):
            parts.append(f"{sub}={path_digest(full)}")
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in reading:
            parts.append(f"{sub}/ -> {_link(full)}")
            continue
        parts.append(f"{sub}/")
        _directory(full, sub, reading | {ident}, parts)


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def declared_files_digest(patterns: Sequence[str]) -> str:
    """Digest of ``CachePolicy(files=...)``: each path or glob (``**`` allowed) with what it matches now.

    Relative paths are taken from the current working directory, as ``open()`` in the step does.
    """
    return hash_parts("files", *(part for pattern in patterns for part in pattern_parts(pattern)))


def pattern_parts(pattern: str) -> list[str]:
    """What one declared path or glob matches now: its digest, or a glob's match count and each match's."""
    expanded = os.path.expanduser(pattern)
    if _MAGIC & set(expanded):
        matches = sorted(glob.glob(expanded, recursive=True))
        return [f"{pattern}:{len(matches)}", *(f"{m}={path_digest(m)}" for m in matches)]
    return [f"{pattern}={path_digest(expanded)}"]
