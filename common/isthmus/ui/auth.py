"""Who is asking, what they may do, and the CSRF check of form posts.

A :class:`Principal` has one :class:`Role` (viewer < operator < admin) and the projects it may see
(None: every project). The app asks ``app.state.authenticate(request)`` for one; the standalone server
and the Airflow plugin each install their own (tokens, or Airflow's auth manager). ``None`` means
anonymous, answered with 401.

Form posts carry a CSRF token (double submit: a random cookie, ``SameSite=Strict``, repeated in a hidden
field); requests authenticated by a bearer token need none (a browser never adds that header by itself).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request

from isthmus.governance.roles import Principal, Role

CSRF_COOKIE = "isthmus_csrf"
CSRF_FIELD = "csrf_token"
__all__ = ["Principal", "Role", "principal", "require", "check_csrf", "csrf_token", "new_csrf"]


Authenticator = Callable[[Request], "Principal | None | Awaitable[Principal | None]"]


def principal(request: Request) -> Principal:
    """The caller of ``request``, or 401."""
    found = getattr(request.state, "principal", None)
    if isinstance(found, Principal):
        return found
    refusal = getattr(request.state, "auth_refusal", None)
    if isinstance(refusal, HTTPException):
        raise refusal
    raise HTTPException(status_code=401, detail="authentication required", headers={"WWW-Authenticate": "Bearer"})


def require(request: Request, role: Role) -> Principal:
    """The caller, if it holds ``role`` (or more); else 403 naming what is missing."""
    who = principal(request)
    if who.role < role:
        raise HTTPException(status_code=403, detail=f"{who.name} is {who.role.label}; this needs the {role.label} role")
    return who


def csrf_token(request: Request) -> str:
    """The CSRF token of this browser (set as a cookie by the page middleware)."""
    return str(getattr(request.state, "csrf", None) or request.cookies.get(CSRF_COOKIE) or "")


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def check_csrf(request: Request, who: Principal, submitted: str | None) -> None:
    """403 unless a form post repeats its CSRF cookie (bearer-token calls need none)."""
    if who.bearer:
        return
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    if not cookie or not submitted or not hmac.compare_digest(cookie, str(submitted)):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token; reload the page and try again")
