"""What a Slurm job started by an Airflow task needs from apache-airflow-providers-openlineage.

The task's own OpenLineage run is emitted by the provider (DAG run -> task run). The job reports a run
of its own one level further down: it gets the task's run as ``OPENLINEAGE_PARENT_ID`` and the DAG run
as ``OPENLINEAGE_ROOT_PARENT_ID`` (the provider's ``lineage_parent_id`` / ``lineage_root_parent_id``
macros), and the provider's transport and namespace, so its events go where the task's go.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from isthmus.lineage.openlineage import env_configured
from isthmus.lineage.parent import NAMESPACE_KEY, PARENT_KEY, ROOT_KEY, parse_parent_id

log = logging.getLogger("isthmus_airflow.lineage")


def _provider() -> Any | None:
    """The provider's ``conf`` module when it is installed and enabled, else None."""
    try:
        from airflow.providers.openlineage import conf
    except ImportError:
        return None
    try:
        return None if conf.is_disabled() else conf
    except Exception:  # a broken [openlineage] section must not fail the task
        return None


def openlineage_handoff(context: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """(native ids with the task's parent and root runs, environment for the job). Empty when the
    provider is missing or disabled: then the task has no OpenLineage run to hang the job under."""
    conf = _provider()
    if conf is None:
        return {}, {}
    try:
        from airflow.providers.openlineage.plugins.macros import lineage_parent_id, lineage_root_parent_id

        ti = context["ti"]
        native = {PARENT_KEY: parse_parent_id(lineage_parent_id(ti))}
        root = parse_parent_id(lineage_root_parent_id(ti), what="OPENLINEAGE_ROOT_PARENT_ID")
        if root:
            native[ROOT_KEY] = root
    except Exception as exc:  # lineage never fails the task
        log.warning("isthmus: no OpenLineage parent for the Slurm job (%s: %s)", type(exc).__name__, exc)
        return {}, {}
    if not native[PARENT_KEY]:
        return {}, {}
    env: dict[str, str] = {}
    if not env_configured():  # else the job gets the same variables as this process
        transport = conf.transport()
        if transport:
            env["OPENLINEAGE__TRANSPORT"] = json.dumps(transport)
        elif conf.config_path(True):
            env["OPENLINEAGE_CONFIG"] = conf.config_path(True)
    # The job's run is named in the task's namespace, whichever process reports it.
    native[NAMESPACE_KEY] = env["OPENLINEAGE_NAMESPACE"] = conf.namespace()
    return native, env


def openlineage_client() -> Any | None:
    """The provider's OpenLineage client (its transport), or None when it is missing or disabled."""
    if _provider() is None:
        return None
    try:
        from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter

        return OpenLineageAdapter().get_or_create_openlineage_client()
    except Exception as exc:
        log.warning("isthmus: no OpenLineage client (%s: %s)", type(exc).__name__, exc)
        return None
