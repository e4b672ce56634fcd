"""What a caller limited to some projects, or to some Airflow DAGs, may see of records that are not a
run's own.

A scope (:class:`RunScope`, or a set of project names for short) names the pipeline runs a caller sees:
those of its projects and, when it has ``dags``, of those only the runs Airflow recorded for one of these
DAG ids (orchestrator ``airflow``, ``context.dag_id``). A step run is in scope when its pipeline run is;
a step run without one is in ``default`` and of no DAG. An artifact version is content-addressed, so one
hash can be in two projects: it is in the projects of the step runs that produced or consumed it
(``step_run_artifacts`` → ``step_runs`` → ``pipeline_runs.project``; a run recorded without a project is
in ``default``). A scope of None means every run: no condition at all. Every condition here is an index
walk from a content hash (``ix_step_run_artifacts_content_hash``) or a step run id (primary keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, or_, select, true

from isthmus.governance.projects import DEFAULT
from isthmus.store import schema as s

if TYPE_CHECKING:
    from isthmus.store.metadata import MetadataStore

AIRFLOW = "airflow"  # the orchestrator name of the pipeline runs the Airflow provider records


@dataclass(frozen=True)
class RunScope:
    """The pipeline runs a caller sees: of ``projects`` (None: every project) and, with ``dags``, only
    those Airflow recorded for one of these DAG ids (None: every run, whoever recorded it)."""

    projects: frozenset[str] | None = None
    dags: frozenset[str] | None = None


Projects = RunScope | frozenset[str] | None  # a set: those projects; None: every run


def parts(scope: Projects) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """``(projects, dags)`` of ``scope`` (None: not limited that way)."""
    if isinstance(scope, RunScope):
        return scope.projects, scope.dags
    return scope, None


def project_part(scope: Projects) -> frozenset[str] | None:
    """The projects of ``scope`` (None: every project), what aliases (kept per project) are filtered by."""
    return parts(scope)[0]


def limited(scope: Projects) -> bool:
    """Whether ``scope`` hides anything at all."""
    projects, dags = parts(scope)
    return projects is not None or dags is not None


def dag_of(run: Mapping[str, Any]) -> str | None:
    """The Airflow DAG id a pipeline run (a record) was recorded for; None for another orchestrator's."""
    if run.get("orchestrator") != AIRFLOW:
        return None
    dag_id = (run.get("context") or {}).get("dag_id")
    return str(dag_id) if dag_id is not None else None


def run_visible(run: Mapping[str, Any], scope: Projects) -> bool:
    """Whether the pipeline run ``run`` (a record) is in ``scope``."""
    projects, dags = parts(scope)
    if projects is not None and str(run.get("project") or DEFAULT) not in projects:
        return False
    return dags is None or dag_of(run) in dags


def run_in(scope: Projects) -> Any:
    """The condition "``pipeline_runs`` row (possibly outer-joined away: then in ``default``, of no DAG)
    is in ``scope``"."""
    p = s.pipeline_runs
    projects, dags = parts(scope)
    conds = []
    if projects is not None:
        cond = p.c.project.in_(sorted(projects))
        conds.append(or_(cond, p.c.project.is_(None)) if DEFAULT in projects else cond)
    if dags is not None:
        conds.append(and_(p.c.orchestrator == AIRFLOW, p.c.context["dag_id"].as_string().in_(sorted(dags))))
    return and_(*conds) if conds else true()


def _runs() -> Any:
    r, p = s.step_runs, s.pipeline_runs
    return r.outerjoin(p, p.c.id == r.c.pipeline_run_id)


def step_run_in(step_run_id: Any, projects: Projects) -> Any:
    """The condition "the step run ``step_run_id`` (a column) is in ``projects`` (a scope)"."""
    return exists(select(1).select_from(_runs()).where(s.step_runs.c.id == step_run_id, run_in(projects)))


def hash_in(content_hash: Any, projects: Projects) -> Any:
    """The condition "some step run in ``projects`` (a scope) produced or consumed ``content_hash`` (a
    column)"."""
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
    if not limited(projects):
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


def visible_step_runs(metadata: MetadataStore, step_run_ids: Sequence[str], scope: Projects) -> set[str]:
    """Those of these step runs that are in ``scope`` (recorded ones only)."""
    r = s.step_runs
    ids = sorted({str(i) for i in step_run_ids})
    found: set[str] = set()
    with metadata.engine.connect() as conn:
        for i in range(0, len(ids), 500):
            query = select(r.c.id).select_from(_runs()).where(r.c.id.in_(ids[i : i + 500]))
            if limited(scope):
                query = query.where(run_in(scope))
            found.update(str(x) for x in conn.execute(query).scalars())
    return found
