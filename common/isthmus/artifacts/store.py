"""Content-addressed artifact store on fsspec.

Layout under the root: ``objects/<2 hex>/<hash hex>`` holds committed artifacts; ``.tmp/`` holds
writes in progress. An object becomes visible only by an atomic rename (local) or a single PUT
(object stores), so a crash never leaves a partial artifact where a reader could find it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from isthmus.artifacts.materializers import (
    Materializer,
    candidates,
    get_materializer,
    type_path,
    warn_fallback,
)
from isthmus.artifacts.refs import ArtifactRef
from isthmus.errors import ArtifactMissing, MaterializationError
from isthmus.hashing import hash_file

_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "abfs", "az", "abfss", "memory"}
# A file modified within this long of being hashed may change again without its mtime moving
# (filesystem timestamps follow the kernel tick, a few ms on ext4/xfs/btrfs): such a hash check is
# not remembered ("racy git").
_RACY_NS = 100_000_000


class ArtifactStore:
    """Stores and loads artifacts by content hash. ``root`` is a local path or any fsspec URL."""

    def __init__(self, root: str, *, verify: str = "hash", local_cache: str | None = None) -> None:
        self.fs, path = fsspec.core.url_to_fs(root)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = os.path.abspath(path) if self.local else path.rstrip("/")
        self.protocol = (
            "file" if self.local else (self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0])
        )
        self.verify_mode = verify
        self._local_cache = local_cache
        self._verified: dict[str, tuple[Any, ...]] = {}  # path -> (hash, size, mtime_ns, ino, checked_ns)
        self._lock = threading.Lock()
        self._dirs: set[str] = set()
        if self.local:
            os.makedirs(os.path.join(self.root, ".tmp"), exist_ok=True)
            os.makedirs(os.path.join(self.root, "objects"), exist_ok=True)

    # -- paths -----------------------------------------------------------------------------------
    def _rel(self, content_hash: str) -> str:
        hexpart = content_hash.split(":", 1)[-1]
        return f"objects/{hexpart[:2]}/{hexpart}"

    def path_for(self, content_hash: str) -> str:
        rel = self._rel(content_hash)
        return os.path.join(self.root, rel) if self.local else f"{self.root}/{rel}"

    def uri_for(self, content_hash: str) -> str:
        path = self.path_for(content_hash)
        return f"file://{path}" if self.local else f"{self.protocol}://{path}"

    def _path_of(self, ref: ArtifactRef) -> str:
        return self.path_for(ref.content_hash)

    def _tmp_dir(self) -> str:
        if self.local:
            return os.path.join(self.root, ".tmp")
        base = self._local_cache or os.path.join(tempfile.gettempdir(), "isthmus-upload")
        os.makedirs(base, exist_ok=True)
        return base

    # -- writing ---------------------------------------------------------------------------------
    def save(
        self,
        obj: Any,
        *,
        step_name: str = "?",
        output: str = "output",
        materializer: Materializer | str | None = None,
    ) -> ArtifactRef:
        """Materialize ``obj`` and commit it; identical content is stored once."""
        errors: list[str] = []
        for index, mat in enumerate(candidates(obj, materializer)):
            tmp = os.path.join(self._tmp_dir(), f"{uuid.uuid4().hex}.part")
            try:
                metadata = mat.save(obj, tmp) or {}
            except Exception as exc:  # try the next materializer
                _remove(tmp)
                errors.append(f"{mat.name}: {type(exc).__name__}: {exc}")
                if materializer is not None and index == 0:  # the one asked for: no silent fallback
                    raise MaterializationError(
                        f"step {step_name!r} output {output!r}: materializer {mat.name!r} failed for "
                        f"{type_path(type(obj))}: {exc}"
                    ) from exc
                continue
            if mat.name == "cloudpickle" and not (materializer is not None and index == 0):
                warn_fallback(obj, step_name, output)  # a fallback, not a choice: say so once per type
            try:
                return self._commit(tmp, mat, type_path(type(obj)), metadata)
            finally:
                _remove(tmp)
        raise MaterializationError(
            f"step {step_name!r} output {output!r}: cannot serialize a value of type {type_path(type(obj))} "
            f"({'; '.join(errors)}). Return a serializable value, or register a materializer: "
            "isthmus.register_materializer(MyMaterializer, types=(MyType,))"
        )

    def _commit(self, tmp: str, mat: Materializer, python_type: str, metadata: dict[str, Any]) -> ArtifactRef:
        # No fsync: visibility is atomic (rename / single PUT) and every read checks the content
        # hash, so a file torn by power loss is detected and recomputed, never served.
        content_hash, size = hash_file(tmp)
        final = self.path_for(content_hash)
        if self.local:
            # Always replace, even when an object of this size exists: it may be corrupt, and the
            # fresh bytes are known good. Atomic: readers see the old or the new file, never a mix.
            parent = os.path.dirname(final)
            if parent not in self._dirs:
                os.makedirs(parent, exist_ok=True)
                self._dirs.add(parent)
            try:
                os.replace(tmp, final)
            except FileNotFoundError:  # the directory went away behind our back (wipe, cache clear)
                os.makedirs(parent, exist_ok=True)
                os.replace(tmp, final)
            self._remember_verified(final, content_hash)
        elif not self._remote_has(final, size):
            if self.protocol in _ATOMIC_PUT:
                self.fs.put_file(tmp, final)
            else:
                staging = f"{self.root}/.tmp/{uuid.uuid4().hex}.part"
                self.fs.put_file(tmp, staging)
                self.fs.mv(staging, final)
        return ArtifactRef(
            uri=self.uri_for(content_hash),
            content_hash=content_hash,
            size=size,
            materializer=mat.key,
            python_type=python_type,
            metadata=metadata,
        )

    def _remote_has(self, path: str, size: int) -> bool:
        try:
            return int(self.fs.size(path)) == size
        except (FileNotFoundError, OSError):
            return False

    # -- checking --------------------------------------------------------------------------------
    def exists(self, ref: ArtifactRef) -> bool:
        """The object is present with the recorded size (cheap: one stat)."""
        path = self._path_of(ref)
        if self.local:
            return _same_size(path, ref.size)
        return self._remote_has(path, ref.size)

    def is_valid(self, ref: ArtifactRef, mode: str | None = None) -> bool:
        """Present and, by ``mode`` ('hash' | 'size' | 'off'), matching its content hash.

        A hash check is remembered for as long as the file's size, mtime and inode stay the same (and
        only for files that were not modified just before the check).
        A corrupt object is moved aside so it can never be served.
        """
        mode = mode or self.verify_mode
        if mode == "off":
            return True
        if mode == "size" or not self.local:
            return self.exists(ref)
        verdict, st = self._stat_verdict(ref)
        if verdict is not None:
            return verdict
        path = self._path_of(ref)
        actual, _ = hash_file(path)
        if actual != ref.content_hash:
            self._quarantine(path)
            return False
        self._remember(path, ref.content_hash, st)
        return True

    def quick_check(self, ref: ArtifactRef) -> bool | None:
        """``is_valid`` without reading file contents: True/False when a stat settles it, None when a
        hash check is due (used while a database transaction is open)."""
        if self.verify_mode != "hash" or not self.local:
            return self.is_valid(ref)
        return self._stat_verdict(ref)[0]

    def _stat_verdict(self, ref: ArtifactRef) -> tuple[bool | None, Any]:
        """(False, _) if the object is gone or resized, (True, _) if a trusted hash check is
        remembered for it, (None, stat) if its bytes must be hashed."""
        path = self._path_of(ref)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False, None
        if st.st_size != ref.size:
            return False, None
        memo = self._verified.get(path)
        if (
            memo is not None
            and memo[:4] == (ref.content_hash, st.st_size, st.st_mtime_ns, st.st_ino)
            and st.st_mtime_ns < memo[4] - _RACY_NS
        ):
            return True, st
        return None, st

    def _remember(self, path: str, content_hash: str, st: os.stat_result, *, checked_ns: int | None = None) -> None:
        # The memo keeps the time of the check: it is trusted only for files last modified well
        # before it, so a change within the filesystem's timestamp granularity is never missed.
        with self._lock:
            self._verified[path] = (content_hash, st.st_size, st.st_mtime_ns, st.st_ino, checked_ns or time.time_ns())

    def _remember_verified(self, path: str, content_hash: str) -> None:
        """Remember an object this process just committed: its bytes are the ones it hashed before the
        rename, so the memo is trusted at once (as if checked after the racy window)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        self._remember(path, content_hash, st, checked_ns=st.st_mtime_ns + _RACY_NS + 1)

    def _quarantine(self, path: str) -> None:
        target = os.path.join(self.root, ".corrupt", f"{os.path.basename(path)}.{int(time.time())}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.replace(path, target)
        except FileNotFoundError:
            pass
        with self._lock:
            self._verified.pop(path, None)

    # -- reading ---------------------------------------------------------------------------------
    def local_path(self, ref: ArtifactRef) -> str:
        """A local file holding the artifact's bytes (downloaded once for remote stores)."""
        path = self._path_of(ref)
        if self.local:
            return path
        cache = self._local_cache or os.path.join(tempfile.gettempdir(), "isthmus-cache")
        local = os.path.join(cache, ref.content_hash.split(":", 1)[-1])
        if not _same_size(local, ref.size):
            os.makedirs(cache, exist_ok=True)
            part = f"{local}.{uuid.uuid4().hex}.part"
            try:
                self.fs.get_file(path, part)
                os.replace(part, local)
            except FileNotFoundError:
                raise ArtifactMissing(f"artifact {ref.uri} is missing from the store") from None
            finally:
                _remove(part)
        return local

    def load(self, ref: ArtifactRef, *, verify: bool = False) -> Any:
        """Load the value. With ``verify=True`` the bytes are re-hashed first."""
        if verify and not self.is_valid(ref, "hash"):
            raise ArtifactMissing(f"artifact {ref.uri} is missing or its bytes do not match {ref.content_hash}")
        path = self.local_path(ref)
        if not os.path.exists(path):
            raise ArtifactMissing(
                f"artifact {ref.uri} ({ref.python_type}) is missing; re-run the step that produced it"
            )
        if not self.local and verify:
            actual, _ = hash_file(path)
            if actual != ref.content_hash:
                _remove(path)
                raise ArtifactMissing(f"artifact {ref.uri}: downloaded bytes do not match {ref.content_hash}")
        return get_materializer(ref.materializer).load(path, ref.python_type)

    def delete(self, ref: ArtifactRef) -> None:
        path = self._path_of(ref)
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass
        with self._lock:
            self._verified.pop(path, None)

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Remove abandoned partial writes (from crashed processes); returns how many."""
        if not self.local:
            return 0
        removed = 0
        tmp = os.path.join(self.root, ".tmp")
        cutoff = time.time() - older_than
        for entry in os.scandir(tmp):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.remove(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def iter_objects(self) -> list[tuple[str, int]]:
        """(content hash, size) of every committed object (local stores)."""
        out = []
        objects = os.path.join(self.root, "objects")
        if not self.local or not os.path.isdir(objects):
            return out
        for sub in os.scandir(objects):
            if sub.is_dir():
                for f in os.scandir(sub.path):
                    out.append((f"blake3:{f.name}", f.stat().st_size))
        return out

    def wipe(self) -> None:
        """Delete everything under the root (tests and ``cache clear --artifacts``)."""
        if self.local:
            shutil.rmtree(self.root, ignore_errors=True)
            self._dirs.clear()
            with self._lock:
                self._verified.clear()
            os.makedirs(os.path.join(self.root, ".tmp"), exist_ok=True)
            os.makedirs(os.path.join(self.root, "objects"), exist_ok=True)


def _same_size(path: str, size: int) -> bool:
    try:
        return os.stat(path).st_size == size
    except FileNotFoundError:
        return False


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


__all__ = ["ArtifactStore", "get_materializer"]
