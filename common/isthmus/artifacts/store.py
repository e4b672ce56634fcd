"""Content-addressed artifact store on fsspec.

Layout under the root: ``objects/<2 hex>/<hash hex>`` holds committed artifacts; ``.tmp/`` holds
writes in progress. An object becomes visible only by an atomic rename (local) or a single PUT
(object stores), so a crash never leaves a partial artifact where a reader could find it.

Refs are untrusted: every path comes from :meth:`ArtifactStore.path_for`, which accepts only a valid
content hash, and a ref whose ``uri`` is not where this store keeps its hash is refused (by ``load``) or
reported absent (by ``exists``/``is_valid``) before anything on disk is touched. Bytes that a
materializer could execute (pickle) are hash-verified inside the store before every load, whatever the
verify mode. A failure of the store itself (permissions, full disk, unreachable bucket) raises
:class:`ArtifactStoreError` naming ``ISTHMUS_ARTIFACT_ROOT``, never a materializer error.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
import time
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from isthmus.artifacts import tmpfiles
from isthmus.artifacts.errors import ArtifactStoreError, InvalidArtifactRef
from isthmus.artifacts.materializers import (
    Materializer,
    candidates,
    get_materializer,
    type_path,
    warn_fallback,
)
from isthmus.artifacts.refs import ArtifactRef, check_content_hash
from isthmus.errors import ArtifactMissing, MaterializationError
from isthmus.hashing import hash_file, hash_stream

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


class ArtifactStore:
    """Stores and loads artifacts by content hash. ``root`` is a local path or any fsspec URL."""

    def __init__(self, root: str, *, verify: str = "hash", local_cache: str | None = None) -> None:
        if verify not in _VERIFY_MODES:
            raise ValueError(f"verify={verify!r} is not one of {_VERIFY_MODES}")
        self.fs, path = fsspec.core.url_to_fs(root)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = os.path.abspath(path) if self.local else path.rstrip("/")
        self.protocol = (
            "file" if self.local else (self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0])
        )
        self.url = self.root if self.local else f"{self.protocol}://{self.root}"
        self.verify_mode = verify
        self._local_cache = local_cache
        # local path -> (hash, size, mtime_ns, ctime_ns, ino, trusted for changes before this time ns)
        self._verified: dict[str, tuple[Any, ...]] = {}
        self._remote_verified: dict[str, tuple[str, str]] = {}  # remote path -> (hash, version token)
        self._paths: dict[str, str] = {}  # content hash (validated) -> its path: the hot path skips the regex
        self._lock = threading.Lock()
        self._dirs: set[str] = set()
        if self.local:
            self._make_dirs()

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
        """The path of ``ref`` in this store, checked before any disk access: InvalidArtifactRef when it
        is not a valid ref or its uri is not where this store keeps its hash; MaterializationError when
        (``loading``) no materializer of its name is registered in this process."""
        if not isinstance(ref, ArtifactRef):
            ref = ArtifactRef.from_dict(ref)
        expected = self.uri_for(ref.content_hash)
        if ref.uri != expected:
            raise InvalidArtifactRef(
                f"artifact ref {ref.content_hash}: uri {ref.uri!r:.200} is not where this artifact store keeps it "
                f"({expected!r}); load it with the store that wrote it (ISTHMUS_ARTIFACT_ROOT={self.url!r} here)"
            )
        if loading:
            get_materializer(ref.materializer)
        return self.path_for(ref.content_hash)

    def _path_of(self, ref: ArtifactRef) -> str | None:
        """The path of a ref of this store, or None for a ref of another store (it is not here)."""
        return self.path_for(ref.content_hash) if self.holds(ref) else None

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
        where = f"step {step_name!r} output {output!r}: "
        try:
            tmp_dir = self._tmp_dir()
        except OSError as exc:
            raise self._store_error(
                "create the directory", self._local_cache or tempfile.gettempdir(), exc, where
            ) from exc
        errors: list[str] = []
        for index, mat in enumerate(candidates(obj, materializer)):
            tmp = os.path.join(tmp_dir, tmpfiles.part_name())
            try:
                metadata = mat.save(obj, tmp) or {}
            except Exception as exc:  # try the next materializer, unless the store itself failed
                _remove(tmp)
                self._raise_if_store_failed(tmp_dir, exc, where)
                errors.append(f"{mat.name}: {type(exc).__name__}: {exc}")
                if materializer is not None and index == 0:  # the one asked for: no silent fallback
                    raise MaterializationError(
                        f"{where}materializer {mat.name!r} failed for {type_path(type(obj))}: {exc}"
                    ) from exc
                continue
            if mat.name == "cloudpickle" and not (materializer is not None and index == 0):
                warn_fallback(obj, step_name, output)  # a fallback, not a choice: say so once per type
            try:
                return self._commit(tmp, mat, type_path(type(obj)), metadata, where)
            finally:
                _remove(tmp)
        raise MaterializationError(
            f"{where}cannot serialize a value of type {type_path(type(obj))} "
            f"({'; '.join(errors)}). Return a serializable value, or register a materializer: "
            "isthmus.register_materializer(MyMaterializer, types=(MyType,))"
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
        self, tmp: str, mat: Materializer, python_type: str, metadata: dict[str, Any], where: str = ""
    ) -> ArtifactRef:
        # No fsync: visibility is atomic (rename / single PUT) and every read checks the content
        # hash, so a file torn by power loss is detected and recomputed, never served.
        try:
            content_hash, size = hash_file(tmp)
        except OSError as exc:
            raise self._store_error("read back", tmp, exc, where) from exc
        final = self.path_for(content_hash)
        if self.local:
            # Always replace, even when an object of this size exists: it may be corrupt, and the
            # fresh bytes are known good. Atomic: readers see the old or the new file, never a mix.
            parent = os.path.dirname(final)
            try:
                if parent not in self._dirs:
                    os.makedirs(parent, exist_ok=True)
                    self._dirs.add(parent)
                try:
                    os.replace(tmp, final)
                except FileNotFoundError:  # the directory went away behind our back (wipe, cache clear)
                    os.makedirs(parent, exist_ok=True)
                    os.replace(tmp, final)
            except OSError as exc:
                raise self._store_error("commit", final, exc, where) from exc
            self._remember_own(final, content_hash)
        else:
            self._put_remote(tmp, final, content_hash, size, where)
        return ArtifactRef(
            uri=self.uri_for(content_hash),
            content_hash=content_hash,
            size=size,
            materializer=mat.key,
            python_type=python_type,
            metadata=metadata,
        )

    def _put_remote(self, tmp: str, final: str, content_hash: str, size: int, where: str) -> None:
        """Upload unless the object is there and known good (verified under its current version token):
        a same-size object is not proof, it may be corrupt, and a PUT of the fresh bytes repairs it."""
        try:
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
        """The object is present with the recorded size (cheap: one stat); False for a ref of another store."""
        path = self._path_of(ref)
        if path is None:
            return False
        if self.local:
            return _same_size(path, ref.size)
        info = self._remote_info(path)
        return info is not None and int(info.get("size", -1)) == ref.size

    def is_valid(self, ref: ArtifactRef, mode: str | None = None) -> bool:
        """Present and, by ``mode`` ('hash' | 'size' | 'off'), matching its content hash.

        A local hash check is remembered while the file's size, mtime, ctime and inode stay the same (and
        only for files that did not change just before the check); a remote one while the object's
        version id or ETag stays the same (stores without either are hashed every time).
        A corrupt object is moved aside so it can never be served. A ref of another store is not valid here.
        """
        mode = mode or self.verify_mode
        path = self._path_of(ref)
        if path is None:
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
        actual, _ = hash_file(path)
        if actual != ref.content_hash:
            self._quarantine(path)
            return False
        self._remember(path, ref.content_hash, st)
        return True

    def quick_check(self, ref: ArtifactRef) -> bool | None:
        """``is_valid`` without reading file contents: True/False when a stat settles it, None when a
        hash check is due (used while a database transaction is open)."""
        path = self._path_of(ref)
        if path is None:
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
        """(False, _) if the object is gone or resized, (True, _) if a trusted hash check is
        remembered for it, (None, stat) if its bytes must be hashed."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False, None
        if st.st_size != ref.size:
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
            st = os.stat(path)
        except FileNotFoundError:
            return
        self._remember(path, content_hash, st, checked_ns=max(st.st_mtime_ns, st.st_ctime_ns) + _RACY_NS + 1)

    def _quarantine(self, path: str) -> None:
        target = os.path.join(self.root, ".corrupt", f"{os.path.basename(path)}.{int(time.time())}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.replace(path, target)
        except FileNotFoundError:
            pass
        with self._lock:
            self._verified.pop(path, None)

    # -- remote objects --------------------------------------------------------------------------
    def _cache_dir(self) -> str:
        return self._local_cache or os.path.join(tempfile.gettempdir(), "isthmus-cache")

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
                with self.fs.open(path, "rb") as src, open(part, "wb") as dst:
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
        try:
            st = os.stat(local)
        except FileNotFoundError:
            return False
        if st.st_size != ref.size:
            return False
        if mode != "hash" or self._memo_trusts(local, ref.content_hash, st):
            return True
        if hash_file(local)[0] != ref.content_hash:
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
                ok = _same_size(path, ref.size) if mode == "size" else os.path.exists(path)
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

    @staticmethod
    def _missing(ref: ArtifactRef) -> ArtifactMissing:
        return ArtifactMissing(
            f"artifact {ref.uri} ({ref.python_type}) is missing or its bytes do not match {ref.content_hash}; "
            "re-run the step that produced it"
        )

    def load(self, ref: ArtifactRef, *, verify: bool = False) -> Any:
        """Load the value. The ref is checked first (valid, of this store, a registered materializer);
        its bytes are hash-verified when ``verify=True``, when the store's verify mode is 'hash', and always
        when its materializer could execute code (pickle), whatever the verify mode."""
        path = self.check_ref(ref)
        materializer = get_materializer(ref.materializer)  # registered: check_ref made sure
        mode = "hash" if verify or materializer.needs_verified_bytes else self.verify_mode
        return materializer.load(self._local_copy(ref, path, mode), ref.python_type)

    def delete(self, ref: ArtifactRef) -> None:
        path = self.check_ref(ref, loading=False)
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass
        with self._lock:
            self._verified.pop(path, None)
            self._remote_verified.pop(path, None)

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Remove abandoned partial writes; returns how many. Parts of writers of this host whose process
        is gone go at once, any other leftover once it is ``older_than`` seconds old."""
        if self.local:
            return tmpfiles.remove_parts(os.path.join(self.root, ".tmp"), older_than)
        upload = self._local_cache or os.path.join(tempfile.gettempdir(), "isthmus-upload")
        return sum(tmpfiles.remove_parts(d, older_than, parts_only=True) for d in {upload, self._cache_dir()})

    def iter_objects(self) -> list[tuple[str, int]]:
        """(content hash, size) of every committed object (local stores); stray files are skipped."""
        out = []
        objects = os.path.join(self.root, "objects")
        if not self.local or not os.path.isdir(objects):
            return out
        for sub in os.scandir(objects):
            if sub.is_dir(follow_symlinks=False):
                for f in os.scandir(sub.path):
                    content_hash = f"blake3:{f.name}"
                    try:
                        check_content_hash(content_hash)
                    except InvalidArtifactRef:
                        continue
                    if f.name[:2] == sub.name and f.is_file(follow_symlinks=False):
                        out.append((content_hash, f.stat().st_size))
        return out

    def wipe(self) -> None:
        """Delete everything under the root (tests and ``cache clear --artifacts``)."""
        if self.local:
            shutil.rmtree(self.root, ignore_errors=True)
            self._dirs.clear()
            with self._lock:
                self._verified.clear()
            self._make_dirs()


class _Tee:
    """A readable file that copies what is read from ``src`` into ``dst`` (hash and save in one pass)."""

    def __init__(self, src: Any, dst: Any) -> None:
        self.src, self.dst = src, dst

    def read(self, size: int = -1) -> bytes:
        chunk = self.src.read(size)
        if chunk:
            self.dst.write(chunk)
        return chunk


def _version_token(info: dict[str, Any]) -> str | None:
    """The object's version id or ETag (whatever the store gives), or None."""
    for key in _VERSION_KEYS:
        value = info.get(key)
        if value:
            return f"{key}={value}"
    return None


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
