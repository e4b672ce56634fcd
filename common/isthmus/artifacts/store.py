"""Content-addressed artifact store on fsspec.

Layout under the root: ``objects/<2 hex>/<hash hex>`` holds committed artifacts; ``.tmp/`` holds
writes in progress. An object becomes visible only by an atomic rename (local) or a single PUT
(object stores), so a crash never leaves a partial artifact where a reader could find it.

Refs are untrusted: every path comes from :meth:`ArtifactStore.path_for`, which accepts only a valid
content hash, and a ref whose ``uri`` is not where this store keeps its hash is refused (by ``load``) or
reported absent (by ``exists``/``is_valid``) before anything on disk is touched; its ``python_type``
must name nothing whose lookup could run a program (:func:`~isthmus.artifacts.types.check_type_path`).

Code-executing materializers (pickle: cloudpickle, joblib, user materializers by default):

- at commit the store records which one wrote the bytes: an empty *writer mark*
  ``writers/<xx>/<hex>@<materializer name>``, made before the object is renamed into place. Such a
  materializer loads only an object with its own mark, so a ref cannot relabel text that ``str`` wrote
  as a pickle (an object without one, e.g. pickled by an earlier isthmus, is a cache miss: recomputed);
- a load freezes the object's content once (a copy in memory, or a private read-only mapping of a
  file only this user can write), hashes it and hands exactly it to the materializer
  (:meth:`Materializer.load_bytes`), whatever the verify mode: no other process can swap the file
  between the check and the load.

Other materializers keep the fast path: the verify mode decides whether the bytes are hashed, and the
materializer reads the object through the descriptor that was checked. A streaming one (numpy; see
:mod:`isthmus.artifacts.streams`) is hashed while it reads, when a check by hash is due: it builds the value
from exactly the bytes hashed, and the value is dropped (the object moved aside) when they do not match.
Streaming materializers are also hashed while they write, so a save reads nothing back. Local objects and the store's
directories are opened without following links (:mod:`isthmus.artifacts.safefs`). A failure of the store
itself (permissions, full disk, unreachable bucket) raises :class:`ArtifactStoreError` naming
``ISTHMUS_ARTIFACT_ROOT``, never a materializer error.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from isthmus import hashing
from isthmus.artifacts import safefs, tmpfiles
from isthmus.artifacts.errors import ArtifactStoreError, HoldsSecret, InvalidArtifactRef
from isthmus.artifacts.materializers import (
    BytesMaterializer,
    JsonMaterializer,
    Materializer,
    StrMaterializer,
    candidates,
    executes_code,
    get_materializer,
    type_path,
    warn_fallback,
)
from isthmus.artifacts.refs import HASH_ALGORITHMS, ArtifactRef, check_content_hash, metadata_problem
from isthmus.artifacts.streams import HashFailed, HashingReader, HashingWriter
from isthmus.artifacts.types import check_type_path
from isthmus.errors import ArtifactMissing, MaterializationError
from isthmus.hashing import hash_bytes, hash_stream

_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "abfs", "az", "abfss", "memory"}
_VERIFY_MODES = ("hash", "size", "off")
# A file changed within this long of being hashed may change again without its mtime or ctime moving
# (filesystem timestamps follow the kernel tick, a few ms on ext4/xfs/btrfs): such a hash check is
# not remembered ("racy git").
_RACY_NS = 100_000_000
# errno values that mean the storage failed, not the materializer
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}
# object-store metadata that changes whenever an object's bytes do (remote verdicts are keyed by it)
_VERSION_KEYS = ("VersionId", "version_id", "generation", "ETag", "etag", "md5Hash")
_UNREADABLE = (FileNotFoundError, NotADirectoryError, safefs.UnsafeEntry)
# Values of these formats up to this size are serialized in memory, hashed there and written once.
SMALL_BYTES = 1 << 20
_DIGITS = HASH_ALGORITHMS[hashing.ALGORITHM]  # an object's file name: its digest, lowercase hex
_HEX = frozenset("0123456789abcdef")
_IN_MEMORY = (JsonMaterializer, StrMaterializer, BytesMaterializer)


def hash_file(path: str) -> tuple[str, int]:
    """(hash, size) of the regular file at ``path``, opened without following a link (a link or a FIFO
    raises :class:`~isthmus.artifacts.safefs.UnsafeEntry`)."""
    fd = safefs.open_file(path)
    try:
        with safefs.fd_path(fd, path) as readable:
            return hashing.hash_file(readable)
    finally:
        os.close(fd)


class ArtifactStore:
    """Stores and loads artifacts by content hash. ``root`` is a local path or any fsspec URL."""

    def __init__(self, root: str, *, verify: str = "hash", local_cache: str | None = None) -> None:
        if verify not in _VERIFY_MODES:
            raise ValueError(f"verify={verify!r} is not one of {_VERIFY_MODES}")
        self._fs: Any = None
        if root.startswith("/") and "::" not in root:  # an absolute local path: fsspec is loaded when needed
            self.local, path = True, root
        else:
            import fsspec
            from fsspec.implementations.local import LocalFileSystem

            self._fs, path = fsspec.core.url_to_fs(root)
            self.local = isinstance(self._fs, LocalFileSystem)
        self.root = os.path.abspath(path) if self.local else path.rstrip("/")
        self.protocol = (
            "file" if self.local else (self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0])
        )
        self.url = self.root if self.local else f"{self.protocol}://{self.root}"
        self.verify_mode = verify
        self._local_cache = local_cache
        self._private: dict[str, str] = {}  # default local directories, checked private once
        # local path -> (hash, size, mtime_ns, ctime_ns, ino, trusted for changes before this time ns)
        self._verified: dict[str, tuple[Any, ...]] = {}
        self._remote_verified: dict[str, tuple[str, str]] = {}  # remote path -> (hash, version token)
        self._paths: dict[str, str] = {}  # content hash (validated) -> its path: the hot path skips the regex
        self._lock = threading.Lock()
        if self.local:
            self._make_dirs()

    @property
    def fs(self) -> Any:
        """The fsspec filesystem of ``root`` (for a local path, fsspec's LocalFileSystem)."""
        if self._fs is None:
            from fsspec.implementations.local import LocalFileSystem

            self._fs = LocalFileSystem()
        return self._fs

    def _make_dirs(self) -> None:
        for sub in (".tmp", "objects"):
            path = os.path.join(self.root, sub)
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as exc:
                raise self._store_error("create the directory", path, exc) from None

    def _store_error(self, action: str, path: str, exc: BaseException, where: str = "") -> ArtifactStoreError:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        need = "a directory this user can write" if self.local else "a location these credentials can read and write"
        return ArtifactStoreError(
            f"{where}artifact store cannot {action} {path} ({reason}): ISTHMUS_ARTIFACT_ROOT={self.url!r} must be "
            f"{need}; fix its permissions or free space, or set ISTHMUS_ARTIFACT_ROOT to another location"
        )

    # -- paths -----------------------------------------------------------------------------------
    def _rel(self, content_hash: str) -> str:
        hexpart = check_content_hash(content_hash).split(":", 1)[1]
        return f"objects/{hexpart[:2]}/{hexpart}"

    def path_for(self, content_hash: str) -> str:
        """Where this store keeps ``content_hash`` (raises InvalidArtifactRef for a malformed hash)."""
        path = self._paths.get(content_hash)
        if path is None:
            rel = self._rel(content_hash)
            path = os.path.join(self.root, rel) if self.local else f"{self.root}/{rel}"
            if len(self._paths) > 100_000:
                self._paths.clear()
            self._paths[content_hash] = path
        return path

    def uri_for(self, content_hash: str) -> str:
        path = self.path_for(content_hash)
        return f"file://{path}" if self.local else f"{self.protocol}://{path}"

    def holds(self, ref: ArtifactRef) -> bool:
        """Whether ``ref`` is a valid ref that points into this store (no disk access)."""
        return isinstance(ref, ArtifactRef) and ref.uri == self.uri_for(ref.content_hash)

    def check_ref(self, ref: Any, *, loading: bool = True) -> str:
        """The path of ``ref`` in this store, checked before its bytes are touched: InvalidArtifactRef when
        it is not a valid ref, its uri is not where this store keeps its hash, its python_type could run a
        program when looked up, or (``loading``) its materializer could run code and did not write these
        bytes here (one stat of its writer mark); MaterializationError when (``loading``) no materializer of
        its name is registered in this process."""
        if not isinstance(ref, ArtifactRef):
            ref = ArtifactRef.from_dict(ref)
        expected = self.uri_for(ref.content_hash)
        if ref.uri != expected:
            raise InvalidArtifactRef(
                f"artifact ref {ref.content_hash}: uri {ref.uri!r:.200} is not where this artifact store keeps it "
                f"({expected!r}); load it with the store that wrote it (ISTHMUS_ARTIFACT_ROOT={self.url!r} here)"
            )
        check_type_path(ref.python_type)
        if loading and get_materializer(ref.materializer).needs_verified_bytes and not self._has_mark(ref):
            raise InvalidArtifactRef(
                f"artifact ref {ref.content_hash}: materializer {ref.materializer!r} can run code carried in the bytes "
                "it loads, and this artifact store has no record that isthmus wrote these bytes with it; pass the "
                "ref exactly as isthmus wrote it (or re-run the step that produced it)"
            )
        return self.path_for(ref.content_hash)

    def _path_of(self, ref: ArtifactRef) -> str | None:
        """The path of a ref of this store, or None for a ref of another store (it is not here)."""
        return self.path_for(ref.content_hash) if self.holds(ref) else None

    def _object_dir(self, content_hash: str, *, create: bool = False) -> int:
        """A descriptor of ``objects/<xx>`` of ``content_hash``, reached without following a link."""
        return safefs.open_dir(self.root, ["objects", content_hash.split(":", 1)[1][:2]], create=create)

    def _private_dir(self, name: str) -> str:
        """``<temp dir>/<name>-<uid>``: a default local directory of remote stores, private to this user."""
        path = self._private.get(name)
        if path is None:
            uid = getattr(os, "getuid", lambda: "user")()
            path = safefs.private_dir(os.path.join(tempfile.gettempdir(), f"{name}-{uid}"))
            self._private[name] = path
        return path

    def _tmp_dir(self) -> str:
        if self.local:
            path = os.path.join(self.root, ".tmp")
            if not safefs.is_real_dir(path):
                if os.path.lexists(path):
                    raise safefs.UnsafeEntry(
                        errno.ELOOP,
                        "is a link or not a directory; isthmus follows no link inside an artifact root",
                        path,
                    )
                os.makedirs(path, exist_ok=True)  # removed behind our back (wipe, cache clear)
            return path
        if self._local_cache:
            os.makedirs(self._local_cache, exist_ok=True)
            return self._local_cache
        return self._private_dir("isthmus-upload")

    # -- writer marks: which code-executing materializer wrote an object --------------------------------
    def _mark_path(self, content_hash: str, materializer: str) -> str:
        hexpart = check_content_hash(content_hash).split(":", 1)[1]
        rel = f"writers/{hexpart[:2]}/{hexpart}@{materializer.split('@', 1)[0]}"
        return os.path.join(self.root, rel) if self.local else f"{self.root}/{rel}"

    def _has_mark(self, ref: ArtifactRef) -> bool:
        """Whether this store recorded that ``ref.materializer`` wrote the bytes of ``ref.content_hash``."""
        mark = self._mark_path(ref.content_hash, ref.materializer)
        if self.local:
            return safefs.is_regular_file(mark)
        return self._remote_info(mark) is not None

    def _vouched(self, ref: ArtifactRef) -> bool:
        """False when ``ref`` names a code-executing materializer that did not write its bytes here."""
        return not executes_code(ref.materializer) or self._has_mark(ref)

    # -- writing ---------------------------------------------------------------------------------
    def save(
        self,
        obj: Any,
        *,
        step_name: str = "?",
        output: str = "output",
        materializer: Materializer | str | None = None,
        forbidden: tuple[bytes, ...] = (),
    ) -> ArtifactRef:
        """Materialize ``obj`` and commit it; identical content is stored once. When its serialized form
        holds any of the ``forbidden`` byte strings (a secret's spellings), nothing is stored and
        :class:`HoldsSecret` is raised."""
        where = f"step {step_name!r} output {output!r}: "
        try:
            tmp_dir = self._tmp_dir()
        except OSError as exc:
            path = getattr(exc, "filename", None) or self._local_cache or tempfile.gettempdir()
            raise self._store_error("use the directory", path, exc, where) from exc
        errors: list[str] = []
        for index, mat in enumerate(candidates(obj, materializer)):
            if self.local and index == 0 and type(mat) in _IN_MEMORY:
                try:
                    data: bytes | None = mat.dumps(obj)  # type: ignore[attr-defined]
                except Exception:  # the usual path below reports it (or falls back)
                    data = None
                if data is not None and len(data) <= SMALL_BYTES:
                    if forbidden and _holds_any(data, forbidden):
                        raise HoldsSecret(f"{where}its stored form would hold a secret", hash_bytes(data))
                    return self._save_small(data, mat, type_path(type(obj)), tmp_dir, where)
            tmp = os.path.join(tmp_dir, tmpfiles.part_name())
            hashed: tuple[str, int] | None = None
            try:
                if mat.writes_stream:
                    metadata, hashed = _save_streaming(mat, obj, tmp)
                else:
                    metadata = mat.save(obj, tmp) or {}
            except Exception as exc:  # try the next materializer, unless the store itself failed
                _remove(tmp)
                if isinstance(exc, HashFailed):
                    raise self._store_error("hash", tmp, exc, where) from exc
                self._raise_if_store_failed(tmp_dir, exc, where)
                if isinstance(exc, MaterializationError):  # the materializer refuses the value: no fallback
                    raise MaterializationError(f"{where}{exc}") from None
                errors.append(f"{mat.name}: {type(exc).__name__}: {exc}")
                if materializer is not None and index == 0:  # the one asked for: no silent fallback
                    raise MaterializationError(
                        f"{where}materializer {mat.name!r} failed for {type_path(type(obj))}: {exc}"
                    ) from exc
                continue
            if forbidden and _file_holds_any(tmp, forbidden):
                content_hash = hashed[0] if hashed is not None else hash_file(tmp)[0]
                _remove(tmp)
                raise HoldsSecret(f"{where}its stored form would hold a secret", content_hash)
            if mat.name == "cloudpickle" and not (materializer is not None and index == 0):
                warn_fallback(obj, step_name, output)  # a fallback, not a choice: say so once per type
            try:
                return self._commit(tmp, mat, type_path(type(obj)), metadata, where, hashed)
            finally:
                _remove(tmp)
        raise MaterializationError(
            f"{where}cannot serialize a value of type {type_path(type(obj))} "
            f"({'; '.join(errors)}). Return a serializable value, or register a materializer: "
            "isthmus.register_materializer(MyMaterializer, types=(MyType,))"
        )

    def _save_small(self, data: bytes, mat: Materializer, python_type: str, tmp_dir: str, where: str) -> ArtifactRef:
        """A small value of a built-in data format, hashed in memory and written once (no read-back):
        the same file, hash and commit as :meth:`save` otherwise makes."""
        content_hash = hash_bytes(data)
        part = tmpfiles.part_name()
        tmp = os.path.join(tmp_dir, part)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except OSError as exc:
            _remove(tmp)
            raise self._store_error("write to", tmp_dir, exc, where) from exc
        try:
            self._commit_local(part, content_hash, mat, where)
        finally:
            _remove(tmp)
        return ArtifactRef(
            uri=self.uri_for(content_hash),
            content_hash=content_hash,
            size=len(data),
            materializer=mat.key,
            python_type=python_type,
            metadata={},
        )

    def _raise_if_store_failed(self, tmp_dir: str, exc: BaseException, where: str) -> None:
        """After a materializer failed: raise ArtifactStoreError if the cause is the store (it cannot be
        written, or the disk is full), so no materializer is blamed and the step may be retried."""
        if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
            raise self._store_error("write to", tmp_dir, exc, where) from exc
        probe = os.path.join(tmp_dir, tmpfiles.part_name())
        try:
            with open(probe, "wb") as fh:
                fh.write(b"probe")
        except OSError as probe_exc:
            raise self._store_error("write to", tmp_dir, probe_exc, where) from exc
        finally:
            _remove(probe)

    def _commit(
        self,
        tmp: str,
        mat: Materializer,
        python_type: str,
        metadata: dict[str, Any],
        where: str = "",
        hashed: tuple[str, int] | None = None,
    ) -> ArtifactRef:
        """Commit the file ``tmp``; ``hashed`` is its (hash, size) when it was hashed as it was written
        (:class:`~isthmus.artifacts.streams.HashingWriter`), else it is read back and hashed here."""
        # No fsync: visibility is atomic (rename / single PUT) and every read checks the content
        # hash, so a file torn by power loss is detected and recomputed, never served.
        if hashed is not None:
            content_hash, size = hashed
        else:
            try:
                content_hash, size = hash_file(tmp)
            except OSError as exc:
                raise self._store_error("read back", tmp, exc, where) from exc
        final = self.path_for(content_hash)
        if self.local:
            self._commit_local(os.path.basename(tmp), content_hash, mat, where)
        else:
            self._put_remote(tmp, final, content_hash, size, mat, where)
        problem = metadata_problem(metadata) if metadata else None
        if problem:  # a ref stays small; a description too large to keep says so, and that it is partial
            metadata = {"metadata_dropped": problem, "code_incomplete": True}
        return ArtifactRef(
            uri=self.uri_for(content_hash),
            content_hash=content_hash,
            size=size,
            materializer=mat.key,
            python_type=python_type,
            metadata=metadata,
        )

    def _commit_local(self, part: str, content_hash: str, mat: Materializer, where: str) -> None:
        """Rename ``.tmp/<part>`` to its object name, between directory descriptors reached without
        following a link. Always replace, even when an object of this size exists: it may be corrupt, and
        the fresh bytes are known good. Atomic: readers see the old or the new file, never a mix. A
        code-executing materializer's writer mark is made first (it vouches for these bytes, present or not)."""
        hexpart = content_hash.split(":", 1)[1]
        final = self.path_for(content_hash)
        try:
            tmp_fd = safefs.open_dir(self.root, [".tmp"])
            try:
                if mat.needs_verified_bytes:
                    mark_fd = safefs.open_dir(self.root, ["writers", hexpart[:2]], create=True)
                    try:
                        safefs.touch(f"{hexpart}@{mat.name}", mark_fd)
                    finally:
                        os.close(mark_fd)
                dir_fd = self._object_dir(content_hash, create=True)
                try:
                    os.replace(part, hexpart, src_dir_fd=tmp_fd, dst_dir_fd=dir_fd)
                    st = os.stat(hexpart, dir_fd=dir_fd, follow_symlinks=False)
                finally:
                    os.close(dir_fd)
            finally:
                os.close(tmp_fd)
        except OSError as exc:
            raise self._store_error("commit", final, exc, where) from exc
        # its bytes are the ones hashed before the rename: trusted at once (as if checked after the racy window)
        self._remember(final, content_hash, st, checked_ns=max(st.st_mtime_ns, st.st_ctime_ns) + _RACY_NS + 1)

    def _put_remote(self, tmp: str, final: str, content_hash: str, size: int, mat: Materializer, where: str) -> None:
        """Upload unless the object is there and known good (verified under its current version token):
        a same-size object is not proof, it may be corrupt, and a PUT of the fresh bytes repairs it. A
        code-executing materializer's writer mark is put first."""
        try:
            if mat.needs_verified_bytes:
                mark = self._mark_path(content_hash, mat.name)
                if self._remote_info(mark) is None:
                    self.fs.pipe_file(mark, b"")
            info = self._remote_info(final)
            if info is not None and int(info.get("size", -1)) == size:
                token = _version_token(info)
                if token is not None and self._remote_verified.get(final) == (content_hash, token):
                    return
            if self.protocol in _ATOMIC_PUT:
                self.fs.put_file(tmp, final)
            else:
                staging = f"{self.root}/.tmp/{uuid.uuid4().hex}.part"
                self.fs.put_file(tmp, staging)
                self.fs.mv(staging, final)
            info = self._remote_info(final)
        except Exception as exc:  # any failure here is the store's (credentials, bucket, network)
            raise self._store_error("upload", f"{self.protocol}://{final}", exc, where) from exc
        token = _version_token(info) if info else None
        if token is not None:
            with self._lock:
                self._remote_verified[final] = (content_hash, token)

    def _remote_info(self, path: str) -> dict[str, Any] | None:
        """The object's metadata, fresh from the store (None if it is absent)."""
        try:
            self.fs.invalidate_cache(path)
            return dict(self.fs.info(path))
        except FileNotFoundError:
            return None
        except Exception as exc:  # unreachable, no credentials: never mistaken for "absent"
            raise self._store_error("read", f"{self.protocol}://{path}", exc) from exc

    # -- checking --------------------------------------------------------------------------------
    def exists(self, ref: ArtifactRef) -> bool:
        """The object is present with the recorded size (cheap: one stat, two for a pickle's writer mark);
        False for a ref of another store."""
        path = self._path_of(ref)
        if path is None:
            return False
        if self.local:
            present = _same_size(path, ref.size)
        else:
            info = self._remote_info(path)
            present = info is not None and int(info.get("size", -1)) == ref.size
        return present and self._vouched(ref)

    def is_valid(self, ref: ArtifactRef, mode: str | None = None) -> bool:
        """Present and, by ``mode`` ('hash' | 'size' | 'off'), matching its content hash.

        A local hash check is remembered while the file's size, mtime, ctime and inode stay the same (and
        only for files that did not change just before the check); a remote one while the object's
        version id or ETag stays the same (stores without either are hashed every time).
        A corrupt object is moved aside so it can never be served. A ref of another store is not valid here,
        nor one naming a code-executing materializer that did not write its bytes.
        """
        mode = mode or self.verify_mode
        path = self._path_of(ref)
        if path is None or not self._vouched(ref):
            return False
        if mode == "off":
            return True
        if mode == "size":
            return self.exists(ref)
        if not self.local:
            return self._verify_remote(ref, path)
        verdict, st = self._stat_verdict(ref, path)
        if verdict is not None:
            return verdict
        try:
            actual, _ = hash_file(path)
        except FileNotFoundError:
            return False
        except safefs.UnsafeEntry:
            actual = None
        if actual != ref.content_hash:
            self._quarantine(path)
            return False
        self._remember(path, ref.content_hash, st)
        return True

    def quick_check(self, ref: ArtifactRef) -> bool | None:
        """``is_valid`` without reading file contents: True/False when a stat settles it, None when a
        hash check is due (used while a database transaction is open)."""
        path = self._path_of(ref)
        if path is None or not self._vouched(ref):
            return False
        if self.verify_mode != "hash":
            return self.is_valid(ref)
        if self.local:
            return self._stat_verdict(ref, path)[0]
        info = self._remote_info(path)
        if info is None or int(info.get("size", -1)) != ref.size:
            return False
        token = _version_token(info)
        return True if token is not None and self._remote_verified.get(path) == (ref.content_hash, token) else None

    def _stat_verdict(self, ref: ArtifactRef, path: str) -> tuple[bool | None, Any]:
        """(False, _) if the object is gone, resized or not a regular file, (True, _) if a trusted hash
        check is remembered for it, (None, stat) if its bytes must be hashed."""
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False, None
        if st.st_size != ref.size or not stat.S_ISREG(st.st_mode):
            return False, None
        return (True if self._memo_trusts(path, ref.content_hash, st) else None), st

    def _memo_trusts(self, path: str, content_hash: str, st: os.stat_result) -> bool:
        memo = self._verified.get(path)
        return (
            memo is not None
            and memo[:5] == (content_hash, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            and max(st.st_mtime_ns, st.st_ctime_ns) < memo[5] - _RACY_NS
        )

    def _remember(self, path: str, content_hash: str, st: os.stat_result, *, checked_ns: int | None = None) -> None:
        # The memo keeps the time of the check: it is trusted only for files last changed (content:
        # mtime; inode: ctime, which also moves when mtime is set back) well before it, so a change
        # within the filesystem's timestamp granularity is never missed.
        entry = (content_hash, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, checked_ns or time.time_ns())
        with self._lock:
            self._verified[path] = entry

    def _remember_own(self, path: str, content_hash: str) -> None:
        """Remember a file this process just wrote: its bytes are the ones it hashed before the rename,
        so the memo is trusted at once (as if checked after the racy window)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        self._remember(path, content_hash, st, checked_ns=max(st.st_mtime_ns, st.st_ctime_ns) + _RACY_NS + 1)

    def _quarantine(self, path: str) -> None:
        """Move a bad object to ``.corrupt/`` (removed instead when ``.corrupt`` is not a real directory),
        between descriptors reached without following a link: nothing ever lands outside the root."""
        name = os.path.basename(path)
        with self._lock:
            self._verified.pop(path, None)
        try:
            dir_fd = safefs.open_dir(self.root, ["objects", name[:2]])
        except (*_UNREADABLE, PermissionError):
            return  # not an object directory of this store: nothing of ours to move
        try:
            try:
                corrupt_fd: int | None = safefs.open_dir(self.root, [".corrupt"], create=True)
            except (safefs.UnsafeEntry, PermissionError):
                corrupt_fd = None
            try:
                if corrupt_fd is None:
                    os.unlink(name, dir_fd=dir_fd)
                else:
                    os.replace(name, f"{name}.{int(time.time())}", src_dir_fd=dir_fd, dst_dir_fd=corrupt_fd)
            except FileNotFoundError:
                pass
            finally:
                if corrupt_fd is not None:
                    os.close(corrupt_fd)
        finally:
            os.close(dir_fd)

    # -- remote objects --------------------------------------------------------------------------
    def _cache_dir(self) -> str:
        return self._local_cache or self._private_dir("isthmus-cache")

    def _cache_path(self, ref: ArtifactRef) -> str:
        return os.path.join(self._cache_dir(), ref.content_hash.split(":", 1)[1])

    def _verify_remote(self, ref: ArtifactRef, path: str) -> bool:
        """Whether the remote object matches its hash. Unless a verdict is remembered under the object's
        current version token, it is downloaded into the local cache and hashed (a later load reads these
        very bytes); a corrupt object is moved aside."""
        info = self._remote_info(path)
        if info is None or int(info.get("size", -1)) != ref.size:
            return False
        token = _version_token(info)
        if token is not None and self._remote_verified.get(path) == (ref.content_hash, token):
            return True
        if self._download(ref, path, self._cache_path(ref)) is None:
            return False
        after = self._remote_info(path)
        if token is not None and after is not None and _version_token(after) == token:
            with self._lock:
                self._remote_verified[path] = (ref.content_hash, token)
        return True

    def _download(self, ref: ArtifactRef, path: str, local: str) -> str | None:
        """Stream the object into ``local``, hashing the bytes as they arrive (one pass); None when it is
        missing or its bytes do not match (the remote object is then moved aside). Only a copy that matched
        becomes visible under ``local``."""
        directory = os.path.dirname(local)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise self._store_error("create the local cache", directory, exc) from exc
        part = os.path.join(directory, tmpfiles.part_name())
        try:
            try:
                with self.fs.open(path, "rb") as src, open(part, "xb") as dst:
                    actual, _ = hash_stream(_Tee(src, dst))
            except FileNotFoundError:
                return None
            if actual != ref.content_hash:
                self._quarantine_remote(path)
                return None
            os.replace(part, local)
        finally:
            _remove(part)
        self._remember_own(local, ref.content_hash)
        return local

    def _cached_copy_ok(self, ref: ArtifactRef, local: str, mode: str) -> bool:
        """Whether the local copy of a remote object may be loaded under ``mode`` (hashing it if needed)."""
        verdict, st = self._stat_verdict(ref, local)
        if verdict is not None or mode != "hash":
            return verdict is not False
        try:
            actual = hash_file(local)[0]
        except _UNREADABLE:
            actual = None
        if actual != ref.content_hash:
            _remove(local)
            return False
        self._remember(local, ref.content_hash, st)
        return True

    def _quarantine_remote(self, path: str) -> None:
        target = f"{self.root}/.corrupt/{path.rsplit('/', 1)[-1]}.{int(time.time())}"
        try:
            self.fs.mv(path, target)
        except FileNotFoundError:
            pass
        except Exception:  # a read-only store: the object stays, but every reader hashes it and refuses it
            pass
        with self._lock:
            self._remote_verified.pop(path, None)

    # -- reading ---------------------------------------------------------------------------------
    def local_path(self, ref: ArtifactRef, *, mode: str | None = None) -> str:
        """A local file holding the artifact's bytes, checked by ``mode`` (default: the store's verify
        mode); remote objects are downloaded once, through a hash check. Raises InvalidArtifactRef for a
        ref of another store and ArtifactMissing when the bytes are gone or do not match."""
        return self._local_copy(ref, self.check_ref(ref, loading=False), mode or self.verify_mode)

    def _local_copy(self, ref: ArtifactRef, path: str, mode: str) -> str:
        if self.local:
            if mode == "hash":
                ok = self.is_valid(ref, "hash")
            else:
                ok = _same_size(path, ref.size) if mode == "size" else safefs.is_regular_file(path)
            if not ok:
                raise self._missing(ref)
            return path
        local = self._cache_path(ref)
        if self._cached_copy_ok(ref, local, mode):
            return local
        fetched = self._download(ref, path, local)
        if fetched is None:
            raise self._missing(ref)
        return fetched

    @contextmanager
    def _readable(self, ref: ArtifactRef, path: str, mode: str) -> Iterator[str]:
        """A path a (non-executing) materializer can read: the file checked under ``mode``, opened once
        without following a link and handed over through its descriptor."""
        local = self._local_copy(ref, path, mode)
        try:
            if self.local:
                fd = safefs.open_object(self.root, self._rel(ref.content_hash).split("/"))
            else:
                fd = safefs.open_file(local)
        except _UNREADABLE:
            raise self._missing(ref) from None
        try:
            if mode != "off" and os.fstat(fd).st_size != ref.size:  # replaced since the check
                raise self._missing(ref)
            with safefs.fd_path(fd, local) as readable:
                yield readable
        finally:
            os.close(fd)

    def _verified_bytes(self, ref: ArtifactRef, path: str) -> bytes | mmap.mmap:
        """The object's content, frozen once (:func:`safefs.frozen_content`) and hashed: what a code-executing
        materializer loads (release it with :func:`safefs.release`). Only for a ref :meth:`check_ref`
        accepted (its materializer wrote these bytes here)."""
        if self.local:
            data = _matching_content(ref, lambda: safefs.open_object(self.root, self._rel(ref.content_hash).split("/")))
            if data is None:
                self._quarantine(path)
                raise self._missing(ref)
            return data
        local = self._cache_path(ref)  # a remote object: the local copy when it matches, else a fresh download
        for fetch in (False, True):
            if fetch and self._download(ref, path, local) is None:
                break
            data = _matching_content(ref, lambda: safefs.open_file(local))
            if data is not None:
                return data
            _remove(local)
        raise self._missing(ref)

    @staticmethod
    def _missing(ref: ArtifactRef) -> ArtifactMissing:
        return ArtifactMissing(
            f"artifact {ref.uri} ({ref.python_type}) is missing or its bytes do not match {ref.content_hash}; "
            "re-run the step that produced it"
        )

    def load(self, ref: ArtifactRef, *, verify: bool = False) -> Any:
        """Load the value. The ref is checked first (valid, of this store, a registered materializer).
        A code-executing materializer (pickle) gets exactly the bytes that were read and hashed, and only
        bytes it wrote here, whatever the verify mode; any other one reads the object checked by the
        store's verify mode (by hash with ``verify=True``)."""
        path = self.check_ref(ref)
        materializer = get_materializer(ref.materializer)  # registered: check_ref made sure
        if materializer.needs_verified_bytes:
            data = self._verified_bytes(ref, path)
            try:
                return materializer.load_bytes(data, ref.python_type)
            finally:
                safefs.release(data)
        mode = "hash" if verify else self.verify_mode
        if mode == "hash" and materializer.reads_stream:
            loaded = self._load_hashing(ref, path, materializer)
            if loaded is not _NOT_LOADED:
                return loaded
        with self._readable(ref, path, mode) as readable:
            return materializer.load(readable, ref.python_type)

    def _load_hashing(self, ref: ArtifactRef, path: str, materializer: Materializer) -> Any:
        """Load a streaming materializer's value from the object (a remote store: its local copy) read
        once, hashing the very bytes it is built from: the check by hash without a second pass. Returns
        ``_NOT_LOADED`` when the usual path is due (a remembered verdict makes the hash needless; a remote
        copy is absent or bad and must be downloaded). A local object whose bytes do not match is moved
        aside and ArtifactMissing raised; the value built from it is dropped."""
        target = path if self.local else self._cache_path(ref)
        verdict, _ = self._stat_verdict(ref, target)
        if verdict is True or (verdict is False and not self.local):
            return _NOT_LOADED
        if verdict is False:
            raise self._missing(ref)
        started = time.time_ns()
        try:
            if self.local:
                fd = safefs.open_object(self.root, self._rel(ref.content_hash).split("/"))
            else:
                fd = safefs.open_file(target)
        except _UNREADABLE:
            if self.local:
                raise self._missing(ref) from None
            return _NOT_LOADED
        try:
            st = os.fstat(fd)
            matched, value = _read_hashing(fd, ref, materializer) if st.st_size == ref.size else (False, None)
        finally:
            os.close(fd)
        if not matched:
            if not self.local:
                _remove(target)
                return _NOT_LOADED
            self._quarantine(path)
            raise self._missing(ref)
        self._remember(target, ref.content_hash, st, checked_ns=started)
        return value

    def delete(self, ref: ArtifactRef) -> None:
        path = self.check_ref(ref, loading=False)
        mark = self._mark_path(ref.content_hash, ref.materializer)
        if self.local:
            try:
                dir_fd = self._object_dir(ref.content_hash)
            except _UNREADABLE:
                dir_fd = None
            if dir_fd is not None:
                try:
                    _remove(os.path.basename(path), dir_fd)
                finally:
                    os.close(dir_fd)
            if safefs.is_real_dir(os.path.dirname(mark)):
                _remove(mark)
        else:
            for target in (path, mark):
                try:
                    self.fs.rm_file(target)
                except FileNotFoundError:
                    pass
        with self._lock:
            self._verified.pop(path, None)
            self._remote_verified.pop(path, None)

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Remove abandoned partial writes; returns how many. Parts of writers of this host whose process
        is gone go at once, any other leftover once it is ``older_than`` seconds old."""
        if self.local:
            tmp = os.path.join(self.root, ".tmp")
            return tmpfiles.remove_parts(tmp, older_than) if safefs.is_real_dir(tmp) else 0
        dirs = {self._tmp_dir(), self._cache_dir()}
        return sum(tmpfiles.remove_parts(d, older_than, parts_only=True) for d in dirs)

    def iter_objects(self) -> list[tuple[str, int]]:
        """(content hash, size) of every committed object (local stores); stray files and links are skipped."""
        return [(f"blake3:{f.name}", f.stat(follow_symlinks=False).st_size) for f in self._object_entries()]

    def object_hashes(self) -> list[str]:
        """The content hash of every committed object (local stores), without a ``stat`` per object."""
        return [h for h in self.listed_object_hashes() if _HEX.issuperset(h[7:])]

    def listed_object_hashes(self) -> list[str]:
        """What :meth:`object_hashes` lists, read faster and checked less: ``blake3:`` and the name of
        every regular file that has a digest's length, is ASCII and starts with the name of its
        two-character directory of ``objects`` (so :meth:`path_for` of it is that very file). A name may
        still hold other characters than lowercase hex digits: check a hash before using it."""
        objects = os.path.join(self.root, "objects")
        if not self.local or not safefs.is_real_dir(objects):
            return []
        out: list[str] = []
        for sub in os.scandir(objects):
            prefix = sub.name
            if len(prefix) == 2 and sub.is_dir(follow_symlinks=False):
                with os.scandir(sub.path) as files:
                    out += [
                        "blake3:" + f.name
                        for f in files
                        if len(f.name) == _DIGITS
                        and f.name.isascii()  # a name that is not UTF-8 never reaches the database
                        and f.name.startswith(prefix)
                        and f.is_file(follow_symlinks=False)
                    ]
        return out

    def _object_entries(self) -> Iterator[os.DirEntry[str]]:
        """The directory entries of the committed objects: regular files named by their digest (64
        lowercase hex digits) in the directory of its first two; stray files and links are skipped."""
        objects = os.path.join(self.root, "objects")
        if not self.local or not safefs.is_real_dir(objects):
            return
        for sub in os.scandir(objects):
            if len(sub.name) == 2 and sub.is_dir(follow_symlinks=False):
                for f in os.scandir(sub.path):
                    name = f.name
                    if (
                        len(name) == _DIGITS
                        and name[:2] == sub.name
                        and _HEX.issuperset(name)
                        and f.is_file(follow_symlinks=False)
                    ):
                        yield f

    def wipe(self) -> None:
        """Delete everything under the root (tests and ``cache clear --artifacts``)."""
        if self.local:
            shutil.rmtree(self.root, ignore_errors=True)
            with self._lock:
                self._verified.clear()
            self._make_dirs()


_SEARCHED_MAX = 64 << 20  # stored forms searched for secrets: up to this size


def _holds_any(data: Any, needles: tuple[bytes, ...]) -> bool:
    return any(data.find(needle) >= 0 for needle in needles)


def _file_holds_any(path: str, needles: tuple[bytes, ...]) -> bool:
    """Whether the file at ``path`` (just written, not committed) holds any of ``needles``; a file larger
    than :data:`_SEARCHED_MAX` is not searched (it is data, and searching costs seconds per GiB)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0 or size > _SEARCHED_MAX:
            return False
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return _holds_any(mapped, needles)


_NOT_LOADED: Any = object()


def _save_streaming(mat: Materializer, obj: Any, tmp: str) -> tuple[dict[str, Any], tuple[str, int]]:
    """Write ``obj`` to the new file ``tmp`` through ``mat.save_to``, hashed as it is written."""
    out = HashingWriter(tmp)
    try:
        metadata = mat.save_to(obj, out) or {}
        return metadata, out.finish()
    finally:
        out.discard()


def _read_hashing(fd: int, ref: ArtifactRef, materializer: Materializer) -> tuple[bool, Any]:
    """(whether the file behind ``fd`` is exactly ``ref``'s bytes, the value ``materializer`` built from
    them). The materializer's own error is raised only for bytes that matched."""
    reader = HashingReader(fd, ref.size)
    try:
        try:
            value, error = materializer.load_from(reader, ref.python_type), None
        except Exception as exc:  # bad bytes make bad values: the hash decides which error it is
            value, error = None, exc
        actual, size = reader.finish()
    finally:
        reader.discard()
    if actual != ref.content_hash or size != ref.size:
        return False, None
    if error is not None:
        raise error
    return True, value


class _Tee:
    """A readable file that copies what is read from ``src`` into ``dst`` (hash and save in one pass)."""

    def __init__(self, src: Any, dst: Any) -> None:
        self.src, self.dst = src, dst

    def read(self, size: int = -1) -> bytes:
        chunk = self.src.read(size)
        if chunk:
            self.dst.write(chunk)
        return chunk


def _matching_content(ref: ArtifactRef, opener: Any) -> bytes | mmap.mmap | None:
    """The frozen content of the file ``opener()`` opens if it is exactly ``ref``'s (size and hash), else None."""
    try:
        fd = opener()
    except _UNREADABLE:
        return None
    try:
        data = safefs.frozen_content(fd, ref.size)
    finally:
        os.close(fd)  # a mapping outlives its descriptor
    if len(data) == ref.size and hash_bytes(data) == ref.content_hash:
        return data
    safefs.release(data)
    return None


def _version_token(info: dict[str, Any]) -> str | None:
    """The object's version id or ETag (whatever the store gives), or None."""
    for key in _VERSION_KEYS:
        value = info.get(key)
        if value:
            return f"{key}={value}"
    return None


def _same_size(path: str, size: int) -> bool:
    """A regular file (not a link) of ``size`` bytes."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return st.st_size == size and stat.S_ISREG(st.st_mode)


def _remove(path: str, dir_fd: int | None = None) -> None:
    try:
        os.remove(path, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


__all__ = ["ArtifactStore", "get_materializer", "hash_file"]
