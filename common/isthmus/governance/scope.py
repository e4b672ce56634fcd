"""What a caller limited to some projects may see of records that are not a run's own.

An artifact version is content-addressed, so one hash can be in two projects: it is in the projects of the
step runs that produced or consumed it (``step_run_artifacts`` → ``step_runs`` → ``pipeline_runs.project``;
a run recorded without a project, or a step run without a pipeline run, is in ``default``). ``projects``
None everywhere means every project: no condition at all. Every condition here is an index walk from a
content hash (``ix_step_run_artifacts_content_hash``) or a step run id (primary keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, or_, select

from isthmus.governance.projects import DEFAULT
from isthmus.store import schema as s

if TYPE_CHECKING:
    from isthmus.store.metadata import MetadataStore

Projects = frozenset[str] | None  # None: every project


def run_in(projects: frozenset[str]) -> Any:
    """The condition "``pipeline_runs`` row (possibly outer-joined away) is in ``projects``"."""
    p = s.pipeline_runs
    cond = p.c.project.in_(sorted(projects))
    return or_(cond, p.c.project.is_(None)) if DEFAULT in projects else cond


def _runs() -> Any:
    r, p = s.step_runs, s.pipeline_runs
    return r.outerjoin(p, p.c.id == r.c.pipeline_run_id)


def step_run_in(step_run_id: Any, projects: frozenset[str]) -> Any:
    """The condition "the step run ``step_run_id`` (a column) is in ``projects``"."""
    return exists(select(1).select_from(_runs()).where(s.step_runs.c.id == step_run_id, run_in(projects)))


def hash_in(content_hash: Any, projects: frozenset[str]) -> Any:
    """The condition "some step run in ``projects`` produced or consumed ``content_hash`` (a column)"."""
    link, r = s.step_run_artifacts.alias("used"), s.step_runs  # its own name: never correlated to a caller's
    return exists(
        select(1)
        .select_from(link.join(r, r.c.id == link.c.step_run_id).outerjoin(s.pipeline_runs, _on_run()))
        .where(link.c.content_hash == content_hash, run_in(projects))
    )


def _on_run() -> Any:
    return s.pipeline_runs.c.id == s.step_runs.c.pipeline_run_id


def visible_hashes(metadata: MetadataStore, hashes: Iterable[str], projects: Projects) -> set[str]:
    """Those of ``hashes`` some step run in ``projects`` produced or consumed."""
    wanted = sorted(set(hashes))
    if projects is None:
        return set(wanted)
    link, r = s.step_run_artifacts, s.step_runs
    found: set[str] = set()
    with metadata.engine.connect() as conn:
        for i in range(0, len(wanted), 500):
            query = (
                select(link.c.content_hash)
                .distinct()
                .select_from(link.join(r, r.c.id == link.c.step_run_id).outerjoin(s.pipeline_runs, _on_run()))
                .where(link.c.content_hash.in_(wanted[i : i + 500]), run_in(projects))
            )
            found.update(str(h) for h in conn.execute(query).scalars())
    return found


def step_run_projects(metadata: MetadataStore, step_run_ids: Sequence[str]) -> dict[str, str]:
    """The project of each of these step runs (its pipeline run's; ``default`` without one)."""
    r, p = s.step_runs, s.pipeline_runs
    out: dict[str, str] = {}
    ids = sorted(set(step_run_ids))
    with metadata.engine.connect() as conn:
        for i in range(0, len(ids), 500):
            query = select(r.c.id, p.c.project).select_from(_runs()).where(r.c.id.in_(ids[i : i + 500]))
            out.update({str(k): str(v or DEFAULT) for k, v in conn.execute(query).all()})
    return out
