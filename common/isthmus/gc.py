"""Retention (``isthmus gc``): delete the artifact objects nothing needs any more.

An object is *needed* when one of these references its content hash:

- a step run of a kept pipeline run. With ``keep_last`` and/or ``older_than``, a finished run that is not
  among the ``keep_last`` newest of its pipeline and (with ``older_than``) started before that age is not
  kept; with neither, every run is kept and only objects no record names (orphans) go. A RUNNING run, and a
  step run with no pipeline run, is always kept;
- a step run that is RUNNING (its recorded inputs) or started less than ``grace`` seconds ago (a cache hit
  just recorded, a result just committed);
- a current alias, and every hash in the alias history when the store keeps one (table
  ``artifact_alias_history``; without it, current aliases only);
- an unexpired cache entry (its step run's outputs). With ``prune_cache``, the entries of step runs of
  runs that are not kept are dropped instead when their outputs would otherwise go — the next run that
  needs them recomputes.

Safety against concurrent runs: nothing whose ``artifacts`` row is younger than ``grace`` is a candidate;
the references are listed again after the first listing (and after dropping cache entries, which on
PostgreSQL waits for cache hits that read them), and only what both listings found unneeded goes. A
local object is first renamed into ``.tmp`` (atomic) and its age checked there: one that a writer
committed again meanwhile (fresh mtime) is linked back, so a result recomputed while gc runs is never
lost. Remote objects (fsspec) are checked by their modification time just before they are removed.
Writer marks (empty files) stay: a mark vouches for bytes present or not, and removing one could race a
writer. The ``artifacts`` rows of deleted objects are removed; a later lookup of a cache entry that names
them finds the object missing and recomputes (the runner checks every object before a hit).

Housekeeping done on the way: expired cache entries are dropped; step runs left RUNNING by dead
processes are marked ABORTED, and the local pipeline runs those processes drove are closed ABORTED once
none of their step runs is open (:func:`isthmus.run_closing.abort_dead_processes`: only a provably dead
process counts, never a live run); abandoned partial writes are removed (dead writers' at once, others
after ``grace``; their bytes count in ``bytes_freed``); read-only loaded copies under
``$ISTHMUS_HOME/files`` whose artifact is gone are removed. A dry run counts all of it without acting,
except the loaded copies (which go depends on what is deleted).
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import func, select

from isthmus.artifacts import safefs, tmpfiles
from isthmus.artifacts.errors import InvalidArtifactRef
from isthmus.artifacts.refs import check_content_hash
from isthmus.config import get_settings
from isthmus.run_closing import abort_dead_processes
from isthmus.store import schema as s
from isthmus.store.metadata import MetadataStore, RetentionPlan
from isthmus.units import MAX_AGE

if TYPE_CHECKING:
    from isthmus.artifacts.store import ArtifactStore

_T = TypeVar("_T")

DEFAULT_GRACE = 3600.0
"""Seconds during which a new artifact, a new step run or a partial write is never touched."""
DRY_RUN_LISTING = 100
"""How many of the artifacts that would go a dry run lists (all are counted)."""


@dataclass
class GcReport:
    """What gc did (or, with ``dry_run``, would do). ``bytes_freed`` is the size of the artifact objects,
    unrecorded objects and partial writes removed (``part_bytes``: the partial writes' share); loaded copies
    are counted, not sized, and a dry run leaves their count None (which go depends on what is deleted).
    ``aborted``: step runs of dead processes marked ABORTED; ``closed_runs``: the pipeline runs they drove,
    closed ABORTED. A dry run lists only the first artifacts that would go in ``deleted`` (``listed_all``
    False when there are more)."""

    dry_run: bool
    runs: int = 0
    runs_kept: int = 0
    artifacts_deleted: int = 0
    bytes_freed: int = 0
    orphans_deleted: int = 0
    in_use_skipped: int = 0
    cache_entries_dropped: int = 0
    expired_entries: int | None = None
    parts_removed: int | None = None
    part_bytes: int | None = None
    copies_removed: int | None = None
    aborted: int | None = None
    runs_closed: int | None = None
    closed_runs: list[str] = field(default_factory=list)
    alias_history: bool = False
    deleted: list[str] = field(default_factory=list)
    listed_all: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _windows(now: float, older_than: float | None, grace: float) -> dict[str, Any]:
    """The times gc decides by: now, the age cutoff of runs (if any) and the start of the grace period."""
    return {
        "now": now,
        "age_cutoff": None if older_than is None else dt.datetime.fromtimestamp(now - older_than, dt.timezone.utc),
        "fresh": dt.datetime.fromtimestamp(now - grace, dt.timezone.utc),
    }


def _plan(
    meta: MetadataStore, now: float, keep_last: int | None, older_than: float | None, grace: float, prune_cache: bool
) -> RetentionPlan:
    """What is not needed now (see the module docstring), decided by set-based queries in the store."""
    return meta.retention_plan(**_windows(now, older_than, grace), keep_last=keep_last, prune_cache=prune_cache)


def _utc(value: dt.datetime | None, missing: dt.datetime | None = None) -> dt.datetime:
    """A stored time as an aware UTC datetime (SQLite returns naive ones); ``missing`` (or the earliest
    time) when there is none."""
    if value is None:
        return missing or dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def collect_garbage(
    meta: MetadataStore,
    artifacts: ArtifactStore,
    *,
    keep_last: int | None = None,
    older_than: float | None = None,
    dry_run: bool = False,
    prune_cache: bool = False,
    grace: float = DEFAULT_GRACE,
    listing: int = DRY_RUN_LISTING,
) -> GcReport:
    """Delete what no kept run, alias or live cache entry needs; see the module docstring. A dry run
    counts in the database and lists the first ``listing`` artifacts that would go (by hash)."""
    if keep_last is not None and keep_last < 0:
        raise ValueError(f"keep_last={keep_last} is negative; give the number of newest runs to keep per pipeline")
    if older_than is not None and not 0 <= older_than <= MAX_AGE:
        raise ValueError(f"older_than={older_than} is not an age from 0 to 100 years (in seconds); give e.g. 30d")
    if not 0 <= grace <= MAX_AGE:
        raise ValueError(
            f"grace={grace} is not from 0 to 100 years (in seconds); give seconds (default {DEFAULT_GRACE:.0f})"
        )
    report = GcReport(dry_run=dry_run)
    dead = abort_dead_processes(meta, by="isthmus gc", dry_run=dry_run)
    report.aborted, report.runs_closed = len(dead.aborted), len(dead.closed)
    report.closed_runs = [c.run_id for c in dead.closed]
    report.expired_entries = _expired_entries(meta, time.time()) if dry_run else meta.prune_expired(time.time())
    if dry_run:
        now = time.time()
        # the objects directory is read beside the counting query (which waits in the database, not in Python)
        listed = _beside(_orphans, meta, artifacts, now - grace)
        summary = meta.retention_summary(
            **_windows(now, older_than, grace), keep_last=keep_last, prune_cache=prune_cache, listing=listing
        )
        orphans = listed.result()
        report.runs, report.runs_kept, report.alias_history = summary.runs, summary.runs_kept, summary.alias_history
        report.cache_entries_dropped = summary.droppable
        report.deleted, report.listed_all = summary.listed, len(summary.listed) == summary.candidates
        report.artifacts_deleted = summary.candidates
        parts = abandoned_parts(artifacts, now - grace)
        report.orphans_deleted = len(orphans)
        report.parts_removed, report.part_bytes = len(parts), sum(p.size for p in parts)
        report.bytes_freed = summary.size + sum(size for _, size in orphans) + report.part_bytes
        return report
    plan = _plan(meta, time.time(), keep_last, older_than, grace, prune_cache)
    report.runs, report.runs_kept, report.alias_history = plan.runs, plan.runs_kept, plan.alias_history
    report.cache_entries_dropped = meta.drop_cache_entries(plan.droppable)
    again = _plan(meta, time.time(), keep_last, older_than, grace, prune_cache)  # references listed again
    cutoff = time.time() - grace
    gone: list[str] = []
    for content_hash in sorted(plan.candidates.keys() & again.candidates.keys()):
        freed = _delete_object(artifacts, content_hash, cutoff)
        if freed is None:
            report.in_use_skipped += 1
            continue
        gone.append(content_hash)
        report.bytes_freed += freed
    report.in_use_skipped += len(plan.candidates.keys() - again.candidates.keys())
    meta.forget_artifacts(gone)
    report.deleted, report.artifacts_deleted = gone, len(gone)
    for content_hash, _size in _orphans(meta, artifacts, cutoff):
        freed = _delete_object(artifacts, content_hash, cutoff)
        if freed is not None:
            report.orphans_deleted += 1
            report.bytes_freed += freed
    report.parts_removed, report.part_bytes = _remove_parts(artifacts, abandoned_parts(artifacts, time.time() - grace))
    report.bytes_freed += report.part_bytes
    report.copies_removed = _clean_loaded_copies(meta, gone, cutoff)
    return report


def _beside(fn: Callable[..., _T], *args: Any) -> Future[_T]:
    """``fn(*args)`` started on a daemon thread: an interrupt of the caller never waits for it."""
    future: Future[_T] = Future()

    def work() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to the caller, which raises it
            future.set_exception(exc)

    threading.Thread(target=work, name="isthmus-gc-objects", daemon=True).start()
    return future


def _expired_entries(meta: MetadataStore, now: float) -> int:
    """How many cache entries have expired (what :meth:`MetadataStore.prune_expired` would drop)."""
    e = s.cache_entries
    query = select(func.count()).select_from(e).where(e.c.expires_at.is_not(None), e.c.expires_at <= now)
    with meta.engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


# -- objects ---------------------------------------------------------------------------------------
def _orphans(meta: MetadataStore, artifacts: ArtifactStore, cutoff: float) -> list[tuple[str, int]]:
    """(hash, size) of the local objects that no ``artifacts`` row and no step run names, last written
    before ``cutoff``."""
    on_disk = artifacts.listed_object_hashes()  # unchecked names: only the few unrecorded ones are checked
    if not on_disk:
        return []
    out = []
    for content_hash in meta.unrecorded_hashes(on_disk):
        try:
            check_content_hash(content_hash)
            st = os.lstat(artifacts.path_for(content_hash))
        except (InvalidArtifactRef, OSError):
            continue
        if st.st_mtime < cutoff:
            out.append((content_hash, int(st.st_size)))
    return out


def _delete_object(artifacts: ArtifactStore, content_hash: str, cutoff: float) -> int | None:
    """Remove the object of ``content_hash``; the bytes freed (0 when it was not there), or None when it
    was written after ``cutoff`` (a writer committed it again: it stays)."""
    try:
        check_content_hash(content_hash)
    except InvalidArtifactRef:
        return None
    if artifacts.local:
        return _delete_local(artifacts, content_hash, cutoff)
    path = artifacts.path_for(content_hash)
    try:
        artifacts.fs.invalidate_cache(path)
        info = artifacts.fs.info(path)
    except FileNotFoundError:
        return 0
    written = _modified(info)
    if written is not None and written >= cutoff:
        return None
    try:
        artifacts.fs.rm_file(path)
    except FileNotFoundError:
        return 0
    return int(info.get("size") or 0)


def _modified(info: dict[str, Any]) -> float | None:
    """When a remote object was last written (seconds since the epoch), if the store says."""
    for key in ("LastModified", "last_modified", "mtime", "updated", "created"):
        value = info.get(key)
        if isinstance(value, dt.datetime):
            return _utc(value).timestamp()
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _delete_local(artifacts: ArtifactStore, content_hash: str, cutoff: float) -> int | None:
    """Rename the object into ``.tmp`` (atomic), then remove it there unless it was written after
    ``cutoff``; a fresh one is linked back (or dropped, when a newer commit took its place)."""
    hexpart = content_hash.split(":", 1)[1]
    try:
        obj_fd = safefs.open_dir(artifacts.root, ["objects", hexpart[:2]])
    except FileNotFoundError:
        return 0
    except OSError:  # a link or a file where the directory should be: not ours to touch
        return None
    try:
        tmp_fd = safefs.open_dir(artifacts.root, [".tmp"], create=True)
        try:
            aside = tmpfiles.part_name()
            try:
                os.rename(hexpart, aside, src_dir_fd=obj_fd, dst_dir_fd=tmp_fd)
            except FileNotFoundError:
                return 0
            st = os.stat(aside, dir_fd=tmp_fd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mtime >= cutoff:
                try:
                    os.link(aside, hexpart, src_dir_fd=tmp_fd, dst_dir_fd=obj_fd, follow_symlinks=False)
                except FileExistsError:
                    pass  # a newer commit of the same content is in place
                os.unlink(aside, dir_fd=tmp_fd)
                return None
            os.unlink(aside, dir_fd=tmp_fd)
            return int(st.st_size)
        finally:
            os.close(tmp_fd)
    finally:
        os.close(obj_fd)


# -- partial writes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Part:
    """An abandoned partial write: where it is, its size, and whether it is on the remote store."""

    path: str
    size: int
    remote: bool = False


def abandoned_parts(artifacts: ArtifactStore, cutoff: float) -> list[_Part]:
    """The partial writes gc removes, by the rule of :meth:`ArtifactStore.clean_tmp`: in a local store's
    ``.tmp``, any file a dead writer of this host left or last changed before ``cutoff``; for a remote store,
    such ``.part`` files in its local staging and cache directories, and staged uploads
    (``<root>/.tmp/*.part``) last written before ``cutoff``."""
    if artifacts.local:
        tmp = os.path.join(artifacts.root, ".tmp")
        return _local_parts(tmp, cutoff, parts_only=False) if safefs.is_real_dir(tmp) else []
    found: list[_Part] = []
    for directory in sorted({artifacts._tmp_dir(), artifacts._cache_dir()}):
        found += _local_parts(directory, cutoff, parts_only=True)
    return found + _remote_staging(artifacts, cutoff)


def _local_parts(directory: str, cutoff: float, *, parts_only: bool) -> list[_Part]:
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for entry in entries:
        if parts_only and not entry.name.endswith(tmpfiles.SUFFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) and (tmpfiles.writer_gone(entry.name) or st.st_mtime < cutoff):
            found.append(_Part(entry.path, int(st.st_size)))
    return found


def _remote_staging(artifacts: ArtifactStore, cutoff: float) -> list[_Part]:
    """Staged uploads (``<root>/.tmp/*.part``) of a remote store left before ``cutoff``."""
    try:
        entries = artifacts.fs.ls(f"{artifacts.root}/.tmp", detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for info in entries:
        name = str(info.get("name", ""))
        written = _modified(info)
        if name.endswith(tmpfiles.SUFFIX) and written is not None and written < cutoff:
            found.append(_Part(name, int(info.get("size") or 0), remote=True))
    return found


def _remove_parts(artifacts: ArtifactStore, parts: list[_Part]) -> tuple[int, int]:
    """Remove ``parts``; how many went and their bytes (one that vanished meanwhile — committed by its
    writer, or removed by another gc — is not counted)."""
    removed = size = 0
    for part in parts:
        try:
            if part.remote:
                artifacts.fs.rm_file(part.path)
            else:
                os.remove(part.path)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue
        removed += 1
        size += part.size
    return removed, size


# -- loaded copies ($ISTHMUS_HOME/files) ------------------------------------------------------------
def _clean_loaded_copies(meta: MetadataStore, deleted: list[str], cutoff: float) -> int:
    """Remove loaded copies of deleted artifacts, copies whose artifact is not recorded any more, and
    abandoned extractions, all last changed before ``cutoff`` (a copy being extracted or used is newer)."""
    root = os.path.join(str(get_settings().home), "files")
    if not safefs.is_real_dir(root):
        return 0
    gone = {h.split(":", 1)[1] for h in deleted}
    names = os.listdir(root)
    from isthmus.artifacts.files import remove_copy  # with the materializers: only when gc deletes

    hexes = [n for n in names if len(n) == 64 and all(c in "0123456789abcdef" for c in n)]
    known = {h.split(":", 1)[1] for h in meta.artifacts_by_hash([f"blake3:{n}" for n in hexes])}
    removed = 0
    for name in names:
        path = os.path.join(root, name)
        abandoned = name.startswith(".part-") or ".stale-" in name
        if name in gone or abandoned or (name in hexes and name not in known):
            try:
                if name not in gone and os.lstat(path).st_mtime >= cutoff:
                    continue
            except OSError:
                continue
            remove_copy(path)
            removed += 1
    return removed
