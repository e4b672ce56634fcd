"""Artifact ids: which recorded artifact version a piece of text names.

An artifact's *name* is ``STEP.OUTPUT`` (``train.output``, ``split.test``): every step run output is linked
under it in ``step_run_artifacts``. The *versions* of a name are the distinct content hashes produced under
it, numbered in the order they were first produced (a cache hit reuses a version, it never makes one).
An id is one of:

- a content hash or a unique prefix of one (``blake3:9f3a…``, ``9f3a0c``);
- ``NAME`` or ``NAME@latest``: the newest version of ``NAME``;
- ``NAME~N``: ``N`` versions before the newest (``NAME~0`` is the newest);
- ``NAME@ALIAS``: the version the alias points at (``train.output@production``).

An unknown or ambiguous id raises :class:`~isthmus.errors.RunNotFound` with one line naming it and the fix.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import and_, distinct, func, or_, select

from isthmus.errors import RunNotFound
from isthmus.store import schema as s
from isthmus.store.metadata import MetadataStore

LATEST = "latest"
_NAME_LIMIT, _ALIAS_LIMIT = 512, 255  # the widths of the artifact_aliases columns
_HASH_ID = re.compile(r"(?:blake3:)?[0-9a-f]+", re.IGNORECASE)
_BACK = re.compile(r"(.+)~(\d{1,9})")
_BAD_TEXT = re.compile(r"[\x00-\x20\x7f]")
_SHOWN = 60


def quoted(text: str) -> str:
    """``text`` quoted for a one-line error, cut when long (ids may be hostile)."""
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


@dataclass(frozen=True)
class VersionStats:
    """One version of an artifact name: its hash, its number (1 = the first produced) and when it was
    first and last produced under that name."""

    content_hash: str
    number: int
    first_produced: dt.datetime
    last_produced: dt.datetime


@dataclass(frozen=True)
class ResolvedArtifact:
    """The artifact version an id named, with its stored record."""

    id: str
    content_hash: str
    name: str | None  # the name the id used, or the only name a hash was produced under
    number: int | None  # version number under ``name`` (1 = first)
    versions: int | None  # how many versions ``name`` has
    uri: str
    size: int
    materializer: str
    python_type: str
    metadata: dict[str, Any] | None
    created_at: dt.datetime | None
    producer_step_run_id: str | None
    names: list[str] = field(default_factory=list)  # every name it was produced under

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_alias(text: str) -> tuple[str, str]:
    """``(name, alias)`` of ``NAME@ALIAS`` text; a malformed one raises RunNotFound naming the form."""
    name, at, alias = str(text).strip().rpartition("@")
    if not at or not name or not alias or len(name) > _NAME_LIMIT or len(alias) > _ALIAS_LIMIT:
        raise RunNotFound(f"{quoted(text)} is not NAME@ALIAS (e.g. train.output@production)")
    if _BAD_TEXT.search(name) or _BAD_TEXT.search(alias) or "@" in name:
        raise RunNotFound(f"{quoted(text)}: names and aliases hold no spaces, control characters or a second '@'")
    return name, alias


def versions_of(metadata: MetadataStore, name: str) -> list[VersionStats]:
    """The versions of artifact ``name``, oldest first (by the artifact-name index)."""
    link, r = s.step_run_artifacts, s.step_runs
    first, last = func.min(r.c.started_at), func.max(r.c.started_at)
    query = (
        select(link.c.content_hash, first.label("first"), last.label("last"))
        .select_from(link.join(r, r.c.id == link.c.step_run_id))
        .where(link.c.artifact_name == name, link.c.role == "output")
        .group_by(link.c.content_hash)
        .order_by(first, link.c.content_hash)
    )
    with metadata.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [VersionStats(h, i + 1, a, b) for i, (h, a, b) in enumerate(rows)]


def names_of(metadata: MetadataStore, content_hash: str) -> list[str]:
    """The names ``content_hash`` was produced under (by the content-hash index)."""
    link = s.step_run_artifacts
    query = (
        select(link.c.artifact_name)
        .where(link.c.content_hash == content_hash, link.c.role == "output")
        .distinct()
        .order_by(link.c.artifact_name)
    )
    with metadata.engine.connect() as conn:
        return [str(x) for x in conn.execute(query).scalars()]


def is_version_of(metadata: MetadataStore, name: str, content_hash: str) -> bool:
    """Whether ``content_hash`` was produced under ``name``."""
    link = s.step_run_artifacts
    query = (
        select(link.c.step_run_id)
        .where(link.c.artifact_name == name, link.c.content_hash == content_hash, link.c.role == "output")
        .limit(1)
    )
    with metadata.engine.connect() as conn:
        return conn.execute(query).first() is not None


def alias_target(metadata: MetadataStore, name: str, alias: str) -> str | None:
    """The hash ``name@alias`` points at now, or None."""
    al = s.artifact_aliases
    with metadata.engine.connect() as conn:
        found = conn.execute(select(al.c.content_hash).where(al.c.name == name, al.c.alias == alias)).scalar()
    return str(found) if found is not None else None


def _hashes_with_prefix(metadata: MetadataStore, needle: str) -> list[str]:
    a = s.artifacts
    if metadata.dialect == "sqlite":  # a key range: SQLite's LIKE does not use the primary key
        upper = needle[:-1] + chr(ord(needle[-1]) + 1)
        cond = and_(a.c.content_hash >= needle, a.c.content_hash < upper)
    else:
        cond = a.c.content_hash.startswith(needle, autoescape=True)
    with metadata.engine.connect() as conn:
        return [str(x) for x in conn.execute(select(a.c.content_hash).where(cond).limit(2)).scalars()]


def _unknown_name(metadata: MetadataStore, name: str) -> RunNotFound:
    link = s.step_run_artifacts
    hint = ""
    if "." not in name:  # perhaps the step or the output name alone: suggest STEP.OUTPUT
        query = (
            select(link.c.artifact_name)
            .distinct()
            .where(
                or_(
                    link.c.artifact_name.endswith("." + name, autoescape=True),  # the output name alone
                    link.c.artifact_name.startswith(name + ".", autoescape=True),  # the step name alone
                ),
                link.c.role == "output",
            )
            .limit(3)
        )
        with metadata.engine.connect() as conn:
            similar = [str(x) for x in conn.execute(query).scalars()]
        if similar:
            hint = f" (did you mean {', '.join(repr(x) for x in similar)}?)"
    return RunNotFound(
        f"no artifact named {quoted(name)}{hint}; names are STEP.OUTPUT (e.g. train.output), "
        "see 'isthmus artifacts list'"
    )


def resolve_artifact(metadata: MetadataStore, ref: str) -> ResolvedArtifact:
    """The artifact version ``ref`` names (see the module docstring for the forms)."""
    ref = str(ref).strip()
    if not ref or len(ref) > _NAME_LIMIT + _ALIAS_LIMIT + 1 or _BAD_TEXT.search(ref):
        raise RunNotFound(f"artifact {quoted(ref)} matches no artifact; see 'isthmus artifacts list'")
    name: str | None = None
    if "@" in ref:
        name, alias = split_alias(ref)
        if alias == LATEST:
            return _nth_version(metadata, ref, name, 0)
        target = alias_target(metadata, name, alias)
        if target is None:
            raise RunNotFound(
                f"no alias {quoted(ref)}; set one with 'isthmus artifacts alias {name}@{alias} VERSION' "
                "(see 'isthmus artifacts aliases')"
            )
        return _record(metadata, ref, target, name, what=f"alias {quoted(ref)} points at {target[:19]}…, which")
    back = _BACK.fullmatch(ref)
    if back:
        return _nth_version(metadata, ref, back.group(1), int(back.group(2)))
    if _HASH_ID.fullmatch(ref):
        needle = ref.lower() if ref.lower().startswith("blake3:") else f"blake3:{ref.lower()}"
        found = _hashes_with_prefix(metadata, needle)
        if len(found) > 1:
            raise RunNotFound(f"artifact {quoted(ref)} is ambiguous; give more characters of the hash")
        if found:
            return _record(metadata, ref, found[0], None)
        if ref.lower().startswith("blake3:") or not versions_of(metadata, ref):
            raise RunNotFound(f"artifact {quoted(ref)} matches no artifact; see 'isthmus artifacts list'")
    return _nth_version(metadata, ref, ref, 0)


def _nth_version(metadata: MetadataStore, ref: str, name: str, back: int) -> ResolvedArtifact:
    versions = versions_of(metadata, name)
    if not versions:
        raise _unknown_name(metadata, name)
    if back >= len(versions):
        raise RunNotFound(
            f"{quoted(ref)}: {name} has {len(versions)} version(s), so {name}~0 … {name}~{len(versions) - 1}; "
            f"see 'isthmus artifacts list --name {name}'"
        )
    chosen = versions[len(versions) - 1 - back]
    return _record(metadata, ref, chosen.content_hash, name, versions=versions)


def _record(
    metadata: MetadataStore,
    ref: str,
    content_hash: str,
    name: str | None,
    *,
    versions: list[VersionStats] | None = None,
    what: str | None = None,
) -> ResolvedArtifact:
    a = s.artifacts
    with metadata.engine.connect() as conn:
        row = conn.execute(select(a).where(a.c.content_hash == content_hash)).mappings().first()
    if row is None:
        raise RunNotFound(
            f"{what or f'artifact {quoted(ref)} ({content_hash[:19]}…)'} is no longer recorded in this store "
            "(deleted); see 'isthmus artifacts list'"
        )
    names = names_of(metadata, content_hash)
    if name is None and len(names) == 1:
        name = names[0]
    number = count = None
    if name is not None and name in names:
        versions = versions if versions is not None else versions_of(metadata, name)
        count = len(versions)
        number = next((v.number for v in versions if v.content_hash == content_hash), None)
    return ResolvedArtifact(
        id=ref,
        content_hash=content_hash,
        name=name,
        number=number,
        versions=count,
        uri=row["uri"],
        size=row["size"],
        materializer=row["materializer"],
        python_type=row["python_type"],
        metadata=row["metadata"],
        created_at=row["created_at"],
        producer_step_run_id=row["producer_step_run_id"],
        names=names,
    )


def list_versions(metadata: MetadataStore, name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """One row per artifact version (name, hash), newest first, with its record, its version number
    (``name~N`` form too, with ``name``) and ``used_by``: how many step runs took or produced it."""
    a, link, al = s.artifacts, s.step_run_artifacts, s.artifact_aliases
    pairs: list[tuple[str, str, VersionStats | None, int | None]] = []
    if name is not None:
        versions = versions_of(metadata, name)
        for offset, v in enumerate(reversed(versions[-limit:] if limit > 0 else [])):
            pairs.append((name, v.content_hash, v, offset))
    else:
        with metadata.engine.connect() as conn:
            newest = conn.execute(select(a.c.content_hash).order_by(a.c.created_at.desc()).limit(limit)).scalars()
            for content_hash in list(newest):  # by the created_at index, then the content-hash index
                for n in names_of(metadata, content_hash) or [""]:
                    pairs.append((n, content_hash, None, None))
        pairs = pairs[:limit]
    hashes = sorted({h for _, h, _, _ in pairs})
    records: dict[str, dict[str, Any]] = {}
    used: dict[str, int] = {}
    aliases: dict[tuple[str, str], list[str]] = {}
    with metadata.engine.connect() as conn:
        for i in range(0, len(hashes), 500):
            chunk = hashes[i : i + 500]
            for row in conn.execute(select(a).where(a.c.content_hash.in_(chunk))).mappings():
                records[row["content_hash"]] = dict(row)
            count = func.count(distinct(link.c.step_run_id))
            query = (
                select(link.c.content_hash, count).where(link.c.content_hash.in_(chunk)).group_by(link.c.content_hash)
            )
            used.update({str(h): int(c) for h, c in conn.execute(query).all()})
            for n, label, h in conn.execute(
                select(al.c.name, al.c.alias, al.c.content_hash).where(al.c.content_hash.in_(chunk))
            ):
                aliases.setdefault((n, h), []).append(label)
    rows = []
    for n, h, stats, back in pairs:
        record = records.get(h)
        if record is None:  # deleted meanwhile
            continue
        rows.append(
            {
                "name": n or None,
                "version": stats.number if stats else None,
                "id": (f"{n}~{back}" if back else n) if back is not None else None,
                **record,
                "first_produced": stats.first_produced if stats else record["created_at"],
                "last_produced": stats.last_produced if stats else None,
                "used_by": used.get(h, 0),
                "aliases": sorted(aliases.get((n, h), [])),
            }
        )
    return rows
