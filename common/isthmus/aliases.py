"""Promote and roll back: ``name@alias`` moves, and every move is kept.

Each change of an alias is a row of ``artifact_alias_history``: from, to, who (the OS user), when, where
(host, and ``via``: "cli", "api" or an orchestrator), why (``reason``), and whether it was forced.

- :func:`promote` points an alias at a version of its name; a version that was never produced under the
  name (``train.output@production`` at ``ingest``'s DataFrame) is refused unless ``force``.
- :func:`rollback` moves an alias back to its previous target. The history is read as a stack: a promote
  pushes its target, a rollback pops back to its own, so rolling back twice goes two targets back.
  ``to=`` picks the target instead: a version of the name, or any target the alias ever had (a forced one
  included, also after a rollback stepped off it) — the history is its own permission.

An alias belongs to a project: ``train.output@production`` of ``team-a`` and of ``team-b`` are two aliases
that never move each other. The project is ``project=``, else ``ISTHMUS_PROJECT``, else ``default``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select

from isthmus.artifact_ids import (
    LATEST,
    ResolvedArtifact,
    alias_target,
    is_version_of,
    producer_under,
    resolve_artifact,
    split_alias,
)
from isthmus.errors import IsthmusError, quoted
from isthmus.governance.projects import alias_project
from isthmus.governance.scope import Projects
from isthmus.redaction import redact_text
from isthmus.store import schema as s
from isthmus.store.metadata import MetadataStore

SET, ROLLBACK = "set", "rollback"
_REASON_LIMIT = 1000


class AliasRefused(IsthmusError, ValueError):
    """An alias change that would be wrong: a version of another name, nothing to roll back to."""


@dataclass(frozen=True)
class AliasChange:
    """One change of ``name@alias``."""

    id: int
    project: str
    name: str
    alias: str
    action: str  # "set" or "rollback"
    from_hash: str | None
    to_hash: str
    forced: bool
    user: str | None
    host: str | None
    via: str
    reason: str | None
    changed_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers): the environment's word, if any
        return os.environ.get("USER")


def _clean_reason(reason: str | None) -> str | None:
    if reason is None or not reason.strip():
        return None
    text = redact_text(" ".join(reason.split()))
    return text if len(text) <= _REASON_LIMIT else text[:_REASON_LIMIT] + "…"


def _parse(alias_ref: str) -> tuple[str, str]:
    name, alias = split_alias(alias_ref)
    if alias == LATEST:
        raise AliasRefused(f"{quoted(alias_ref)}: '@latest' always means the newest version; choose another alias")
    return name, alias


def alias_history(metadata: MetadataStore, alias_ref: str, project: str | None = None) -> list[AliasChange]:
    """Every change of ``name@alias`` in ``project``, oldest first."""
    name, alias = split_alias(alias_ref)
    owner = alias_project(project)
    h = s.artifact_alias_history
    query = select(h).where(h.c.project == owner, h.c.name == name, h.c.alias == alias).order_by(h.c.id)
    with metadata.engine.connect() as conn:
        return [AliasChange(**dict(row)) for row in conn.execute(query).mappings()]


def target_stack(history: list[AliasChange]) -> list[str]:
    """The targets an alias can be rolled back through, oldest first; the last is the current one."""
    stack: list[str] = []
    for change in history:
        if change.action == ROLLBACK and change.to_hash in stack[:-1]:
            stack.pop()
            while stack[-1] != change.to_hash:
                stack.pop()
        else:
            stack.append(change.to_hash)
    return stack


def promote(
    metadata: MetadataStore,
    alias_ref: str,
    version: str,
    *,
    reason: str | None = None,
    force: bool = False,
    via: str = "api",
    project: str | None = None,
    projects: Projects = None,
) -> AliasChange | None:
    """Point ``name@alias`` of ``project`` at ``version`` (any artifact id; among the versions visible in
    ``projects``, None: all); None if it points there already."""
    name, alias = _parse(alias_ref)
    owner = alias_project(project)
    target = resolve_artifact(metadata, version, numbered=False, project=owner, projects=projects)
    if not force:
        _check_version_of(metadata, name, alias, target, version)
    current = alias_target(metadata, name, alias, owner)
    if current == target.content_hash:
        return None
    return _write(
        metadata, owner, name, alias, target, current, SET, reason=reason, force=force, via=via, projects=projects
    )


def rollback(
    metadata: MetadataStore,
    alias_ref: str,
    to: str | None = None,
    *,
    reason: str | None = None,
    via: str = "api",
    project: str | None = None,
    projects: Projects = None,
) -> AliasChange:
    """Move ``name@alias`` of ``project`` back to its previous target, or to ``to`` (a version of the
    name, or any earlier target of the alias)."""
    name, alias = _parse(alias_ref)
    owner = alias_project(project)
    history = alias_history(metadata, alias_ref, owner)
    current = alias_target(metadata, name, alias, owner)
    if current is None:
        flag = "" if owner == alias_project() else f" --project {owner}"
        raise AliasRefused(
            f"there is no alias {name}@{alias} to roll back in project {owner!r}; set it with "
            f"'isthmus artifacts alias {name}@{alias} VERSION{flag}'"
        )
    stack = target_stack(history)
    if not stack or stack[-1] != current:  # changed by something that kept no history
        stack.append(current)
    if to is None:
        if len(stack) < 2:
            raise AliasRefused(
                f"{name}@{alias} has no previous target to roll back to (it points at {current[:19]}… and "
                f"has {len(history)} recorded change(s)); see 'isthmus artifacts history {name}@{alias}'"
            )
        target = resolve_artifact(metadata, stack[-2], numbered=False, projects=projects)
    else:
        target = resolve_artifact(metadata, to, numbered=False, project=owner, projects=projects)
        earlier = {current, *(c.to_hash for c in history), *(c.from_hash for c in history if c.from_hash)}
        if target.content_hash not in earlier and not is_version_of(metadata, name, target.content_hash):
            raise AliasRefused(
                f"refusing to roll {name}@{alias} back to {quoted(to)} ({target.content_hash[:19]}…, "
                f"{_names(target)}): it is not a version of {name} nor an earlier target of {name}@{alias}; "
                f"list those with 'isthmus artifacts list --name {name}' and 'isthmus artifacts history "
                f"{name}@{alias}' (to point it there anyway: 'isthmus artifacts alias {name}@{alias} VERSION --force')"
            )
        if target.content_hash == current:
            raise AliasRefused(f"{name}@{alias} already points at {current[:19]}… ({quoted(to)})")
    return _write(
        metadata, owner, name, alias, target, current, ROLLBACK, reason=reason, force=False, via=via, projects=projects
    )


def _names(target: ResolvedArtifact) -> str:
    return f"a version of {', '.join(target.names)}" if target.names else "produced under no name"


def _check_version_of(metadata: MetadataStore, name: str, alias: str, target: ResolvedArtifact, given: str) -> None:
    if is_version_of(metadata, name, target.content_hash):
        return
    raise AliasRefused(
        f"refusing to point {name}@{alias} at {quoted(given)} ({target.content_hash[:19]}…, {_names(target)}): it is not a "
        f"version of {name}; list those with 'isthmus artifacts list --name {name}', or pass --force"
    )


def _write(
    metadata: MetadataStore,
    project: str,
    name: str,
    alias: str,
    target: ResolvedArtifact,
    current: str | None,
    action: str,
    *,
    reason: str | None,
    force: bool,
    via: str,
    projects: Projects,
) -> AliasChange:
    change = {
        "action": action,
        "forced": bool(force),
        "user": _user(),
        "host": socket.gethostname(),
        "via": str(via)[:32],
        "reason": _clean_reason(reason),
    }
    # the step run that made the target a version of this name (not the bytes' first producer elsewhere)
    producer = producer_under(metadata, name, target.content_hash, projects)
    metadata.set_alias(name, alias, target.content_hash, producer, change=change, expect_from=current, project=project)
    return alias_history(metadata, f"{name}@{alias}", project)[-1]
