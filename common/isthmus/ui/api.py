"""The JSON API (``/api/v1``): the same answers as the pages, for scripts. Reads need a viewer; alias
changes need an operator (a bearer token, or a browser session with its CSRF token).

A principal limited to some projects sees the runs of those projects, the artifact versions their step
runs produced or consumed, their aliases and the nodes of a lineage graph that are theirs; anything else
is answered as absent (404). An alias belongs to a project: ``project`` (query or body) names it.

An Airflow user allowed to read only some DAGs is limited the same way (:attr:`Principal.scope`): it sees
the runs Airflow recorded for those DAGs, their step runs, and the artifact versions, aliases and lineage
nodes of those step runs; changing an alias (an action on a whole project) needs every DAG."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, Field

from isthmus.artifact_ids import LATEST, split_alias
from isthmus.client import Client
from isthmus.errors import ConfigurationError, RunNotFound
from isthmus.governance import audit
from isthmus.governance.projects import check_project
from isthmus.governance.scope import Projects, RunScope, limited, visible_hashes, visible_step_runs
from isthmus.ui import auth
from isthmus.ui.auth import Principal, Role
from isthmus.ui.queries import RunFilters, runs_page

router = APIRouter(tags=["isthmus"])


def viewer(request: Request) -> Principal:
    return auth.require(request, Role.VIEWER)


def operator(request: Request) -> Principal:
    return auth.require(request, Role.OPERATOR)


Viewer = Annotated[Principal, Depends(viewer)]
Operator = Annotated[Principal, Depends(operator)]


def client_of(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


def visible_run(request: Request, who: Principal, ref: str) -> dict[str, Any]:
    """The pipeline run ``ref`` names, if ``who`` may see it (its project, its DAG; else 404, as if absent)."""
    run = dict(client_of(request).run(ref))
    if not who.sees_run(run):
        raise HTTPException(status_code=404, detail=f"no pipeline run matches {ref[:60]!r}")
    return run


def visible_step_run(request: Request, who: Principal, ref: str) -> dict[str, Any]:
    sr = dict(client_of(request).step_run(ref))
    if sr.get("pipeline_run_id"):
        visible_run(request, who, str(sr["pipeline_run_id"]))
    elif not who.sees_run({}):  # a step run without a pipeline run is in "default", of no DAG
        raise HTTPException(status_code=404, detail=f"no step run matches {ref[:60]!r}")
    return shown_steps(request, who, [sr])[0]


def shown_steps(request: Request, who: Principal, steps: list[Any]) -> list[dict[str, Any]]:
    """Step run records as ``who`` may see them: a cache hit's source out of its scope is not named."""
    rows = [dict(sr) for sr in steps]
    sources = {str(sr["source_step_run_id"]) for sr in rows if sr.get("source_step_run_id")}
    if not sources or not limited(who.scope):
        return rows
    seen = visible_step_runs(client_of(request).metadata, sorted(sources), who.scope)
    for sr in rows:
        if sr.get("source_step_run_id") and str(sr["source_step_run_id"]) not in seen:
            sr["source_step_run_id"] = None
    return rows


def shown_diff(request: Request, who: Principal, d: dict[str, Any]) -> dict[str, Any]:
    """A diff of two runs ``who`` sees, with the sources of cache hits out of its scope unnamed."""
    how = [side for sides in d.get("ran", {}).values() for side in sides.values() if side]
    shown = shown_steps(request, who, how)
    for side, row in zip(how, shown, strict=True):
        side["source_step_run_id"] = row["source_step_run_id"]
    return d


def whole_projects(who: Principal, action: str) -> None:
    """403 for a principal limited to some Airflow DAGs: ``action`` concerns a whole project."""
    if who.dags is not None:
        raise HTTPException(
            status_code=403,
            detail=f"{action} concerns a whole project and needs permission on every DAG in Airflow; "
            f"{who.name} may read only some DAGs",
        )


def acting(request: Request, who: Principal) -> Any:
    """The audit context of a change ``who`` asked for through this request."""
    via = who.via if who.via == "airflow" else ("api" if who.bearer else "ui")
    origin = request.client.host if request.client else None
    return audit.acting_as(audit.Actor(name=who.name, via=via, origin=origin, role=who.role.label))


def audit_rows(request: Request, who: Principal, limit: int, action: str | None) -> list[dict[str, Any]]:
    """The newest audit entries ``who`` may see (a principal of some projects: those projects' entries)."""
    client = client_of(request)
    whole_projects(who, "the audit log")
    if who.projects is None:
        return [e.to_dict() for e in client.audit_log(limit=limit, action=action)]
    rows = [e for p in sorted(who.projects) for e in client.audit_log(limit=limit, action=action, project=p)]
    return [e.to_dict() for e in sorted(rows, key=lambda e: e.id, reverse=True)[:limit]]


class AliasChangeRequest(BaseModel):
    """Point ``alias`` (``name@alias``) at ``version`` (promote) or back (rollback; ``version`` optional)."""

    alias: str = Field(max_length=800)
    version: str | None = Field(default=None, max_length=800)
    reason: str | None = Field(default=None, max_length=2000)
    project: str | None = Field(default=None, max_length=255)  # whose alias; see alias_project_for
    csrf_token: str | None = None


@router.get("/me")
def me(who: Viewer) -> dict[str, Any]:
    """Who the caller is and what role it holds."""
    found = {"name": who.name, "role": who.role.label, "via": who.via, "projects": _listed(who.projects)}
    return {**found, "dags": _listed(who.dags), "edit_dags": _listed(who.edit_dags)}


def _listed(names: frozenset[str] | None) -> list[str] | None:
    return sorted(names) if names is not None else None


@router.get("/runs")
def list_runs(
    request: Request,
    who: Viewer,
    pipeline: str | None = None,
    orchestrator: str | None = None,
    status: str | None = None,
    project: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Pipeline runs newest first (keyset-paginated: pass ``next_cursor`` back as ``cursor``)."""
    filters = visible_filters(who, RunFilters(pipeline, orchestrator, status, project))
    page = runs_page(client_of(request).metadata, filters, limit=limit, cursor=cursor, scope=who.scope)
    return jsonable_encoder({"runs": page.runs, "next_cursor": page.next_cursor})


def checked_project(who: Principal, project: str | None) -> str | None:
    """``project`` (a query or body field) if it is a project name ``who`` may see (else 400 or 403)."""
    if project is None or not project.strip():
        return None
    try:
        name = check_project(project, "project")
    except ConfigurationError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    if not who.may_see(name):
        raise HTTPException(status_code=403, detail=f"{who.name} may not see project {name[:60]!r}")
    return name


def scope(who: Principal, project: str | None) -> Projects:
    """The runs whose artifacts ``who`` sees here: of ``project`` alone when chosen, else of all of its own."""
    chosen = checked_project(who, project)
    if chosen is None:
        return who.scope
    return frozenset({chosen}) if who.dags is None else RunScope(frozenset({chosen}), who.dags)


def home_project(who: Principal, project: str | None) -> str | None:
    """The project whose aliases read as plain ``ALIAS``: the chosen one, else a principal's only project."""
    chosen = checked_project(who, project)
    if chosen is None and who.projects is not None and len(who.projects) == 1:
        (chosen,) = who.projects
    return chosen


def alias_project_for(request: Request, who: Principal, alias_ref: str, project: str | None) -> str | None:
    """The project of ``alias_ref`` (``NAME@ALIAS``) ``who`` means: ``project`` if given, else its only
    project, else the one of its projects holding that alias (400 when none or several do). A principal
    of every project without ``project``: None (the server's ``ISTHMUS_PROJECT``, else ``default``)."""
    chosen = home_project(who, project)
    if chosen is not None or who.projects is None:
        return chosen
    name, alias = split_alias(alias_ref)
    holders = sorted(
        {a["project"] for a in client_of(request).aliases(projects=who.scope, name=name) if a["alias"] == alias}
    )
    if len(holders) == 1:
        return str(holders[0])
    found = f"{alias_ref[:60]!r} is an alias of " + ", ".join(holders) if holders else f"no alias {alias_ref[:60]!r}"
    raise HTTPException(
        status_code=400, detail=f"{found}; choose a project: project=" + " or ".join(sorted(who.projects))
    )


def ref_project(request: Request, who: Principal, ref: str, project: str | None) -> str | None:
    """The alias project of an artifact id (only ``NAME@ALIAS`` has one)."""
    if "@" not in ref:
        return checked_project(who, project)
    try:
        _name, alias = split_alias(ref)
    except RunNotFound:
        return checked_project(who, project)
    if alias == LATEST:
        return checked_project(who, project)
    return alias_project_for(request, who, ref, project)


def visible_filters(who: Principal, filters: RunFilters) -> RunFilters:
    """``filters`` narrowed to what ``who`` may see (a principal of one project sees that one)."""
    if who.projects is None:
        return filters
    if filters.project and filters.project not in who.projects:
        raise HTTPException(status_code=403, detail=f"{who.name} may not see project {filters.project[:60]!r}")
    if filters.project is None and len(who.projects) == 1:
        (only,) = who.projects
        return RunFilters(filters.pipeline, filters.orchestrator, filters.status, only)
    if filters.project is None:
        raise HTTPException(status_code=400, detail="choose a project: " + ", ".join(sorted(who.projects)))
    return filters


@router.get("/runs/{ref}")
def get_run(request: Request, who: Viewer, ref: str) -> dict[str, Any]:
    """A pipeline run, its step runs (every attempt) and one line per step run saying why it ran so."""
    run = visible_run(request, who, ref)
    client = client_of(request)
    steps = shown_steps(request, who, client.step_runs(run["id"]))
    return jsonable_encoder({"run": run, "steps": steps, "reasons": client.reasons(run["id"], projects=who.scope)})


@router.get("/step-runs/{ref}")
def get_step_run(request: Request, who: Viewer, ref: str) -> dict[str, Any]:
    """A step run with its explanation ("why") and recorded environment."""
    sr = visible_step_run(request, who, ref)
    client = client_of(request)
    env = client.metadata.get_environment(sr["environment_hash"]) if sr.get("environment_hash") else None
    why = client.explain(sr["id"], projects=who.scope).to_dict()
    return jsonable_encoder({"step_run": sr, "why": why, "environment": env})


@router.get("/diff")
def diff(request: Request, who: Viewer, a: str, b: str) -> dict[str, Any]:
    """What changed between pipeline runs ``a`` and ``b`` and how each step ran."""
    run_a, run_b = visible_run(request, who, a), visible_run(request, who, b)
    return jsonable_encoder(shown_diff(request, who, client_of(request).diff_runs(run_a["id"], run_b["id"])))


@router.get("/artifacts")
def list_artifacts(
    request: Request,
    who: Viewer,
    name: str | None = None,
    project: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Artifact versions, newest first (of ``name``, or of every name); for a principal of some projects
    (or with ``project``) the versions step runs of those projects produced or consumed."""
    versions = client_of(request).artifact_versions(
        name, limit=limit, project=home_project(who, project), projects=scope(who, project)
    )
    return jsonable_encoder({"versions": versions})


@router.get("/artifacts/{ref:path}")
def get_artifact(request: Request, who: Viewer, ref: str, project: str | None = None) -> dict[str, Any]:
    """The artifact version ``ref`` names (hash, prefix, ``name``, ``name@alias`` of ``project``,
    ``name~N``), with the aliases of its name (of the projects ``who`` sees) and their history."""
    client = client_of(request)
    found = client.artifact(ref, project=ref_project(request, who, ref, project), projects=who.scope)
    return jsonable_encoder({"artifact": found.to_dict(), "aliases": aliases_of(client, who, found.name)})


def aliases_of(client: Client, who: Principal, name: str | None) -> list[dict[str, Any]]:
    """The aliases of artifact ``name`` in the projects ``who`` sees, each with its ``project`` and its
    history (oldest change first); for a principal of some DAGs, those pointing at versions it sees, and
    in their history the versions it does not see unnamed (None)."""
    if not name:
        return []
    rows = [
        {
            **row,
            "history": [c.to_dict() for c in client.alias_history(f"{name}@{row['alias']}", project=row["project"])],
        }
        for row in client.aliases(projects=who.scope, name=name)
    ]
    if who.dags is None:
        return rows
    named = {c[k] for row in rows for c in row["history"] for k in ("from_hash", "to_hash") if c[k]}
    seen = visible_hashes(client.metadata, named, who.scope)
    for row in rows:
        for change in row["history"]:
            for key in ("from_hash", "to_hash"):
                if change[key] not in seen:
                    change[key] = None
    return rows


def change_alias(
    request: Request,
    who: Principal,
    action: str,
    alias: str,
    version: str | None,
    reason: str | None,
    project: str | None,
) -> Any:
    """Promote or roll back ``alias`` of the project ``who`` means (see :func:`alias_project_for`), with
    versions among those ``who`` sees; the change is audited under that project."""
    whole_projects(who, f"{action} of an alias")
    owner = alias_project_for(request, who, alias, project)
    client, via = client_of(request), f"ui:{who.name}"[:32]
    with acting(request, who):
        if action == "promote":
            return client.promote(alias, version or "", reason=reason, via=via, project=owner, projects=who.projects)
        return client.rollback(alias, version or None, reason=reason, via=via, project=owner, projects=who.projects)


@router.post("/aliases/promote")
def promote(request: Request, who: Operator, body: AliasChangeRequest) -> dict[str, Any]:
    """Point an alias (of ``project``) at a version (a version of its name)."""
    auth.check_csrf(request, who, body.csrf_token)
    if not body.version:
        raise HTTPException(status_code=422, detail="promote needs a version")
    change = change_alias(request, who, "promote", body.alias, body.version, body.reason, body.project)
    return jsonable_encoder({"changed": change is not None, "change": change.to_dict() if change else None})


@router.post("/aliases/rollback")
def rollback(request: Request, who: Operator, body: AliasChangeRequest) -> dict[str, Any]:
    """Move an alias (of ``project``) back to its previous target (or to ``version``)."""
    auth.check_csrf(request, who, body.csrf_token)
    change = change_alias(request, who, "rollback", body.alias, body.version, body.reason, body.project)
    return jsonable_encoder({"changed": True, "change": change.to_dict()})


@router.get("/lineage")
def get_lineage(
    request: Request,
    who: Viewer,
    target: str,
    direction: Annotated[str, Query(pattern="^(upstream|downstream|both)$")] = "both",
    depth: Annotated[int | None, Query(ge=1, le=50)] = None,
    project: str | None = None,
) -> dict[str, Any]:
    """Where an artifact, step run or pipeline run came from and what it fed; for a principal of some
    projects only their nodes (``hidden`` counts the others)."""
    return jsonable_encoder(visible_lineage(request, who, target, direction, depth, project).to_dict())


def visible_lineage(
    request: Request, who: Principal, target: str, direction: str, depth: int | None, project: str | None
) -> Any:
    return client_of(request).lineage(
        target,
        direction=direction,
        depth=depth,
        max_step_runs=400,
        project=ref_project(request, who, target, project),
        projects=who.scope,
    )


@router.get("/audit")
def get_audit(
    request: Request,
    who: Viewer,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    action: str | None = None,
) -> dict[str, Any]:
    """The audit log, newest first: who changed what, when, from where."""
    return jsonable_encoder({"entries": audit_rows(request, who, limit, action)})
