"""The audit log: every mutating action (alias changes, rollbacks, cache clear/prune, invalidation, gc,
rerun, token and role changes) with who, when, from where and what. isthmus only appends to it (the
store's triggers refuse UPDATE and DELETE).

Who is asking comes from :func:`acting_as` (the web UI sets it per request); outside it, the OS user
through ``via`` (``cli`` for the command line, ``api`` for Python code).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from isthmus.governance.projects import configured_project
from isthmus.governance.roles import Role, os_user, require_cli_role
from isthmus.redaction import redact_text, safe_params
from isthmus.store import schema as s

if TYPE_CHECKING:
    from isthmus.store.metadata import MetadataStore


@dataclass(frozen=True)
class Actor:
    """Who acts: a name, their role (if known), how (``cli``, ``api``, ``ui``, ``airflow``), from where."""

    name: str
    via: str
    origin: str | None = None
    role: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    role: str | None
    via: str
    origin: str | None
    action: str
    target: str | None
    project: str | None
    details: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("isthmus_actor", default=None)
_default_via = "api"


def set_default_via(via: str) -> None:
    """How actions outside :func:`acting_as` came (the command line sets ``cli``)."""
    global _default_via
    _default_via = via


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> Actor:
    return _actor.get() or Actor(name=os_user(), via=_default_via, origin=socket.gethostname())


def record(
    metadata: MetadataStore,
    action: str,
    target: str | None = None,
    *,
    project: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one entry for ``action`` on ``target`` by the current actor (details redacted)."""
    who = current_actor()
    row = {
        "at": dt.datetime.now(dt.UTC),
        "actor": who.name[:255],
        "role": who.role,
        "via": who.via[:32],
        "origin": (who.origin or "")[:255] or None,
        "action": action[:64],
        "target": redact_text(target)[:2000] if target else None,
        "project": project,
        "details": safe_params(details) if details else None,
    }
    metadata._run_write(lambda conn: conn.execute(insert(s.audit_log).values(**row)))


def entries(
    metadata: MetadataStore, *, limit: int = 100, action: str | None = None, project: str | None = None
) -> list[AuditEntry]:
    """The newest entries first."""
    a = s.audit_log
    query = select(a).order_by(a.c.id.desc()).limit(max(1, min(limit, 10_000)))
    if action:
        query = query.where(a.c.action == action)
    if project:
        query = query.where(a.c.project == project)
    with metadata.engine.connect() as conn:
        return [AuditEntry(**dict(row)) for row in conn.execute(query).mappings()]


def authorize(metadata: MetadataStore, needed: Role, action: str, project: str | None = None) -> None:
    """Let the current actor do ``action``: inside :func:`acting_as` the caller (the web UI) checked the
    role already; outside it, the OS user needs ``needed`` once the store has grants (:mod:`.roles`)."""
    if _actor.get() is not None:
        return
    require_cli_role(metadata, needed, project or configured_project(), action)
