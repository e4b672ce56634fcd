"""An Airflow auth manager that lets some users read or edit only some DAGs, as FAB or Keycloak can:
Airflow's SimpleAuthManager, with ``ISTHMUS_TEST_DAG_LIMITS`` (``user:dag_a|dag_b;other:``) naming the
users it limits and the DAG ids each may touch (none after an empty ``:``). Everyone else keeps what their
SimpleAuthManager role allows."""

from __future__ import annotations

import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

LIMITS = "ISTHMUS_TEST_DAG_LIMITS"


def dag_limits() -> dict[str, frozenset[str]]:
    """Each limited user and the DAG ids it may touch."""
    limits: dict[str, frozenset[str]] = {}
    for entry in os.environ.get(LIMITS, "").split(";"):
        user, sep, dags = entry.partition(":")
        if sep and user.strip():
            limits[user.strip()] = frozenset(d.strip() for d in dags.split("|") if d.strip())
    return limits


class DagLimitedAuthManager(SimpleAuthManager):
    """SimpleAuthManager, except that a limited user may touch only its DAGs, each named (a question about
    every DAG, without details, is answered no)."""

    def is_authorized_dag(
        self,
        *,
        method: Any,
        user: SimpleAuthManagerUser,
        access_entity: Any = None,
        details: Any = None,
    ) -> bool:
        allowed = dag_limits().get(user.get_name())
        if allowed is not None and (details is None or details.id not in allowed):
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
