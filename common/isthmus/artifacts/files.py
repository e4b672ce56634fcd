"""Files as artifacts: a step that returns a path or a file object stores what is in it, not where it is.

A ``pathlib.Path`` output (a file or a directory) is stored as a deterministic tar archive (POSIX pax): a
file is one member named after it; a directory is its own member followed by everything under it, in
sorted order. Every member has mtime 0, owner 0 and a fixed mode (0644 files, 0755 directories), so the
content hash depends only on the name, the relative paths and the bytes — not on where the path was,
when it was written, or its permissions. A symbolic link inside a directory is stored as a link when its
target stays inside the directory through real directories only; any other link (absolute, leading out,
or through another link), FIFO, socket or device is refused. A path that does not exist is refused too.

Loading gives a ``pathlib.Path`` to a read-only copy (files 0444, directories 0555) that keeps the
original name: ``$ISTHMUS_HOME/files/<hash hex>/<name>``, extracted from the verified object (a remote
store's object is downloaded first). A copy already there is reused only when it still hashes to the
ref's hash; otherwise it is replaced. The stored archive is untrusted: it must hold exactly one top name,
parents before children, each name once, no ``..``, no absolute name, only files, directories and links
that pass the rule above. It is extracted into a new private directory with no link made before the last
file is written, or refused whole (:class:`~isthmus.errors.MaterializationError`).

A file object (``io.BytesIO``, a file opened for reading in binary or text mode) stores its bytes — the
whole file, whatever its position, which is left unchanged — and loads back as an ``io.BytesIO``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat
import tarfile
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from blake3 import blake3

from isthmus import hashing
from isthmus.artifacts import safefs
from isthmus.artifacts.materializers import Materializer
from isthmus.config import get_settings
from isthmus.errors import MaterializationError

_FILE_MODE, _DIR_MODE, _LINK_MODE = 0o644, 0o755, 0o777
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_READ = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 20


@dataclass
class _Listing:
    """What an archive holds, by member name: 'dir', 'file' or 'link'; links with their targets."""

    kinds: dict[str, str] = field(default_factory=dict)
    links: list[tuple[str, str]] = field(default_factory=list)
    files: int = 0
    size: int = 0


def link_problem(member: str, target: str, kinds: Mapping[str, str]) -> str | None:
    """Why the link ``member`` (``top/...``) pointing at ``target`` could reach outside ``top``, or None.

    The target is followed one name at a time from the link's directory: ``..`` may not leave ``top``, and
    every name before the last must be a real directory of the archive (not a link: a link to ``.``
    followed by ``..`` would climb out of ``top`` although the text stays inside)."""
    if not target or target.startswith("/") or "\x00" in target:
        return "is absolute or empty, so it may lead outside the directory"
    where = member.split("/")[:-1]
    steps = [s for s in target.split("/") if s not in ("", ".")]
    for index, name in enumerate(steps):
        if name == "..":
            if len(where) <= 1:
                return "leads outside the directory"
            where.pop()
            continue
        where.append(name)
        if index < len(steps) - 1 and kinds.get("/".join(where)) != "dir":
            return "passes through a link or a file, or leads outside the directory"
    return None


# -- writing ----------------------------------------------------------------------------------------
def _info(name: str, kind: bytes, *, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.linkname = linkname
    info.mode = {tarfile.DIRTYPE: _DIR_MODE, tarfile.SYMTYPE: _LINK_MODE}.get(kind, _FILE_MODE)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_file(tar: tarfile.TarFile, name: str, fd: int, listing: _Listing, shown: str) -> None:
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise MaterializationError(f"{shown} is not a regular file, a directory or a link; it cannot be stored")
        try:
            tar.addfile(_info(name, tarfile.REGTYPE, size=st.st_size), fh)
        except OSError as exc:
            if "unexpected end of data" in str(exc):  # tarfile read fewer bytes than the size it wrote
                raise MaterializationError(
                    f"{shown} shrank while it was being stored; return it once written"
                ) from None
            raise
    listing.kinds[name] = "file"
    listing.files += 1
    listing.size += st.st_size


def _add_tree(tar: tarfile.TarFile, dir_fd: int, rel: str, listing: _Listing, shown: str) -> None:
    """Add what is under the directory ``dir_fd`` (member names ``rel/...``), sorted, never following a link."""
    with os.scandir(dir_fd) as entries:
        names = sorted(e.name for e in entries)
    for name in names:
        member, where = f"{rel}/{name}", os.path.join(shown, name)
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(name, dir_fd=dir_fd)
            tar.addfile(_info(member, tarfile.SYMTYPE, linkname=target))
            listing.kinds[member] = "link"
            listing.links.append((member, target))
        elif stat.S_ISDIR(st.st_mode):
            child = os.open(name, _DIR | _NOFOLLOW, dir_fd=dir_fd)
            try:
                tar.addfile(_info(member, tarfile.DIRTYPE))
                listing.kinds[member] = "dir"
                _add_tree(tar, child, member, listing, where)
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode):
            _add_file(tar, member, os.open(name, _READ, dir_fd=dir_fd), listing, where)
        else:
            raise MaterializationError(
                f"{where} is a FIFO, socket or device; only files, directories and links are stored"
            )


def top_name(path: Path) -> str:
    """The name a path's contents are stored under (its own name; for ``.`` or ``..``, the directory's)."""
    name = path.name if path.name not in ("", ".", "..") else Path(os.path.abspath(path)).resolve().name
    if not name:
        raise MaterializationError(f"{str(path)!r} is the root directory; return a file or a directory below it")
    return name


def write_archive(path: Path, out: BinaryIO, name: str | None = None) -> dict[str, Any]:
    """Write the deterministic archive of what is at ``path`` (named ``name``, default its own) to ``out``;
    return its description (kind, name, files, bytes). The path itself may be a link (it is what the step
    returned); links below it are stored as links, refused when they could lead outside it."""
    name = name or top_name(path)
    shown = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MaterializationError(
            f"{shown} does not exist; write the file or directory before returning its path"
        ) from None
    except OSError as exc:
        raise MaterializationError(
            f"{shown} cannot be read ({exc.strerror}); return a path this user can read"
        ) from None
    listing = _Listing()
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
            tar.copybufsize = _CHUNK  # type: ignore[attr-defined]  # read size (not in typeshed); same bytes out
            if stat.S_ISDIR(st.st_mode):
                dir_fd = os.open(path, _DIR)
                try:
                    tar.addfile(_info(name, tarfile.DIRTYPE))
                    listing.kinds[name] = "dir"
                    _add_tree(tar, dir_fd, name, listing, shown)
                finally:
                    os.close(dir_fd)
            elif stat.S_ISREG(st.st_mode):
                _add_file(tar, name, os.open(path, _READ & ~_NOFOLLOW), listing, shown)
            else:
                raise MaterializationError(f"{shown} is a FIFO, socket or device; return a file or a directory")
    except (PermissionError, FileNotFoundError, NotADirectoryError) as exc:
        where = exc.filename if isinstance(exc.filename, str) else shown
        raise MaterializationError(
            f"{where} cannot be read while storing {shown} ({exc.strerror}); fix it and re-run"
        ) from None
    for member, target in listing.links:
        problem = link_problem(member, target, listing.kinds)
        if problem:
            inside = member.split("/", 1)[1]
            raise MaterializationError(
                f"{shown}: the link {inside!r} -> {target!r} {problem}; isthmus stores a directory's own contents "
                "only: copy the target in (shutil.copytree(..., symlinks=False)) or make the link relative and inside"
            )
    kind = "directory" if listing.kinds[name] == "dir" else "file"
    return {"kind": kind, "name": name, "files": listing.files, "bytes": listing.size}


class _HashSink:
    """A write-only file that hashes what is written to it."""

    def __init__(self) -> None:
        self.hasher = blake3()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def digest(self) -> str:
        return hashing.PREFIX + self.hasher.hexdigest()


def archive_digest(path: Path, name: str) -> str | None:
    """The content hash of the archive of ``path`` (stored as ``name``); None if it cannot be archived."""
    sink = _HashSink()
    try:
        write_archive(path, sink, name)  # type: ignore[arg-type]  # write() and tell() are all tarfile uses
    except (MaterializationError, OSError):
        return None
    return sink.digest()


# -- reading (the archive is untrusted) ----------------------------------------------------------------
def _unsafe(what: str) -> MaterializationError:
    return MaterializationError(
        f"stored archive refused: {what}; isthmus never writes such an archive, so the ref or the artifact store "
        "was tampered with: re-run the step that produced it"
    )


def _checked_name(name: str, listing: _Listing, top: str | None) -> list[str]:
    parts = name.split("/")
    if "\x00" in name or any(p in ("", ".", "..") for p in parts):
        raise _unsafe(f"member {name!r:.200} is absolute or holds an empty, '.' or '..' part")
    if top is None and len(parts) != 1:
        raise _unsafe(f"its first member {name!r:.200} is not a single name")
    if top is not None and (parts[0] != top or len(parts) == 1):
        raise _unsafe(f"member {name!r:.200} is not under {top!r:.100}")
    if name in listing.kinds:
        raise _unsafe(f"member {name!r:.200} appears twice")
    if len(parts) > 1 and listing.kinds.get("/".join(parts[:-1])) != "dir":
        raise _unsafe(f"member {name!r:.200} comes before its directory, or its directory is not a directory")
    return parts


def _copy_range(src_fd: int, offset: int, size: int, dst_fd: int) -> None:
    """Copy ``size`` bytes of ``src_fd`` from ``offset`` to ``dst_fd`` (in the kernel where it can)."""
    end = offset + size
    while offset < end:
        try:
            sent = os.sendfile(dst_fd, src_fd, offset, min(end - offset, 1 << 30))
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            chunk = os.pread(src_fd, min(end - offset, _CHUNK), offset)
            sent = os.write(dst_fd, chunk) if chunk else 0
        if sent == 0:
            raise _unsafe("a member's data is cut short")
        offset += sent


def _extract(src: BinaryIO, dest: str) -> tuple[str, _Listing]:
    """Extract the archive in the file ``src`` into the empty private directory ``dest``; (top name, listing)."""
    listing = _Listing()
    top: str | None = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        with tarfile.open(fileobj=src, mode="r:", encoding="utf-8") as tar:
            for member in tar:
                parts = _checked_name(member.name, listing, top)
                target = os.path.join(dest, *parts)
                if member.isdir():
                    os.mkdir(target, 0o700)
                    listing.kinds[member.name] = "dir"
                elif member.isreg() and not member.issparse():
                    out = os.open(target, flags, 0o600)
                    try:
                        _copy_range(src.fileno(), member.offset_data, member.size, out)
                    finally:
                        os.close(out)
                    listing.kinds[member.name] = "file"
                    listing.files += 1
                elif member.issym():
                    listing.kinds[member.name] = "link"  # made after every file is written
                    listing.links.append((member.name, member.linkname))
                else:
                    raise _unsafe(f"member {member.name!r:.200} is a hard link, device, FIFO or sparse file")
                top = top or parts[0]
    except (tarfile.TarError, EOFError, UnicodeError, ValueError) as exc:
        raise _unsafe(f"not a valid archive ({type(exc).__name__}: {exc})") from None
    if top is None:
        raise _unsafe("the archive is empty")
    if listing.kinds[top] != "dir" and len(listing.kinds) > 1:
        raise _unsafe(f"{top!r:.100} is a file but the archive holds more members")
    for link, link_target in listing.links:
        problem = link_problem(link, link_target, listing.kinds)
        if problem:
            raise _unsafe(f"the link {link!r:.200} -> {link_target!r:.200} {problem}")
    for link, link_target in listing.links:
        os.symlink(link_target, os.path.join(dest, *link.split("/")))
    return top, listing


def _make_read_only(dest: str, listing: _Listing) -> None:
    # deepest first: a directory loses its write bit after its entries changed mode
    for member in sorted(listing.kinds, key=lambda m: m.count("/"), reverse=True):
        kind = listing.kinds[member]
        if kind != "link":
            os.chmod(os.path.join(dest, *member.split("/")), 0o555 if kind == "dir" else 0o444)


def remove_copy(path: str) -> None:
    """Remove a loaded copy (read-only directories included), never following a link out of it."""
    if not os.path.lexists(path):
        return
    if not safefs.is_real_dir(path):
        os.remove(path)
        return
    for dirpath, _dirs, _files in os.walk(path):  # os.walk does not descend into links
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _version(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _copies_root() -> str:
    return safefs.private_dir(str(get_settings().home / "files"))


def _existing_copy(final: str, content_hash: str) -> Path | None:
    """``final``'s one entry if it is a real file or directory whose archive matches ``content_hash``."""
    try:
        names = os.listdir(final) if safefs.is_real_dir(final) else []
    except OSError:
        return None
    if len(names) != 1:
        return None
    entry = Path(final, names[0])
    st = os.lstat(entry)
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return None
    return entry if archive_digest(entry, names[0]) == content_hash else None


def load_copy(archive: str) -> Path:
    """A read-only local copy of the archive at ``archive`` (see the module docstring); reused when an
    intact copy is there already."""
    with open(archive, "rb") as fh:
        with safefs.fd_path(fh.fileno(), archive) as readable:  # hash exactly the file that is extracted
            content_hash, _ = hashing.hash_file(readable)
        before = _version(os.fstat(fh.fileno()))
        root = _copies_root()
        final = os.path.join(root, content_hash.split(":", 1)[1])
        found = _existing_copy(final, content_hash)
        if found is not None:
            return found
        part = tempfile.mkdtemp(prefix=".part-", dir=root)
        try:
            top, listing = _extract(fh, part)
            if _version(os.fstat(fh.fileno())) != before:  # written to since it was hashed
                raise _unsafe("its bytes changed while it was read")
            _make_read_only(part, listing)
            _install(part, final, content_hash)
        except BaseException:
            remove_copy(part)
            raise
    return Path(final, top)


def _install(part: str, final: str, content_hash: str) -> None:
    """Rename the extracted ``part`` to ``final``; a copy another process installed first is kept when
    intact, a damaged one is moved aside and removed."""
    for _ in range(5):
        try:
            os.rename(part, final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise
        else:
            os.chmod(final, 0o555)
            return
        if _existing_copy(final, content_hash) is not None:
            remove_copy(part)
            return
        stale = f"{final}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(final, stale)
        except FileNotFoundError:
            continue
        remove_copy(stale)
    raise MaterializationError(f"{final} keeps changing while isthmus installs a loaded copy there; retry")


def _stream_holds(stream: BinaryIO, needles: list[bytes]) -> bool:
    """Whether the bytes read from ``stream`` contain one of ``needles`` (chunks overlap by the longest)."""
    overlap = max(len(n) for n in needles) - 1
    tail = b""
    while chunk := stream.read(_CHUNK):
        window = tail + chunk
        if any(n in window for n in needles):
            return True
        tail = window[-overlap:] if overlap else b""
    return False


def _needles(secrets: frozenset[str]) -> list[bytes]:
    return sorted({s.encode() for s in secrets if s}, key=len)


def secret_in_tree(path: Path, secrets: frozenset[str]) -> str | None:
    """The first file under ``path`` (a file or a directory; links not followed) whose bytes hold a secret."""
    needles = _needles(secrets)
    if not needles:
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    for file in files:
        try:
            with open(file, "rb") as fh:
                if _stream_holds(fh, needles):
                    return str(file.relative_to(path)) if file != path else file.name
        except OSError:  # unreadable: save() reports it
            continue
    return None


class PathMaterializer(Materializer):
    """``pathlib.Path`` outputs: what is at the path, as a deterministic archive; loads a read-only copy.

    Subclasses (the flytekit plugin's ``FlyteFile``/``FlyteDirectory``) override :meth:`source` and
    :meth:`value`; ``expect`` ('file' or 'directory') refuses the other kind."""

    name = "path-tar"
    version = "1"
    needs_verified_bytes = False  # extracts files; never runs anything it reads
    expect: str | None = None

    def can_handle(self, obj: Any) -> bool:
        return isinstance(obj, Path)

    def source(self, obj: Any) -> Path:
        """The local path whose contents are stored."""
        return Path(obj)

    def value(self, copy: Path, python_type: str) -> Any:
        """What a load returns for the read-only ``copy``."""
        return copy

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        source = self.source(obj)
        with open(path, "wb") as out:
            described = write_archive(source, out)
        if self.expect is not None and described["kind"] != self.expect:
            raise MaterializationError(f"{source} is a {described['kind']}, not a {self.expect}")
        return described

    def load(self, path: str, python_type: str) -> Any:
        return self.value(load_copy(path), python_type)

    def contents_secret(self, obj: Any, secrets: frozenset[str]) -> str | None:
        try:
            source = self.source(obj)
        except Exception:  # save() reports it
            return None
        found = secret_in_tree(source, secrets)
        return None if found is None else f"the contents of {found}"


class FileObjectMaterializer(Materializer):
    """File objects (``io.BytesIO``, files open for reading): their bytes; they load as ``io.BytesIO``."""

    name = "file-object"
    version = "1"
    needs_verified_bytes = False

    def can_handle(self, obj: Any) -> bool:
        return isinstance(obj, (io.BufferedIOBase, io.RawIOBase, io.TextIOWrapper))

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        shown = repr(getattr(obj, "name", type(obj).__name__))
        if obj.closed:
            raise MaterializationError(
                f"the file object {shown} is closed; return it open, or return pathlib.Path of the file to store it"
            )
        if isinstance(obj, io.BytesIO):
            with open(path, "wb") as out:
                out.write(obj.getbuffer())
            return None
        if isinstance(obj, io.TextIOWrapper):
            obj.flush()
        binary = obj.buffer if isinstance(obj, io.TextIOWrapper) else obj
        if not obj.readable():
            raise MaterializationError(
                f"the file object {shown} is not open for reading; open it with 'rb' or 'w+b', or return "
                "pathlib.Path of the file to store it"
            )
        position = obj.tell() if obj.seekable() else None
        try:
            if position is not None:
                binary.seek(0)
            with open(path, "wb") as out:
                shutil.copyfileobj(binary, out, _CHUNK)
        finally:
            if position is not None:
                obj.seek(position)
        return None

    def load(self, path: str, python_type: str) -> Any:
        with open(path, "rb") as fh:
            return io.BytesIO(fh.read())

    def contents_secret(self, obj: Any, secrets: frozenset[str]) -> str | None:
        needles = _needles(secrets)
        if not needles or obj.closed:
            return None
        if isinstance(obj, io.BytesIO):
            data = obj.getbuffer().tobytes()
            return "the file object's bytes" if any(n in data for n in needles) else None
        binary = obj.buffer if isinstance(obj, io.TextIOWrapper) else obj
        if not obj.readable() or not obj.seekable():
            return None
        if isinstance(obj, io.TextIOWrapper):
            obj.flush()
        position = obj.tell()
        try:
            binary.seek(0)
            return "the file object's bytes" if _stream_holds(binary, needles) else None
        finally:
            obj.seek(position)


__all__ = [
    "FileObjectMaterializer",
    "PathMaterializer",
    "archive_digest",
    "link_problem",
    "load_copy",
    "remove_copy",
    "top_name",
    "write_archive",
]
