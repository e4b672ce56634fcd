"""Hash an artifact while it is written or read, instead of in a second pass over the file.

:class:`HashingWriter` is the file a streaming materializer writes through (:meth:`Materializer.save_to`):
append-only (no seek), and its hash is taken from the file itself, region by region as the writes reach
it, by a background thread; the writer and the hasher run on different cores.

:class:`HashingReader` is the file a streaming materializer reads from (:meth:`Materializer.load_from`):
it hands out the file's bytes in order and hashes exactly what it handed out (the buffers it filled, or
the bytes it returned), again on a background thread; :meth:`HashingReader.finish` reads and hashes
whatever the materializer left, so the digest is the one of the whole file as read. The store compares
it with the ref and throws the value away on a mismatch: a materializer gets no other bytes than the
ones hashed.
"""

from __future__ import annotations

import io
import mmap
import os
import queue
import threading
from typing import Any

from blake3 import blake3

from isthmus.hashing import PREFIX

_STEP = 32 << 20  # bytes hashed (and read) per step: large enough for threads, small enough to overlap
_GRANULE = mmap.ALLOCATIONGRANULARITY


class HashFailed(OSError):
    """The store could not hash what was written or read (not the materializer's fault)."""


class _Hasher:
    """A thread that hashes, in order, the pieces handed to it (a bounded queue: at most a few pending)."""

    def __init__(self) -> None:
        self._h = blake3(max_threads=blake3.AUTO)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=3)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="isthmus-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # drain: the producer learns of the error at its next put or at finish
            try:
                if isinstance(item, tuple):
                    self._hash_region(*item)
                else:
                    self._h.update(item)
            except BaseException as exc:  # noqa: BLE001 - reported to the producer
                self._error = exc

    def _hash_region(self, fd: int, start: int, end: int) -> None:
        """Hash bytes ``start:end`` of the file behind ``fd`` (mapped, so they are not copied)."""
        base = start - start % _GRANULE
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        with mmap.mmap(fd, end - base, flags=flags, prot=mmap.PROT_READ, offset=base) as mapped:
            view = memoryview(mapped)
            try:
                self._h.update(view[start - base :])
            finally:
                view.release()

    def _failed(self) -> HashFailed:
        error = self._error
        return HashFailed(getattr(error, "errno", None) or 0, f"hashing failed: {type(error).__name__}: {error}")

    def put(self, item: Any) -> None:
        if self._error is not None:
            raise self._failed() from self._error
        self._queue.put(item)

    def finish(self) -> str:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._failed() from self._error
        return PREFIX + self._h.hexdigest()

    def abandon(self) -> None:
        if self._thread.is_alive():
            self._error = self._error or RuntimeError("abandoned")
            self._queue.put(None)
            self._thread.join()


class HashingWriter(io.RawIOBase):
    """A new file at ``path`` (created exclusively), written in order, hashed from the file as it grows."""

    def __init__(self, path: str) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(path, flags, 0o666)
        self._written = 0
        self._queued = 0
        self._hasher = _Hasher()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._written

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if (whence == io.SEEK_SET and offset == self._written) or (whence == io.SEEK_CUR and offset == 0):
            return self._written
        raise io.UnsupportedOperation("an artifact is written in order; this file cannot seek")

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B" or not view.c_contiguous:
            view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        total = view.nbytes
        while view:
            view = view[os.write(self._fd, view) :]
        self._written += total
        ready = self._written - self._written % _STEP
        if ready > self._queued:  # whole steps only: every region but the last starts on a step boundary
            self._hasher.put((self._fd, self._queued, ready))
            self._queued = ready
        return total

    def finish(self) -> tuple[str, int]:
        """(hash, size) of the file written; it must hold exactly what went through :meth:`write`."""
        if self._written > self._queued:
            self._hasher.put((self._fd, self._queued, self._written))
            self._queued = self._written
        digest = self._hasher.finish()
        held = os.fstat(self._fd).st_size
        if held != self._written:
            raise HashFailed(0, f"the file holds {held} bytes, {self._written} were written to it")
        return digest, self._written

    def discard(self) -> None:
        """Stop the hasher and close the file (``close`` does neither: a library may close what it wrote
        to before the store has taken the hash)."""
        if self._fd >= 0:
            self._hasher.abandon()
            os.close(self._fd)
            self._fd = -1
        self.close()


class HashingReader(io.RawIOBase):
    """The file behind ``fd`` read from its start, in order; every byte handed out is hashed.

    Buffers filled by :meth:`readinto` are hashed after the call returns, on another thread: the caller
    must not change them before :meth:`finish` (a materializer reads into the value it builds)."""

    def __init__(self, fd: int, expected_size: int) -> None:
        self._fd = fd
        self.expected_size = expected_size  # what the ref says: a reader may refuse to allocate more
        self._offset = 0
        self._hasher = _Hasher()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._offset

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` (stopping early only at the end of the file); returns how many bytes."""
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < view.nbytes:
            piece = view[filled : filled + _STEP]
            got = 0
            while got < piece.nbytes:
                n = os.preadv(self._fd, [piece[got:]], self._offset + got)
                if n == 0:
                    break
                got += n
            if got:
                self._hasher.put(piece[:got])
            self._offset += got
            filled += got
            if got < piece.nbytes:
                break
        return filled

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        data = os.pread(self._fd, size, self._offset)
        while len(data) < size:
            more = os.pread(self._fd, size - len(data), self._offset + len(data))
            if not more:
                break
            data += more
        if data:
            self._hasher.put(data)
        self._offset += len(data)
        return data

    def readall(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            chunk = self.read(_STEP)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def finish(self) -> tuple[str, int]:
        """(hash, size) of the whole file as read: what the materializer took, then the rest to its end."""
        while self.read(_STEP):
            pass
        return self._hasher.finish(), self._offset

    def discard(self) -> None:
        """Stop the hasher (the descriptor belongs to the caller)."""
        self._hasher.abandon()
        self.close()


__all__ = ["HashFailed", "HashingReader", "HashingWriter"]
