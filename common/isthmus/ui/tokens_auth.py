"""How the standalone server (``isthmus ui``) knows its callers: the local user (an admin) while the
store holds no API token; once a token exists, every request must bring one (``Authorization: Bearer``,
or the browser cookie set by the sign-in page)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from isthmus.client import Client
from isthmus.governance import tokens
from isthmus.governance.roles import Principal
from isthmus.ui.app import local_user

TOKEN_COOKIE = "isthmus_token"


def standalone_authenticator(client: Client) -> Callable[[Request], Principal | None]:
    """The authenticator of ``isthmus ui`` over ``client``'s store."""

    def authenticate(request: Request) -> Principal | None:
        header = request.headers.get("authorization") or ""
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and given.strip():
            return tokens.principal_for(client.metadata, given.strip(), bearer=True)
        cookie = request.cookies.get(TOKEN_COOKIE)
        if cookie:
            return tokens.principal_for(client.metadata, cookie, bearer=False)
        return None if tokens.any_token(client.metadata) else local_user()

    return authenticate
