"""The isthmus web UI inside Airflow's api-server: mounted at ``/isthmus`` (``fastapi_apps``), every
route behind Airflow's own authentication (its auth manager), Airflow permissions mapped to isthmus
roles: read DAGs → viewer, edit DAGs → operator, change the configuration → admin.

A user allowed to read only some DAGs (``get_authorized_dag_ids``) sees only the runs Airflow recorded for
those DAGs (with their step runs, artifacts and lineage); it is an operator only for actions on runs of
the DAGs it may edit, never for an action on a whole project (an alias). The DAG run and task instance
tabs ask the auth manager about their own DAG.

Plugin endpoints are not protected by Airflow by themselves, so :func:`airflow_principal` checks each
request the way Airflow's API does: a bearer token, else the session cookie of the Airflow UI.
FastAPI and the UI are imported on the first request, not when Airflow loads its plugins.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from isthmus.governance.roles import Principal, Role

log = logging.getLogger(__name__)
URL_PREFIX = "/isthmus"
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


async def airflow_principal(request: Request) -> Principal | None:
    """The Airflow user of ``request`` as an isthmus principal; None when anonymous (401). Raises 403
    for a user who may not even read DAGs or whose token is invalid."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import resolve_user_from_token
    from fastapi import HTTPException

    scheme, _, credentials = (request.headers.get("authorization") or "").partition(" ")
    bearer = scheme.lower() == "bearer" and bool(credentials.strip())
    token = credentials.strip() if bearer else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if not token:
        return None
    user = await resolve_user_from_token(token)
    found = await run_in_threadpool(principal_of, get_auth_manager(), user, bearer)  # may read Airflow's DB
    if found is None:
        raise HTTPException(status_code=403, detail=f"{user.get_name()} may not read DAGs in Airflow")
    return found


def principal_of(manager: Any, user: Any, bearer: bool) -> Principal | None:
    """The isthmus principal of an Airflow ``user`` by what ``manager`` (its auth manager) allows; None
    when it may read no DAG at all."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    def may_read(dag_id: str) -> bool:
        return bool(manager.is_authorized_dag(method="GET", details=DagDetails(id=dag_id), user=user))

    name = str(user.get_name())
    if manager.is_authorized_dag(method="GET", user=user):  # every DAG
        if manager.is_authorized_configuration(method="PUT", user=user):
            role = Role.ADMIN
        elif manager.is_authorized_dag(method="PUT", user=user):
            role = Role.OPERATOR
        else:
            role = Role.VIEWER
        return Principal(name=name, role=role, via="airflow", bearer=bearer, dag_check=may_read)
    dags = frozenset(str(d) for d in manager.get_authorized_dag_ids(user=user, method="GET"))
    if not dags:
        return None
    edit = frozenset(str(d) for d in manager.get_authorized_dag_ids(user=user, method="PUT")) & dags
    role = Role.OPERATOR if edit else Role.VIEWER
    return Principal(name=name, role=role, via="airflow", bearer=bearer, dags=dags, edit_dags=edit, dag_check=may_read)


def _client() -> Any:
    """A Client on the stores of the ``isthmus_default`` connection (what the isthmus tasks use by
    default), else on the api-server's own ``ISTHMUS_*`` settings."""
    from isthmus.client import Client

    try:
        from isthmus_airflow.hooks.isthmus import IsthmusHook

        runner = IsthmusHook().get_conn()
        return Client(runner.metadata, runner.artifacts)
    except Exception as exc:  # no connection backend here: isthmus's own settings
        log.info("isthmus UI: using ISTHMUS_* settings (%s: %s)", type(exc).__name__, exc)
        return Client()


class LazyUIApp:
    """An ASGI app that builds the isthmus UI on its first request (keeps plugin loading light)."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None

    def _build(self) -> ASGIApp:
        from isthmus.ui import UISettings, create_app

        app: ASGIApp = create_app(
            _client(), settings=UISettings(airflow_url="", public_static=False), authenticate=airflow_principal
        )
        return app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = self._build()
        await self._app(scope, receive, send)


def isthmus_views() -> list[dict[str, Any]]:
    """An "isthmus" tab on DAG runs and task instances, and a nav entry (Airflow fills the {…} ids)."""
    ids = "dag_id={DAG_ID}&run_id={RUN_ID}"
    return [
        {"name": "isthmus", "href": f"{URL_PREFIX}/runs", "destination": "nav", "url_route": "isthmus"},
        {
            "name": "isthmus",
            "href": f"{URL_PREFIX}/airflow/dag-run?{ids}",
            "destination": "dag_run",
            "url_route": "isthmus-dag-run",
        },
        {
            "name": "isthmus",
            "href": f"{URL_PREFIX}/airflow/task-instance?{ids}&task_id={{TASK_ID}}&map_index={{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": "isthmus-task-instance",
        },
    ]
