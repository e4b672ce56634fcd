"""Kubernetes test helpers: the schema versions every generated manifest must validate against, and a
fake API holding Jobs, pods and Secrets in memory (the same methods as ``BatchV1Api``/``CoreV1Api``)."""

from __future__ import annotations

from typing import Any

import pytest

# The oldest and newest Kubernetes minor versions kubernetes-validate ships here, and one between.
SCHEMA_VERSIONS = ("1.30", "1.33", "1.37")


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Validate against the official OpenAPI schema (strict: unknown fields refused) of every version."""
    import kubernetes_validate

    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.fixture(autouse=True)
def _recursion_limit_kept() -> Any:
    """Airflow's ``BaseOperator.__deepcopy__`` raises the interpreter's recursion limit for the whole
    process; on Python 3.11 a changed limit can break a later ``ast.parse`` ("AST constructor recursion
    depth mismatch"). Put it back, so the tests after these see the interpreter as it was."""
    import sys

    limit = sys.getrecursionlimit()
    yield
    sys.setrecursionlimit(limit)


@pytest.fixture
def schema_versions() -> tuple[str, ...]:
    return SCHEMA_VERSIONS


PG_PASSWORD = "k8s-Hunter2-pw"


@pytest.fixture
def pg_password_url(pg_server):
    """A fresh PostgreSQL database, as a URL that carries a user AND a password (what a team's store URL
    looks like; the test server trusts local connections, so the password is not checked)."""
    from sqlalchemy import make_url, text

    with pg_server.admin_engine().connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = 'isthmus_k8s_user'")).scalar()
        if not exists:
            conn.execute(text(f"CREATE ROLE isthmus_k8s_user LOGIN SUPERUSER PASSWORD '{PG_PASSWORD}'"))
            conn.commit()
    url = pg_server.create_database()
    yield make_url(url).set(username="isthmus_k8s_user", password=PG_PASSWORD).render_as_string(hide_password=False)
    pg_server.drop_database(url)


def resolve_container_env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment the kubelet would give ``container``: ``envFrom`` Secrets first, then ``env``
    (literal values and ``secretKeyRef``s), each reference resolved from ``secrets`` (name -> key -> value).
    A missing Secret or key raises KeyError, as the kubelet refuses to start such a container."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        env.update(secrets[source["secretRef"]["name"]])
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    return env
