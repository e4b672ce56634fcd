"""Content digests of files and directories a step declares it reads (``CachePolicy(files=...)``, ``Path``
parameters).

A file counts by its bytes; a directory by its listing and the bytes of every file under it (sorted
relative paths; symbolic links to directories by their target, never followed, so a link loop cannot
hang a run); a missing path by the fact that it is missing. Digests are remembered per process by
(device, inode, size, mtime, ctime): a rewrite changes ctime even when it keeps size and mtime.
"""

from __future__ import annotations

import glob
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Sequence

from isthmus.fingerprint.values import PROCESS_NONCE
from isthmus.hashing import hash_file, hash_parts

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
        return hash_parts("unreadable", PROCESS_NONCE, path, str(exc.errno))
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
        return hash_parts("unreadable", PROCESS_NONCE, p, str(exc.errno))
    if stat.S_ISREG(st.st_mode):
        return _file_digest(p, st)
    if not stat.S_ISDIR(st.st_mode):  # a FIFO or device: never opened (it could block or never end)
        return hash_parts("special", p, str(stat.S_IFMT(st.st_mode)))
    parts: list[str] = ["dir"]
    for root, dirs, files in os.walk(p, followlinks=False):
        dirs.sort()
        rel_root = os.path.relpath(root, p)
        for d in dirs:
            full, rel = os.path.join(root, d), os.path.normpath(os.path.join(rel_root, d))
            parts.append(f"{rel}/ -> {os.readlink(full)}" if os.path.islink(full) else f"{rel}/")
        for name in sorted(files):
            full = os.path.join(root, name)
            parts.append(f"{os.path.normpath(os.path.join(rel_root, name))}={path_digest(full)}")
    return hash_parts(*parts)


def declared_files_digest(patterns: Sequence[str]) -> str:
    """Digest of ``CachePolicy(files=...)``: each path or glob (``**`` allowed) with what it matches now.

    Relative paths are taken from the current working directory, as ``open()`` in the step does.
    """
    parts: list[str] = []
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if _MAGIC & set(expanded):
            matches = sorted(glob.glob(expanded, recursive=True))
            parts.append(f"{pattern}:{len(matches)}")
            parts.extend(f"{m}={path_digest(m)}" for m in matches)
        else:
            parts.append(f"{pattern}={path_digest(expanded)}")
    return hash_parts("files", *parts)
