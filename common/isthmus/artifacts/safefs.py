"""Local files of an artifact store, opened without following links.

Whoever can write a shared artifact root could plant a symbolic link where isthmus expects an object or one
of its directories (``objects/<xx>``, ``.tmp``, ``.corrupt``), to make a reader load a file outside the root
or a writer commit or quarantine into another directory. So every object is opened with ``O_NOFOLLOW``
(and ``O_NONBLOCK``: a FIFO never blocks a reader) and must be a regular file, and directories below the
root are walked one ``O_NOFOLLOW`` directory descriptor at a time; renames go between those descriptors.
The root itself may be a link: it is configuration, not content.

On Linux an open descriptor is handed to path-based code (materializers, the mmap hasher) as
``/proc/self/fd/<n>``: whatever is renamed at the object's path afterwards, the bytes read are the ones of
the file that was checked.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_PROC_FD = os.path.isdir("/proc/self/fd")
_MAP_MIN = 1 << 20  # smaller objects are copied: a mapping costs more than the copy


class UnsafeEntry(OSError):
    """An entry inside the artifact root is a link, or not the kind of file isthmus put there."""


def _refuse(path: str, what: str) -> UnsafeEntry:
    return UnsafeEntry(errno.ELOOP, f"is {what}; isthmus follows no link inside an artifact root", path)


def open_dir(root: str, parts: Sequence[str] = (), *, create: bool = False) -> int:
    """A descriptor of ``root/parts...``, each part a real directory (created with ``create``); raises
    UnsafeEntry for a link or a non-directory, FileNotFoundError for a missing part."""
    fd = os.open(root, _DIR_FLAGS)
    where = root
    try:
        for part in parts:
            where = os.path.join(where, part)
            if create:
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _refuse(where, "a link or not a directory") from None
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_file(name: str, dir_fd: int | None = None, *, path_for_errors: str | None = None) -> int:
    """A read descriptor of the regular file ``name`` (relative to ``dir_fd``), never through a link."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path_for_errors or name, "a symbolic link") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refuse(path_for_errors or name, "not a regular file")
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_object(root: str, rel_parts: Sequence[str]) -> int:
    """A read descriptor of ``root/<dirs...>/<file>`` with no link anywhere below ``root``."""
    *dirs, name = rel_parts
    dir_fd = open_dir(root, dirs)
    try:
        return open_file(name, dir_fd, path_for_errors=os.path.join(root, *rel_parts))
    finally:
        os.close(dir_fd)


def touch(name: str, dir_fd: int) -> None:
    """Make sure ``name`` in ``dir_fd`` is a regular file (created empty; a link in its place is replaced)."""
    for _ in range(3):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISREG(st.st_mode):
                return
            if not stat.S_ISLNK(st.st_mode):
                raise _refuse(name, "not a regular file")
            os.unlink(name, dir_fd=dir_fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            os.close(os.open(name, flags, 0o644, dir_fd=dir_fd))
            return
        except FileExistsError:  # another writer made it meanwhile: look again
            continue
    raise _refuse(name, "changing under this writer")


def is_real_dir(path: str) -> bool:
    """A directory, not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def is_regular_file(path: str) -> bool:
    """A regular file, not a link to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


@contextmanager
def fd_path(fd: int, fallback: str) -> Iterator[str]:
    """A path that opens exactly the file behind ``fd`` (Linux: ``/proc/self/fd/<n>``); elsewhere
    ``fallback``, checked again to be a regular file and not a link."""
    if _PROC_FD:
        yield f"/proc/self/fd/{fd}"
        return
    if not is_regular_file(fallback):
        raise _refuse(fallback, "a link or not a regular file")
    yield fallback


def read_all(fd: int, size: int) -> bytes:
    """The file behind ``fd`` from its start, up to ``size + 1`` bytes: a file that grew shows it by its
    length, so a hash check against ``size`` bytes refuses it. One read for any file under 2 GiB."""
    chunks: list[bytes] = []
    offset = 0
    while offset <= size:
        chunk = os.pread(fd, size + 1 - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def frozen_content(fd: int, size: int) -> bytes | mmap.mmap:
    """The content of the file behind ``fd`` as it is now, immune to later changes by anyone else: a
    read-only private mapping when the file is large and only this user (or root) could write to it —
    renaming another file over its name does not change a mapping — else a copy in memory
    (:func:`read_all`). Release it with :func:`release`."""
    st = os.fstat(fd)
    geteuid = getattr(os, "geteuid", None)
    only_mine = geteuid is not None and st.st_uid == geteuid() and not st.st_mode & 0o022
    if size >= _MAP_MIN and st.st_size == size and only_mine:
        try:
            return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0), prot=mmap.PROT_READ)
        except (OSError, ValueError, AttributeError):  # no mmap here: read it
            pass
    return read_all(fd, size)


def release(content: bytes | mmap.mmap) -> None:
    """Unmap what :func:`frozen_content` mapped (left to the collector while something still uses it)."""
    if isinstance(content, mmap.mmap):
        try:
            content.close()
        except BufferError:
            pass


def private_dir(path: str) -> str:
    """``path`` as a directory only this user can use (created 0700); raises UnsafeEntry when it exists
    as a link, or belongs to another user or is open to others (a shared temp directory is not private)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "a link or not a directory")
    getuid = getattr(os, "getuid", None)
    if getuid is not None and (st.st_uid != getuid() or st.st_mode & 0o022):
        raise UnsafeEntry(
            errno.EPERM, "belongs to another user or others may write it; it cannot hold verified copies", path
        )
    return path


__all__ = [
    "UnsafeEntry",
    "fd_path",
    "frozen_content",
    "is_real_dir",
    "is_regular_file",
    "open_dir",
    "open_file",
    "open_object",
    "private_dir",
    "read_all",
    "release",
    "touch",
]
