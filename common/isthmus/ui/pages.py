"""The HTML pages: runs, a run, a step run, a diff, artifacts, lineage, the audit log; and the alias
forms (promote, roll back), which need an operator and the page's CSRF token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from isthmus.context import derived_run_id
from isthmus.governance.projects import alias_project
from isthmus.printable import printable
from isthmus.ui import api, auth, views
from isthmus.ui.app import HERE
from isthmus.ui.auth import Principal, Role
from isthmus.ui.queries import RunFilters, runs_page

router = APIRouter(include_in_schema=False)


def _shown(value: Any) -> Any:
    """Every value a page shows: recorded text with its control characters as escapes (``\\x1b``, as the
    CLI shows them), then HTML-escaped by autoescaping; markup a view built (escaped already) as it is."""
    return printable(value) if isinstance(value, str) and not isinstance(value, Markup) else value


_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    finalize=_shown,
)
_env.filters["ms"] = views.duration
_env.filters["q"] = views.q
_env.filters["pretty"] = views.pretty
_env.globals["step_kind"] = views.step_kind
templates = Jinja2Templates(env=_env)


def base_of(request: Request) -> str:
    return str(request.scope.get("root_path") or "").rstrip("/")


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    who = getattr(request.state, "principal", None)
    context.update(
        request=request,
        base=base_of(request),
        who=who,
        csrf=auth.csrf_token(request),
        title=context.get("title") or request.app.state.settings.title,
    )
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def error_page(request: Request, status: int, message: str, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    response = render(request, "error.html", status_code=status, status=status, message=message, title="error")
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


@router.get("/")
def home(request: Request) -> RedirectResponse:
    return RedirectResponse(f"{base_of(request)}/runs", status_code=303)


@router.get("/runs", response_class=HTMLResponse)
def runs(
    request: Request,
    pipeline: str | None = None,
    orchestrator: str | None = None,
    status: str | None = None,
    project: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> HTMLResponse:
    who = api.viewer(request)
    filters = api.visible_filters(
        who, RunFilters(pipeline or None, orchestrator or None, status or None, project or None)
    )
    page = runs_page(api.client_of(request).metadata, filters, limit=limit, cursor=cursor, scope=who.scope)
    next_query = {**filters.to_query(), "cursor": page.next_cursor, "limit": str(limit)} if page.next_cursor else None
    return render(request, "runs.html", page=page, filters=filters, next_query=next_query, title="runs")


@router.get("/runs/{ref}", response_class=HTMLResponse)
def run(request: Request, ref: str) -> HTMLResponse:
    who = api.viewer(request)
    record = api.visible_run(request, who, ref)
    client = api.client_of(request)
    steps = api.shown_steps(request, who, client.step_runs(record["id"]))
    reasons = client.reasons(record["id"], projects=who.scope)
    links = client.metadata.links_of_step_runs([str(sr["id"]) for sr in steps])
    graph = views.run_graph(base_of(request), [dict(sr) for sr in steps], links)
    settings = request.app.state.settings
    started, ended = record.get("started_at"), record.get("ended_at")
    took = (ended - started).total_seconds() * 1000 if started and ended else None
    return render(
        request,
        "run.html",
        run=record,
        steps=steps,
        reasons=reasons,
        graph=graph,
        took=took,
        run_links=views.run_links(record, settings),
        step_links={str(sr["id"]): views.step_links(dict(sr), settings) for sr in steps},
        title=f"run {record['id'][:8]}",
    )


@router.get("/step-runs/{ref}", response_class=HTMLResponse)
def step_run(request: Request, ref: str) -> HTMLResponse:
    who = api.viewer(request)
    sr = api.visible_step_run(request, who, ref)
    client = api.client_of(request)
    why = client.explain(sr["id"], projects=who.scope)
    env = client.metadata.get_environment(sr["environment_hash"]) if sr.get("environment_hash") else None
    return render(
        request,
        "step_run.html",
        sr=sr,
        why=why,
        environment=env,
        links=views.step_links(sr, request.app.state.settings),
        title=f"step run {sr['invocation']}",
    )


@router.get("/diff", response_class=HTMLResponse)
def diff(request: Request, a: str, b: str) -> HTMLResponse:
    who = api.viewer(request)
    run_a, run_b = api.visible_run(request, who, a), api.visible_run(request, who, b)
    d = api.shown_diff(request, who, api.client_of(request).diff_runs(run_a["id"], run_b["id"]))
    code = {
        name: [
            views.side_by_side(component, old, new) for component, (old, new) in entry.get("code_sources", {}).items()
        ]
        for name, entry in d["steps"].items()
    }
    return render(request, "diff.html", d=d, code=code, title=f"diff {run_a['id'][:8]} {run_b['id'][:8]}")


@router.get("/artifacts", response_class=HTMLResponse)
def artifacts(request: Request, name: str | None = None, project: str | None = None) -> HTMLResponse:
    who = api.viewer(request)
    versions = api.client_of(request).artifact_versions(
        name or None, limit=100, project=api.home_project(who, project), projects=api.scope(who, project)
    )
    return render(request, "artifacts.html", versions=versions, name=name, project=project, title="artifacts")


@router.get("/artifacts/{ref:path}", response_class=HTMLResponse)
def artifact(request: Request, ref: str, project: str | None = None) -> HTMLResponse:
    who = api.viewer(request)
    client = api.client_of(request)
    owner = api.ref_project(request, who, ref, project)
    found = client.artifact(ref, project=owner, projects=who.scope)
    home = api.home_project(who, owner)
    versions = client.artifact_versions(found.name, limit=50, project=home, projects=who.scope) if found.name else []
    return render(
        request,
        "artifact.html",
        a=found,
        versions=versions,
        aliases=api.aliases_of(client, who, found.name),
        home=home or alias_project(None),
        may_change=who.role >= Role.OPERATOR and who.dags is None,
        title=f"artifact {found.name or found.content_hash[:19]}",
    )


def _alias_form(request: Request, csrf_token: str | None) -> Principal:
    who = auth.require(request, Role.OPERATOR)
    auth.check_csrf(request, who, csrf_token)
    return who


def _back_to(request: Request, alias: str, change: Any, given: str | None) -> RedirectResponse:
    owner = change.project if change is not None else given
    query = f"?project={views.q(owner)}" if owner else ""
    return RedirectResponse(f"{base_of(request)}/artifacts/{views.q(alias)}{query}", status_code=303)


@router.post("/aliases/promote")
def promote_form(
    request: Request,
    alias: Annotated[str, Form(max_length=800)],
    version: Annotated[str, Form(max_length=800)],
    csrf_token: Annotated[str | None, Form()] = None,
    reason: Annotated[str | None, Form(max_length=2000)] = None,
    project: Annotated[str | None, Form(max_length=255)] = None,
) -> RedirectResponse:
    who = _alias_form(request, csrf_token)
    change = api.change_alias(request, who, "promote", alias, version, reason, project or None)
    return _back_to(request, alias, change, project or None)


@router.post("/aliases/rollback")
def rollback_form(
    request: Request,
    alias: Annotated[str, Form(max_length=800)],
    csrf_token: Annotated[str | None, Form()] = None,
    to: Annotated[str | None, Form(max_length=800)] = None,
    reason: Annotated[str | None, Form(max_length=2000)] = None,
    project: Annotated[str | None, Form(max_length=255)] = None,
) -> RedirectResponse:
    who = _alias_form(request, csrf_token)
    change = api.change_alias(request, who, "rollback", alias, to or None, reason, project or None)
    return _back_to(request, alias, change, project or None)


@router.get("/lineage", response_class=HTMLResponse)
def lineage(
    request: Request,
    target: str = "latest",
    direction: Annotated[str, Query(pattern="^(upstream|downstream|both)$")] = "both",
    depth: Annotated[int | None, Query(ge=1, le=50)] = None,
    project: str | None = None,
) -> HTMLResponse:
    found = api.visible_lineage(request, api.viewer(request), target, direction, depth, project)
    graph = views.lineage_graph(base_of(request), found)
    return render(
        request, "lineage.html", found=found, graph=graph, target=target, direction=direction, title="lineage"
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, action: str | None = None) -> HTMLResponse:
    who = api.viewer(request)
    rows = api.audit_rows(request, who, 200, action or None)
    return render(request, "audit.html", entries=rows, action=action, title="audit log")


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html", title="sign in")


@router.post("/login")
def login(
    request: Request,
    token: Annotated[str, Form(max_length=200)],
    csrf_token: Annotated[str | None, Form()] = None,
) -> Response:
    """Check an API token and keep it in an HTTP-only cookie for this browser."""
    from isthmus.governance import tokens
    from isthmus.ui.tokens_auth import TOKEN_COOKIE

    cookie = request.cookies.get(auth.CSRF_COOKIE) or ""
    if not cookie or csrf_token != cookie:
        return error_page(request, 403, "missing or wrong CSRF token; reload the page and try again")
    if tokens.principal_for(api.client_of(request).metadata, token, bearer=False) is None:
        return error_page(request, 401, "unknown, expired or revoked token")
    response = RedirectResponse(f"{base_of(request)}/runs", status_code=303)
    response.set_cookie(TOKEN_COOKIE, token.strip(), httponly=True, samesite="strict", path=base_of(request) or "/")
    return response


# -- the Airflow tabs (external views): a DAG run's pipeline run, a task instance's step run -----------
def readable_dag(request: Request, dag_id: str) -> Principal:
    """The caller, if it may read DAG ``dag_id`` (asked of Airflow's auth manager inside Airflow); else 403."""
    who = api.viewer(request)
    if not who.may_read_dag(dag_id):
        raise HTTPException(status_code=403, detail=f"{who.name} may not read DAG {dag_id[:250]!r} in Airflow")
    return who


@router.get("/airflow/dag-run", response_class=HTMLResponse)
def airflow_dag_run(request: Request, dag_id: str, run_id: str) -> HTMLResponse:
    """The pipeline run that stands for an Airflow DAG run (the DAG run tab)."""
    readable_dag(request, dag_id)
    pipeline_run = derived_run_id("airflow", dag_id, run_id)
    if api.client_of(request).metadata.get_pipeline_run(pipeline_run) is None:
        return error_page(request, 404, f"DAG run {run_id!r} of {dag_id!r} ran no isthmus step")
    return run(request, pipeline_run)


@router.get("/airflow/task-instance", response_class=HTMLResponse)
def airflow_task_instance(
    request: Request, dag_id: str, run_id: str, task_id: str, map_index: str | None = None
) -> HTMLResponse:
    """The step run of an Airflow task instance (its last attempt; the task instance tab)."""
    readable_dag(request, dag_id)
    pipeline_run = derived_run_id("airflow", dag_id, run_id)
    index = int(map_index) if map_index and map_index.lstrip("-").isdigit() else -1
    invocation = task_id if index < 0 else f"{task_id}[{index}]"
    steps = api.client_of(request).metadata.step_runs_of(pipeline_run)
    chosen = [sr for sr in steps if sr["invocation"] == invocation]
    if not chosen:
        return error_page(request, 404, f"task {invocation!r} of DAG run {run_id!r} ran no isthmus step")
    return step_run(request, str(chosen[-1]["id"]))
