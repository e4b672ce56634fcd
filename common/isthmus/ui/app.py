"""The isthmus web UI: ``create_app()`` builds one FastAPI app — the JSON API under ``/api/v1`` (OpenAPI
at ``/api/v1/openapi.json``, docs off: they would fetch scripts from a CDN) and server-rendered pages.

Server-side rendering (Jinja2 templates shipped in this package, autoescaped) keeps the pages working
offline and inside Airflow's iframe with no build step and no third-party script; a few lines of plain
JavaScript only add conveniences (compare two runs). Everything is read and changed through
:class:`isthmus.Client`. The standalone server (``isthmus ui``) and the Airflow plugin mount the same app
and differ only in how they authenticate (:mod:`isthmus.ui.auth`).
"""

from __future__ import annotations

import getpass
import inspect
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from isthmus.aliases import AliasRefused
from isthmus.client import Client
from isthmus.errors import ConfigurationError, IsthmusError, RunNotFound
from isthmus.store.metadata import AliasMoved
from isthmus.ui.auth import CSRF_COOKIE, Authenticator, Principal, Role, new_csrf
from isthmus.ui.views import UISettings

HERE = Path(__file__).parent
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
)


def local_user() -> Principal:
    """The person running ``isthmus ui`` on their own store: an admin of every project."""
    try:
        name = getpass.getuser()
    except Exception:
        name = "local"
    return Principal(name=name, role=Role.ADMIN, via="local")


async def authenticate_request(request: Request) -> None:
    """Ask the app's authenticator who is calling (it may be async, as Airflow's auth manager is, or
    sync, run in a worker thread as it may read the store); keep the answer, or the refusal, in
    ``request.state`` for :func:`isthmus.ui.auth.principal`."""
    authenticate = request.app.state.authenticate
    try:
        if inspect.iscoroutinefunction(authenticate):
            found = await authenticate(request)
        else:
            found = await run_in_threadpool(authenticate, request)
    except HTTPException as exc:
        request.state.auth_refusal = exc
        found = None
    request.state.principal = found
    request.state.authenticated = True


class _PageHeaders(BaseHTTPMiddleware):
    """A CSRF cookie for every browser, and headers that keep pages from loading anything foreign."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        fresh = None if request.cookies.get(CSRF_COOKIE) else new_csrf()
        request.state.csrf = fresh or request.cookies.get(CSRF_COOKIE)
        path = request.url.path
        asset = "/static/" in path or path.endswith("/openapi.json")  # served by no route of ours
        if not asset or not request.app.state.settings.public_static:
            await authenticate_request(request)
            if asset and request.state.principal is None:
                return JSONResponse({"detail": "authentication required"}, status_code=401)
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if fresh:
            path = request.scope.get("root_path") or "/"
            response.set_cookie(CSRF_COOKIE, fresh, httponly=True, samesite="strict", path=path)
        return response


def _status_for(exc: IsthmusError) -> int:
    if isinstance(exc, RunNotFound):
        return 404
    if isinstance(exc, AliasRefused | AliasMoved):
        return 409
    if isinstance(exc, ConfigurationError):
        return 500
    return 400


def create_app(
    client: Client | None = None,
    *,
    settings: UISettings | None = None,
    authenticate: Authenticator | None = None,
) -> FastAPI:
    """The UI app over ``client`` (the configured stores by default). ``authenticate`` names the caller of
    a request, or None for anonymous (default: the local user, an admin; ``isthmus ui`` passes a token
    check, the Airflow plugin Airflow's auth manager); it may be a coroutine function."""
    from isthmus.ui import api, pages

    app = FastAPI(
        title="isthmus",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.client = client or Client()
    app.state.settings = settings or UISettings()
    app.state.authenticate = authenticate or (lambda request: local_user())
    app.add_middleware(_PageHeaders)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(api.router, prefix="/api/v1")
    app.include_router(pages.router)

    @app.exception_handler(IsthmusError)
    async def isthmus_error(request: Request, exc: IsthmusError) -> Any:
        status = _status_for(exc)
        if _is_api(request):
            return JSONResponse({"detail": str(exc)}, status_code=status)
        return pages.error_page(request, status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Any:
        if _is_api(request) or exc.status_code < 400:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return pages.error_page(request, exc.status_code, str(exc.detail), headers=exc.headers)

    return app


def _is_api(request: Request) -> bool:
    return "/api/v1/" in request.url.path
