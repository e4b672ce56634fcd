"""Roles (viewer < operator < admin), principals, role grants and the CLI's role check.

A store with no grant is a single-person store: whoever runs the CLI may do anything. Once an admin
grants a role (``isthmus roles grant``), CLI mutations check the OS user's role in the project.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select

from isthmus.errors import IsthmusError
from isthmus.governance.scope import Projects, RunScope, run_visible
from isthmus.store import schema as s

if TYPE_CHECKING:
    from isthmus.store.metadata import MetadataStore

ALL_PROJECTS = "*"


class PermissionDenied(IsthmusError, PermissionError):
    """The caller's role does not allow the action."""


class Role(IntEnum):
    """viewer: read; operator: also promote, roll back, rerun, invalidate, clear the cache; admin: also
    roles, tokens and gc."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[str(text).strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {str(text)[:40]!r}; use viewer, operator or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``via``: how it came (``local``, ``token``, ``airflow``); ``bearer``: with a
    bearer token (no CSRF check); ``projects``: the projects it may see, None for every project.

    An Airflow user allowed to read only some DAGs has ``dags`` (those DAG ids: it sees only the runs
    Airflow recorded for them) and ``edit_dags`` (of those, the ones it may edit: its ``role`` is operator
    only for actions on their runs; an action on a whole project needs ``dags`` None). ``dag_check``
    answers whether it may read one DAG (Airflow's auth manager; default: by ``dags``)."""

    name: str
    role: Role
    via: str = "local"
    bearer: bool = False
    projects: frozenset[str] | None = None
    dags: frozenset[str] | None = None
    edit_dags: frozenset[str] | None = None
    dag_check: Callable[[str], bool] | None = field(default=None, compare=False, repr=False)

    def may_see(self, project: str | None) -> bool:
        return self.projects is None or (project or "default") in self.projects

    @property
    def scope(self) -> Projects:
        """The runs it sees, as the ``projects=`` argument of :class:`isthmus.Client` reads take it."""
        return self.projects if self.dags is None else RunScope(self.projects, self.dags)

    def sees_run(self, run: Mapping[str, Any]) -> bool:
        """Whether it may see the pipeline run ``run`` (a record)."""
        return run_visible(run, self.scope)

    def may_read_dag(self, dag_id: str) -> bool:
        if self.dag_check is not None:
            return bool(self.dag_check(dag_id))
        return self.dags is None or dag_id in self.dags

    def role_for_dag(self, dag_id: str) -> Role | None:
        """Its role for an action on a run of ``dag_id`` (None: it may not read that DAG)."""
        if self.dags is None:
            return self.role
        if dag_id not in self.dags:
            return None
        return Role.OPERATOR if self.edit_dags and dag_id in self.edit_dags else Role.VIEWER


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return os.environ.get("USER") or "unknown"


def grant(metadata: MetadataStore, principal: str, role: Role, project: str = ALL_PROJECTS, *, by: str) -> None:
    """Give ``principal`` ``role`` in ``project`` (replacing an earlier grant there)."""
    g = s.role_grants
    row: dict[str, Any] = {
        "principal": principal,
        "project": project,
        "role": role.label,
        "granted_by": by,
        "granted_at": dt.datetime.now(dt.UTC),
    }

    def work(conn: Any) -> None:
        conn.execute(delete(g).where(g.c.principal == principal, g.c.project == project))
        conn.execute(insert(g).values(**row))

    metadata._run_write(work)


def grants(metadata: MetadataStore) -> list[dict[str, Any]]:
    with metadata.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(s.role_grants).order_by(s.role_grants.c.principal)).mappings()]


def role_of(metadata: MetadataStore, principal: str, project: str | None) -> Role | None:
    """``principal``'s role in ``project`` (its grant there, else its grant in every project)."""
    g = s.role_grants
    with metadata.engine.connect() as conn:
        rows = dict(
            conn.execute(
                select(g.c.project, g.c.role).where(
                    g.c.principal == principal, g.c.project.in_([project or "default", ALL_PROJECTS])
                )
            ).all()
        )
    found = rows.get(project or "default") or rows.get(ALL_PROJECTS)
    return Role.parse(found) if found else None


def any_grant(metadata: MetadataStore) -> bool:
    with metadata.engine.connect() as conn:
        return conn.execute(select(s.role_grants.c.principal).limit(1)).first() is not None


def require_cli_role(metadata: MetadataStore, needed: Role, project: str | None, action: str) -> str:
    """The OS user, if the store lets it do ``action`` (no grant at all: a one-person store); else
    :class:`PermissionDenied` naming the role, the project and who can grant it."""
    user = os_user()
    if not any_grant(metadata):
        return user
    have = role_of(metadata, user, project)
    if have is None or have < needed:
        held = have.label if have else "no role"
        raise PermissionDenied(
            f"{action}: {user} has {held} in project {project or 'default'!r}, {needed.label} is needed; "
            f"an admin grants it with 'isthmus roles grant {user} {needed.label} --project {project or 'default'}'"
        )
    return user
