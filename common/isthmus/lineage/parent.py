"""Parent and root runs handed to a child process the OpenLineage way.

An orchestrator passes its run to a job it starts (a batch job, a container) in the environment:
``OPENLINEAGE_PARENT_ID`` and ``OPENLINEAGE_ROOT_PARENT_ID``, each ``{namespace}/{job_name}/{run_id}``
(the form of Airflow's ``lineage_parent_id`` / ``lineage_root_parent_id`` macros, read by dbt-ol and
others). The remote entrypoint records them in the run context's native ids; the emitter then makes
them the step run's ``parent`` and ``root``.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("isthmus.lineage")

PARENT_ENV = "OPENLINEAGE_PARENT_ID"
ROOT_ENV = "OPENLINEAGE_ROOT_PARENT_ID"
PARENT_KEY = "openlineage_parent"  # RunContext.native keys
ROOT_KEY = "openlineage_root"
NAMESPACE_KEY = "openlineage_namespace"  # the namespace of the run's own job, when its starter chose one
RUN_ID_KEY = "openlineage_run_id"  # the run id a submitter chose for a step run without a pipeline run


def parse_parent_id(value: str | None, *, what: str = PARENT_ENV) -> dict[str, str] | None:
    """``{namespace}/{job_name}/{run_id}`` as ``{"namespace", "job_name", "run_id"}``; None (with a
    warning) when it is malformed — lineage never fails a run."""
    if not value:
        return None
    namespace, _, rest = value.strip().partition("/")
    job_name, _, run_id = rest.rpartition("/")
    try:
        uuid.UUID(run_id)
    except ValueError:
        run_id = ""
    if not (namespace and job_name and run_id):
        log.warning("isthmus lineage: ignoring %s=%r: expected '{namespace}/{job_name}/{run_id (a UUID)}'", what, value)
        return None
    return {"namespace": namespace, "job_name": job_name, "run_id": run_id}


def format_parent_id(parent: Mapping[str, Any]) -> str:
    """The ``{namespace}/{job_name}/{run_id}`` form of a parent dict."""
    return f"{parent['namespace']}/{parent['job_name']}/{parent['run_id']}"


def parents_from_env(environ: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    """The native ids (``openlineage_parent``, ``openlineage_root``) found in the environment."""
    env = os.environ if environ is None else environ
    out: dict[str, dict[str, str]] = {}
    parent = parse_parent_id(env.get(PARENT_ENV), what=PARENT_ENV)
    if parent:
        out[PARENT_KEY] = parent
        root = parse_parent_id(env.get(ROOT_ENV), what=ROOT_ENV)
        if root:
            out[ROOT_KEY] = root
    return out


def env_for(parent: Mapping[str, Any] | None, root: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Environment variables that hand ``parent`` (and ``root``) to a child process."""
    env: dict[str, str] = {}
    if parent:
        env[PARENT_ENV] = format_parent_id(parent)
        if root:
            env[ROOT_ENV] = format_parent_id(root)
    return env


def external_parent(step_run: Mapping[str, Any]) -> dict[str, Any] | None:
    """The parent run handed to a step run from outside (``OPENLINEAGE_PARENT_ID``), if any."""
    native = (step_run.get("context") or {}).get("native") or {}
    parent = native.get(PARENT_KEY)
    return parent if isinstance(parent, dict) and parent.get("run_id") and parent.get("job_name") else None
