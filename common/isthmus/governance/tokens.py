"""API tokens: ``isthmus_<id>_<secret>``, shown once at creation; the store keeps the id and the
SHA-256 of the secret (256 random bits: a fast hash is enough, nothing to brute-force)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from isthmus.governance.roles import Principal, Role
from isthmus.store import schema as s

if TYPE_CHECKING:
    from isthmus.store.metadata import MetadataStore

_FORM = re.compile(r"isthmus_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    metadata: MetadataStore,
    principal: str,
    role: Role,
    project: str | None,
    *,
    created_by: str,
    expires_in: dt.timedelta | None = None,
) -> tuple[str, dict[str, Any]]:
    """A new token for ``principal`` (its text, returned once, and its stored row without the hash)."""
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    now = dt.datetime.now(dt.UTC)
    row = {
        "id": token_id,
        "secret_hash": _digest(secret),
        "principal": principal,
        "role": role.label,
        "project": project,
        "created_by": created_by,
        "created_at": now,
        "expires_at": now + expires_in if expires_in else None,
        "revoked_at": None,
    }
    metadata._run_write(lambda conn: conn.execute(insert(s.api_tokens).values(**row)))
    shown = {k: v for k, v in row.items() if k != "secret_hash"}
    return f"isthmus_{token_id}_{secret}", shown


def principal_for(metadata: MetadataStore, token: str, *, bearer: bool) -> Principal | None:
    """The principal of a valid (known, unexpired, unrevoked) token; None otherwise."""
    m = _FORM.fullmatch(token.strip())
    if not m:
        return None
    t = s.api_tokens
    with metadata.engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.id == m.group(1))).mappings().first()
    if row is None or row["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(str(row["secret_hash"]), _digest(m.group(2))):
        return None
    expires = row["expires_at"]
    if expires is not None:
        expires = expires if expires.tzinfo else expires.replace(tzinfo=dt.UTC)
        if expires <= dt.datetime.now(dt.UTC):
            return None
    projects = frozenset([row["project"]]) if row["project"] else None
    return Principal(
        name=str(row["principal"]), role=Role.parse(row["role"]), via="token", bearer=bearer, projects=projects
    )


def any_token(metadata: MetadataStore) -> bool:
    t = s.api_tokens
    with metadata.engine.connect() as conn:
        return conn.execute(select(t.c.id).where(t.c.revoked_at.is_(None)).limit(1)).first() is not None


def listed(metadata: MetadataStore) -> list[dict[str, Any]]:
    t = s.api_tokens
    with metadata.engine.connect() as conn:
        rows = conn.execute(select(t).order_by(t.c.created_at)).mappings()
        return [{k: v for k, v in r.items() if k != "secret_hash"} for r in rows]


def revoke(metadata: MetadataStore, token_id: str) -> bool:
    t = s.api_tokens
    stmt = update(t).where(t.c.id == token_id, t.c.revoked_at.is_(None)).values(revoked_at=dt.datetime.now(dt.UTC))
    return bool(metadata._run_write(lambda conn: conn.execute(stmt).rowcount))
