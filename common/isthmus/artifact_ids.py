"""Artifact ids: which recorded artifact version a piece of text names.

An artifact's *name* is ``STEP.OUTPUT`` (``train.output``, ``split.test``): every step run output is linked
under it in ``step_run_artifacts``. The *versions* of a name are the distinct content hashes produced under
it (``artifact_versions``), numbered in the order they first appeared under it (a cache hit reuses a version,
never makes one).
An id is one of:

- a content hash or a unique prefix of one (``blake3:9f3a…``, ``9f3a0c``);
- ``NAME`` or ``NAME@latest``: the newest version of ``NAME``;
- ``NAME~N``: ``N`` versions before the newest (``NAME~0`` is the newest);
- ``NAME@ALIAS``: the version the alias points at (``train.output@production``) in one project (aliases
  belong to a project: ``project=``, else ``ISTHMUS_PROJECT``, else ``default``).

``projects`` (a set of project names; None: every project) narrows every id to the versions some step run
of those projects produced or consumed (:mod:`isthmus.governance.scope`): others are absent, and versions
are numbered among the visible ones.

An id naming a name is that name's version: its producer is the step run that first output it under that
name (:func:`producers_under`), even when the same bytes were produced earlier under another name (then
the ``artifacts`` row names that other step run); a hash names bytes, produced first by the row's step run.

An unknown or ambiguous id raises :class:`~isthmus.errors.RunNotFound` with one line naming it and the fix.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import and_, case, distinct, func, or_, select

from isthmus.errors import RunNotFound, quoted
from isthmus.governance.projects import alias_project
from isthmus.governance.scope import Projects, hash_in, limited, step_run_in, visible_step_runs
from isthmus.store import schema as s
from isthmus.store.metadata import MetadataStore

LATEST = "latest"
_NAME_LIMIT, _ALIAS_LIMIT = 512, 255  # the widths of the artifact_aliases columns
_HASH_ID = re.compile(r"(?:blake3:)?[0-9a-f]+", re.IGNORECASE)
_BACK = re.compile(r"(.+)~(\d{1,9})")
_BAD_TEXT = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class VersionStats:
    """One version of an artifact name: its hash, its number (1 = the oldest still stored) out of
    ``total`` stored, when it was first and last produced under that name, and how many other versions
    of the name were deleted from the store (gc) — numbers and ``NAME~N`` count stored versions only."""

    content_hash: str
    number: int
    total: int
    first_produced: dt.datetime
    last_produced: dt.datetime
    deleted: int = 0


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
    deleted_versions: int | None = None  # other versions of ``name`` deleted from the store (gc)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_alias(text: str) -> tuple[str, str]:
    """``(name, alias)`` of ``NAME@ALIAS`` text; a malformed one raises RunNotFound naming the form."""
    name, at, alias = str(text).strip().rpartition("@")
    if not at or not name or not alias or len(name) > _NAME_LIMIT or len(alias) > _ALIAS_LIMIT:
        raise RunNotFound(f"{quoted(text)} is not NAME@ALIAS (e.g. train.output@production)")
    if _BAD_TEXT.search(name) or _BAD_TEXT.search(alias) or "@" in name:
        raise RunNotFound(f"{quoted(text)}: names and aliases hold no spaces, control characters or a second '@'")
    if any(c in alias for c in "~:"):  # NAME~N and RUN:STEP are other ids: an alias never reads like one
        raise RunNotFound(f"{quoted(text)}: an alias holds no '~' or ':' (e.g. {name}@production)")
    return name, alias


_ID_HEX = 16  # hex digits of a hash a listing shows as the id of its version


def _scoped(query: Any, projects: Projects, content_hash: Any) -> Any:
    """``query`` narrowed to the versions (``content_hash``, a column) visible in ``projects``."""
    return query if projects is None else query.where(hash_in(content_hash, projects))


def _stored_versions(name: str, projects: Projects, *columns: Any) -> Any:
    """``columns`` of the stored versions of ``name`` (``artifact_versions`` whose artifact row stands)."""
    v, a = s.artifact_versions, s.artifacts
    query = select(*columns).select_from(v.join(a, a.c.content_hash == v.c.content_hash))
    return _scoped(query.where(v.c.artifact_name == name), projects, v.c.content_hash)


def versions_of(
    metadata: MetadataStore,
    name: str,
    *,
    back: int = 0,
    limit: int | None = None,
    content_hash: str | None = None,
    projects: Projects = None,
) -> list[VersionStats]:
    """Versions of artifact ``name`` still stored, newest first: ``limit`` of them from ``back`` versions
    before the newest (all by default), or only the version ``content_hash``.

    Versions are numbered in the order they first appeared under ``name`` (a step run producing or
    reusing them under that name; the same content stored earlier under another name does not count):
    ``artifact_versions``, newest first from its index, numbered by the count of the stored versions in
    the same statement."""
    if content_hash is None and limit is not None and limit <= 0:
        return []
    produced = count_versions(metadata, name, projects=projects)
    if not produced:
        return []
    if content_hash is not None:
        with metadata.engine.connect() as conn:
            found = conn.execute(_numbered(name, content_hash, projects)).first()
        if found is None:
            return []
        h, first, last, n, number = found
        return [VersionStats(str(h), int(number), int(n), first, last, deleted=max(produced - int(n), 0))]
    v = s.artifact_versions
    total = _counted(name, projects, True).scalar_subquery()
    query = _stored_versions(name, projects, v.c.content_hash, v.c.first_at, v.c.last_at, total)
    query = query.order_by(v.c.first_at.desc(), v.c.content_hash.desc()).offset(back)
    if limit is not None:
        query = query.limit(limit)
    with metadata.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        VersionStats(str(h), int(n) - back - i, int(n), first, last, deleted=max(produced - int(n), 0))
        for i, (h, first, last, n) in enumerate(rows)
    ]


def _nth_hash(metadata: MetadataStore, name: str, back: int, projects: Projects) -> str | None:
    """The hash of the stored version ``back`` versions before the newest of ``name``, or None."""
    v = s.artifact_versions
    query = (
        _stored_versions(name, projects, v.c.content_hash)
        .order_by(v.c.first_at.desc(), v.c.content_hash.desc())
        .offset(back)
        .limit(1)
    )
    with metadata.engine.connect() as conn:
        found = conn.execute(query).scalar()
    return None if found is None else str(found)


def _numbered(name: str, content_hash: str, projects: Projects) -> Any:
    """The stored version ``content_hash`` of ``name`` (hash, first and last production), with the count of
    the name's stored versions and its number among them (those first produced before it — ties by hash —
    and itself): one pass over the name's versions."""
    v = s.artifact_versions
    me = _stored_versions(name, projects, v.c.content_hash, v.c.first_at, v.c.last_at)
    me = me.where(v.c.content_hash == content_hash).subquery("me")
    older, a = s.artifact_versions.alias("older"), s.artifacts.alias("older_artifact")
    before = or_(
        older.c.first_at < me.c.first_at,
        and_(older.c.first_at == me.c.first_at, older.c.content_hash <= me.c.content_hash),
    )
    query = (
        select(me.c.content_hash, me.c.first_at, me.c.last_at, func.count(), func.sum(case((before, 1), else_=0)))
        .select_from(me.join(older, older.c.artifact_name == name).join(a, a.c.content_hash == older.c.content_hash))
        .group_by(me.c.content_hash, me.c.first_at, me.c.last_at)
    )
    return _scoped(query, projects, older.c.content_hash)


def _produced(metadata: MetadataStore, name: str, hashes: list[str]) -> dict[str, tuple[dt.datetime, dt.datetime]]:
    """When each of ``hashes`` was first and last produced under ``name``."""
    v = s.artifact_versions
    out: dict[str, tuple[dt.datetime, dt.datetime]] = {}
    with metadata.engine.connect() as conn:
        for i in range(0, len(hashes), 500):
            query = select(v.c.content_hash, v.c.first_at, v.c.last_at).where(
                v.c.artifact_name == name, v.c.content_hash.in_(hashes[i : i + 500])
            )
            out.update({str(h): (first, last) for h, first, last in conn.execute(query).all()})
    return out


def count_versions(metadata: MetadataStore, name: str, *, projects: Projects = None, stored: bool = False) -> int:
    """How many versions artifact ``name`` was produced in (from the ``artifact_versions`` index alone);
    with ``stored``, only those whose artifact is still recorded (not deleted by gc)."""
    with metadata.engine.connect() as conn:
        return int(conn.execute(_counted(name, projects, stored)).scalar() or 0)


def _counted(name: str, projects: Projects, stored: bool) -> Any:
    v, a = s.artifact_versions, s.artifacts
    versions = v.join(a, a.c.content_hash == v.c.content_hash) if stored else v
    query = select(func.count()).select_from(versions).where(v.c.artifact_name == name)
    return _scoped(query, projects, v.c.content_hash)


def _names_by(metadata: MetadataStore, content_hash: str, step_run_id: str | None) -> dict[str, bool]:
    """The names ``content_hash`` was produced under (:func:`names_of`), each with whether ``step_run_id``
    output it under that name: in the same pass along the content-hash index."""
    link = s.step_run_artifacts
    query = (
        select(link.c.artifact_name, func.max(case((link.c.step_run_id == step_run_id, 1), else_=0)))
        .where(link.c.content_hash == content_hash, link.c.role == "output")
        .group_by(link.c.artifact_name)
        .order_by(link.c.artifact_name)
    )
    with metadata.engine.connect() as conn:
        return {str(n): bool(mine) for n, mine in conn.execute(query).all()}


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


def producers_under(metadata: MetadataStore, name: str, hashes: Sequence[str]) -> dict[str, str]:
    """The producer of each of ``hashes`` as a version of ``name``: the step run that output it under
    ``name`` first — the ``artifacts`` row's producer when it did (it recorded the bytes first), else the
    one that started first (ties by id) — never one that produced the same bytes only under another name;
    a hash ``name`` never output is absent. By primary keys and the versions indexes."""
    a, first = s.artifacts, {}
    with metadata.engine.connect() as conn:
        for i in range(0, len(hashes), 500):
            query = select(a.c.content_hash, a.c.producer_step_run_id).where(a.c.content_hash.in_(hashes[i : i + 500]))
            first.update({str(h): producer for h, producer in conn.execute(query)})
    return {h: sid for (_, h), sid in _producers(metadata, {name: list(hashes)}, first).items()}


def _producers(
    metadata: MetadataStore, by_name: dict[str, list[str]], first: dict[str, Any]
) -> dict[tuple[str, str], str]:
    """The producer of each version (name, hash) of ``by_name`` (:func:`producers_under`), ``first`` holding
    each hash's ``artifacts`` row producer: which names those output their hash under (their own links, one
    pass by the primary key), then for the other versions the step run that started first under the name."""
    link = s.step_run_artifacts
    ids = sorted({str(x) for x in first.values() if x})
    made: dict[tuple[str, str], str] = {}
    with metadata.engine.connect() as conn:
        for i in range(0, len(ids), 500):
            query = select(link.c.step_run_id, link.c.artifact_name, link.c.content_hash).where(
                link.c.step_run_id.in_(ids[i : i + 500]), link.c.role == "output"
            )
            made.update({(str(n), str(h)): str(sid) for sid, n, h in conn.execute(query) if first.get(h) == sid})
    for name, hashes in by_name.items():
        rest = [h for h in hashes if (name, h) not in made]
        if name and rest:
            made.update({(name, h): sid for h, sid in _first_started(metadata, name, rest).items()})
    return made


def _first_started(metadata: MetadataStore, name: str, hashes: list[str]) -> dict[str, str]:
    """The step run that output each of ``hashes`` under ``name`` and started first (ties by id): the one
    of the name's output links of the hash (the covering versions index) whose step run started at the
    version's first production (``artifact_versions.first_at``), by its key; no sort of the links."""
    v, link, r = s.artifact_versions, s.step_run_artifacts, s.step_runs
    links = and_(
        link.c.artifact_name == v.c.artifact_name, link.c.role == "output", link.c.content_hash == v.c.content_hash
    )
    started = and_(r.c.id == link.c.step_run_id, r.c.started_at == v.c.first_at)
    query = select(link.c.content_hash, func.min(link.c.step_run_id)).select_from(v.join(link, links).join(r, started))
    out: dict[str, str] = {}
    with metadata.engine.connect() as conn:
        for i in range(0, len(hashes), 500):
            found = query.where(v.c.artifact_name == name, v.c.content_hash.in_(hashes[i : i + 500]))
            out.update({str(h): str(sid) for h, sid in conn.execute(found.group_by(link.c.content_hash))})
    return out


def producer_under(metadata: MetadataStore, name: str, content_hash: str, projects: Projects = None) -> str | None:
    """The producer of ``content_hash`` as a version of ``name`` (:func:`producers_under`), else (never
    output under ``name``: a forced alias target) its first producer, as ``projects`` may see it."""
    producer = producers_under(metadata, name, [content_hash]).get(content_hash)
    if producer is None:
        a = s.artifacts
        with metadata.engine.connect() as conn:
            producer = conn.execute(select(a.c.producer_step_run_id).where(a.c.content_hash == content_hash)).scalar()
    return _shown_producers(metadata, [producer], projects).get(producer)


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


def alias_target(metadata: MetadataStore, name: str, alias: str, project: str) -> str | None:
    """The hash ``name@alias`` of ``project`` points at now, or None (by the primary key)."""
    al = s.artifact_aliases
    query = select(al.c.content_hash).where(al.c.project == project, al.c.name == name, al.c.alias == alias)
    with metadata.engine.connect() as conn:
        found = conn.execute(query).scalar()
    return str(found) if found is not None else None


def _hashes_with_prefix(
    metadata: MetadataStore, needle: str, projects: Projects = None, *, deleted: bool = False
) -> list[str]:
    """Up to two content hashes starting with ``needle`` of the stored artifacts — or, with ``deleted``,
    of those only step runs still name (their artifact deleted by gc)."""
    col = s.step_run_artifacts.c.content_hash if deleted else s.artifacts.c.content_hash
    if metadata.dialect == "sqlite":  # a key range: SQLite's LIKE does not use the index
        upper = needle[:-1] + chr(ord(needle[-1]) + 1)
        cond = and_(col >= needle, col < upper)
    else:
        cond = col.startswith(needle, autoescape=True)
    if projects is not None:
        cond = and_(cond, hash_in(col, projects))
    query = select(col).where(cond).distinct().limit(2)
    with metadata.engine.connect() as conn:
        return [str(x) for x in conn.execute(query).scalars()]


def hashes_starting(metadata: MetadataStore, needle: str, projects: Projects = None) -> list[str]:
    """Up to two content hashes starting with ``needle`` (``blake3:…``): of stored artifacts, else of
    artifacts only step runs still name (deleted by gc; their lineage stands)."""
    return _hashes_with_prefix(metadata, needle, projects) or _hashes_with_prefix(
        metadata, needle, projects, deleted=True
    )


def name_hint(metadata: MetadataStore, name: str, projects: Projects = None) -> str:
    """`` (did you mean 'make.output'?)`` when ``name`` is a step or an output name alone, else ``""``."""
    if "." in name:
        return ""
    link = s.step_run_artifacts
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
        similar = [str(x) for x in conn.execute(_scoped(query, projects, link.c.content_hash)).scalars()]
    return f" (did you mean {', '.join(repr(x) for x in similar)}?)" if similar else ""


def _unknown_name(metadata: MetadataStore, name: str, projects: Projects = None) -> RunNotFound:
    return RunNotFound(
        f"no artifact named {quoted(name)}{name_hint(metadata, name, projects)}; names are STEP.OUTPUT "
        "(e.g. train.output), see 'isthmus artifacts list'"
    )


def resolve_artifact(
    metadata: MetadataStore,
    ref: str,
    *,
    numbered: bool = True,
    project: str | None = None,
    projects: Projects = None,
) -> ResolvedArtifact:
    """The artifact version ``ref`` names (see the module docstring for the forms). ``numbered=False``
    leaves the version number out (no count of the name's stored versions) for callers that only need
    the hash. ``project``: whose ``NAME@ALIAS`` (None: ``ISTHMUS_PROJECT``, else ``default``);
    ``projects``: the versions that may be named (None: all)."""
    found = _locate(metadata, ref, project, projects, numbered=numbered)
    return _record(
        metadata,
        found.ref,
        found.content_hash,
        found.name,
        version=found.version,
        what=found.what,
        numbered=numbered,
        projects=projects,
    )


def resolve_artifact_hash(
    metadata: MetadataStore, ref: str, *, project: str | None = None, projects: Projects = None
) -> str:
    """The content hash ``ref`` names, as :func:`resolve_artifact` finds it, also when that version's row
    and object were deleted (its step runs still record it: lineage stands)."""
    return _locate(metadata, ref, project, projects, numbered=False).content_hash


def resolve_artifact_name(
    metadata: MetadataStore, ref: str, *, project: str | None = None, projects: Projects = None
) -> tuple[str, str | None]:
    """The content hash ``ref`` names, as :func:`resolve_artifact_hash` finds it, and the name ``ref`` named
    it by (None for a hash or a prefix of one): a name's version is produced by :func:`producers_under`."""
    found = _locate(metadata, ref, project, projects, numbered=False)
    return found.content_hash, found.name


@dataclass(frozen=True)
class _Located:
    ref: str
    content_hash: str
    name: str | None
    version: VersionStats | None = None
    what: str | None = None


def _locate(
    metadata: MetadataStore, ref: str, project: str | None, projects: Projects, *, numbered: bool = True
) -> _Located:
    ref = str(ref).strip()
    if not ref or len(ref) > _NAME_LIMIT + _ALIAS_LIMIT + 1 or _BAD_TEXT.search(ref):
        raise RunNotFound(f"artifact {quoted(ref)} matches no artifact; see 'isthmus artifacts list'")
    if "@" in ref:
        name, alias = split_alias(ref)
        if alias == LATEST:
            return _nth_version(metadata, ref, name, 0, projects, numbered)
        owner = alias_project(project)
        target = alias_target(metadata, name, alias, owner)
        if target is None:
            flag = "" if owner == alias_project() else f" --project {owner}"
            raise RunNotFound(
                f"no alias {quoted(ref)} in project {owner!r}; set one with "
                f"'isthmus artifacts alias {name}@{alias} VERSION{flag}' (see 'isthmus artifacts aliases{flag}')"
            )
        if projects is not None and not _hashes_with_prefix(metadata, target, projects):
            raise RunNotFound(f"alias {quoted(ref)} of project {owner!r} points at a version you may not see")
        return _Located(ref, target, name, what=f"alias {quoted(ref)} points at {target[:19]}…, which")
    back = _BACK.fullmatch(ref)
    if back:
        return _nth_version(metadata, ref, back.group(1), int(back.group(2)), projects, numbered)
    if _HASH_ID.fullmatch(ref):
        needle = ref.lower() if ref.lower().startswith("blake3:") else f"blake3:{ref.lower()}"
        found = _hashes_with_prefix(metadata, needle, projects)
        if len(found) > 1:
            raise RunNotFound(f"artifact {quoted(ref)} is ambiguous; give more characters of the hash")
        if found:
            return _Located(ref, found[0], None)
        gone = _hashes_with_prefix(metadata, needle, projects, deleted=True)
        if len(gone) == 1:  # step runs still name it: its lineage stands, its bytes and record are gone
            return _Located(ref, gone[0], None, what=f"artifact {quoted(ref)} ({gone[0][:19]}…)")
        if ref.lower().startswith("blake3:") or not count_versions(metadata, ref, projects=projects):
            what = "is ambiguous" if gone else "matches no artifact"
            raise RunNotFound(f"artifact {quoted(ref)} {what}; see 'isthmus artifacts list'")
    return _nth_version(metadata, ref, ref, 0, projects, numbered)


def _nth_version(
    metadata: MetadataStore, ref: str, name: str, back: int, projects: Projects, numbered: bool = True
) -> _Located:
    if not numbered:  # the hash alone: no count of the name's stored versions
        content_hash = _nth_hash(metadata, name, back, projects)
        if content_hash is not None:
            return _Located(ref, content_hash, name)
    found = versions_of(metadata, name, back=back, limit=1, projects=projects)
    if not found:
        total = count_versions(metadata, name, projects=projects)
        if not total:
            raise _unknown_name(metadata, name, projects)
        kept = count_versions(metadata, name, projects=projects, stored=True)
        if not kept:
            raise RunNotFound(
                f"{quoted(ref)}: every version of {name} ({total}) was deleted from this store (gc); "
                "its step runs still name the hashes: see 'isthmus runs show RUN'"
            )
        gone = f" ({total - kept} more deleted by gc)" if total > kept else ""
        ids = f"{name}~0 … {name}~{kept - 1}" if kept > 1 else f"only {name}~0"
        raise RunNotFound(
            f"{quoted(ref)}: {name} has {kept} version(s) in this store{gone}, so {ids}; "
            f"see 'isthmus artifacts list --name {name}'"
        )
    return _Located(ref, found[0].content_hash, name, version=found[0])


def _record(
    metadata: MetadataStore,
    ref: str,
    content_hash: str,
    name: str | None,
    *,
    version: VersionStats | None = None,
    what: str | None = None,
    numbered: bool = True,
    projects: Projects = None,
) -> ResolvedArtifact:
    a = s.artifacts
    with metadata.engine.connect() as conn:
        row = conn.execute(select(a).where(a.c.content_hash == content_hash)).mappings().first()
    if row is None:
        raise RunNotFound(
            f"{what or f'artifact {quoted(ref)} ({content_hash[:19]}…)'} was deleted from this store (gc); "
            f"its step runs still name it: 'isthmus lineage {content_hash}' shows where it came from and went"
        )
    producer = row["producer_step_run_id"]  # the bytes' first producer: what a hash names
    made = _names_by(metadata, content_hash, producer)
    names = list(made)
    if name in made and not made[name]:  # the id named a name its bytes' first producer did not output
        producer = _first_started(metadata, name, [content_hash]).get(content_hash, producer)
    if name is None and len(names) == 1:
        name = names[0]
    if version is None and numbered and name is not None and name in names:
        version = next(iter(versions_of(metadata, name, content_hash=content_hash, projects=projects)), None)
    return ResolvedArtifact(
        id=ref,
        content_hash=content_hash,
        name=name,
        number=version.number if version else None,
        versions=version.total if version else None,
        uri=row["uri"],
        size=row["size"],
        materializer=row["materializer"],
        python_type=row["python_type"],
        metadata=row["metadata"],
        created_at=row["created_at"],
        producer_step_run_id=_shown_producers(metadata, [producer], projects).get(producer),
        names=names,
        deleted_versions=version.deleted if version else None,
    )


def _shown_producers(metadata: MetadataStore, ids: list[Any], projects: Projects) -> dict[Any, Any]:
    """Each producer step run id as it may be shown: None when its step run is out of ``projects`` (a scope)."""
    if not limited(projects):
        return {i: i for i in ids}
    known = [str(i) for i in ids if i]
    seen = visible_step_runs(metadata, known, projects) if known else set()
    return {i: i if i and str(i) in seen else None for i in ids}


def list_versions(
    metadata: MetadataStore,
    name: str | None = None,
    limit: int = 50,
    *,
    projects: Projects = None,
    alias_projects: frozenset[str] | None = None,
    home: str | None = None,
) -> list[dict[str, Any]]:
    """One row per artifact version (name, hash), newest first, with its record, its version number
    (``name~N`` form too, with ``name``), its producer under that name (:func:`producers_under`) and
    ``used_by``: how many step runs took or produced it as that version (:func:`_uses`).

    ``projects``: only versions visible there (and step runs there counted). ``aliases`` lists the aliases
    of ``alias_projects`` (None: every project) pointing at a version: an alias of ``home`` (the caller's
    project) as ``ALIAS``, another project's as ``ALIAS (PROJECT)``."""
    a, al = s.artifacts, s.artifact_aliases
    home = alias_project(home)
    pairs: list[tuple[str, str, VersionStats | None, int | None]] = []
    if name is not None:
        for offset, v in enumerate(versions_of(metadata, name, limit=max(limit, 0), projects=projects)):
            pairs.append((name, v.content_hash, v, offset))
    else:
        # the newest stored contents (by the created_at index), under each name they were produced as;
        # a row's id is its hash (NAME~N would need the numbering of each name: --name shows it)
        newest_query = select(a.c.content_hash).order_by(a.c.created_at.desc(), a.c.content_hash.desc()).limit(limit)
        if projects is not None:  # the newest visible: the created_at index, each checked by its links
            newest_query = newest_query.where(hash_in(a.c.content_hash, projects))
        with metadata.engine.connect() as conn:
            newest = conn.execute(newest_query).scalars()
            for content_hash in list(newest):  # by the created_at index, then the content-hash index
                for n in names_of(metadata, content_hash) or [""]:
                    pairs.append((n, content_hash, None, None))
        pairs = pairs[:limit]
    by_name: dict[str, list[str]] = {}
    for n, h, _, _ in pairs:
        by_name.setdefault(n, []).append(h)
    times: dict[tuple[str, str], tuple[dt.datetime, dt.datetime]] = {}
    if name is None:  # (with --name, versions_of gave them)
        times = {(n, h): t for n, hs in by_name.items() if n for h, t in _produced(metadata, n, hs).items()}
    used = {(n, h): c for n, hs in by_name.items() for h, c in _uses(metadata, n, hs, projects).items()}
    hashes = sorted({h for _, h, _, _ in pairs})
    records: dict[str, dict[str, Any]] = {}
    aliases: dict[tuple[str, str], list[str]] = {}
    with metadata.engine.connect() as conn:
        for i in range(0, len(hashes), 500):
            chunk = hashes[i : i + 500]
            for row in conn.execute(select(a).where(a.c.content_hash.in_(chunk))).mappings():
                records[row["content_hash"]] = dict(row)
            alias_query = select(al.c.project, al.c.name, al.c.alias, al.c.content_hash).where(
                al.c.content_hash.in_(chunk)
            )
            if alias_projects is not None:
                alias_query = alias_query.where(al.c.project.in_(sorted(alias_projects)))
            for owner, n, label, h in conn.execute(alias_query):
                aliases.setdefault((n, h), []).append(label if owner == home else f"{label} ({owner})")
    first = {h: r["producer_step_run_id"] for h, r in records.items()}  # the bytes' first producers
    made = _producers(metadata, by_name, first)  # each version's, under its name
    producers = _shown_producers(metadata, list({*first.values(), *made.values()}), projects)
    rows = []
    for n, h, stats, back in pairs:
        record = records.get(h)
        if record is None:  # deleted meanwhile
            continue
        record = {**record, "producer_step_run_id": producers.get(made.get((n, h), first[h]))}
        rows.append(
            {
                "name": n or None,
                # (numbered with ``name`` only: a number needs a count of the name's versions, an id not)
                "version": stats.number if stats else None,
                "id": (f"{n}~{back}" if back else n) if back is not None else h.split(":", 1)[1][:_ID_HEX],
                **record,
                "first_produced": stats.first_produced if stats else times.get((n, h), (record["created_at"],))[0],
                "last_produced": stats.last_produced if stats else times.get((n, h), (None, None))[1],
                "used_by": used.get((n, h), 0),
                "aliases": sorted(aliases.get((n, h), [])),
            }
        )
    return rows


def _uses(metadata: MetadataStore, name: str, hashes: list[str], projects: Projects) -> dict[str, int]:
    """How many step runs used each of ``hashes`` as a version of ``name``: took it as an input (an input
    link names no upstream name: every consumer of the bytes counts) or output it under ``name`` (computed
    or a cache hit), not one that output the same bytes only under another name; for ``name`` "" (bytes
    produced under no name), every step run linked to it. Of ``projects`` only. By the content-hash index."""
    link = s.step_run_artifacts
    count = func.count(distinct(link.c.step_run_id))
    out: dict[str, int] = {}
    with metadata.engine.connect() as conn:
        for i in range(0, len(hashes), 500):
            query = select(link.c.content_hash, count).where(link.c.content_hash.in_(hashes[i : i + 500]))
            if name:
                query = query.where(
                    or_(link.c.role == "input", and_(link.c.role == "output", link.c.artifact_name == name))
                )
            if projects is not None:
                query = query.where(step_run_in(link.c.step_run_id, projects))
            out.update({str(h): int(c) for h, c in conn.execute(query.group_by(link.c.content_hash)).all()})
    return out
