"""OpenLineage names of isthmus runs: job namespaces and names, run ids, and dataset names of artifacts
by the OpenLineage naming spec."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from isthmus.context import RUN_NAMESPACE
from isthmus.lineage.backends import backend_job
from isthmus.lineage.parent import NAMESPACE_KEY, RUN_ID_KEY, external_parent


def namespace() -> str:
    """The job namespace of isthmus's own runs: ``OPENLINEAGE_NAMESPACE``, else ``isthmus``."""
    return os.environ.get("OPENLINEAGE_NAMESPACE") or "isthmus"


def step_run_uuid(step_run: Mapping[str, Any]) -> str:
    """The OpenLineage run id of a step run: derived from (pipeline run, invocation, attempt), so every
    process taking part in it (the submitter of a batch job and the job itself) computes the same id.
    Without a pipeline run: derived from the id the submitter chose (native ``openlineage_run_id``) and
    the attempt, else the step run's own id."""
    pipeline_run_id = step_run.get("pipeline_run_id")
    if not pipeline_run_id:
        chosen = ((step_run.get("context") or {}).get("native") or {}).get(RUN_ID_KEY)
        if not chosen:
            return str(step_run["id"])
        return str(uuid.uuid5(RUN_NAMESPACE, f"step\x1f{chosen}\x1f{step_run.get('attempt')}"))
    key = f"step\x1f{pipeline_run_id}\x1f{step_run.get('invocation')}\x1f{step_run.get('attempt')}"
    return str(uuid.uuid5(RUN_NAMESPACE, key))


def step_job_namespace(step_run: Mapping[str, Any]) -> str:
    """The namespace of a step run's job: the one its starter chose (native ``openlineage_namespace``),
    else :func:`namespace`."""
    native = (step_run.get("context") or {}).get("native") or {}
    return str(native.get(NAMESPACE_KEY) or namespace())


def step_job_name(step_run: Mapping[str, Any]) -> str:
    """The name of a step run's job: ``<pipeline>.<invocation>``, or the step's name outside a pipeline.
    A run started by an orchestrator task whose job has that very name and namespace is a job of its own:
    ``<name>.<kind>`` after the registered backend that ran it, ``<name>.run`` when none did."""
    pipeline = (step_run.get("context") or {}).get("pipeline_name")
    name = f"{pipeline}.{step_run.get('invocation')}" if pipeline else str(step_run.get("step_name"))
    parent = external_parent(step_run)
    if parent and parent["job_name"] == name and parent["namespace"] == step_job_namespace(step_run):
        backend = backend_job(step_run)
        name += f".{backend[0].kind}" if backend else ".run"
    return name


# Azure names a container as the URL's user (``abfss://container@account…``): there it is the name.
_CONTAINER_USERINFO = frozenset({"abfs", "abfss", "wasb", "wasbs", "az"})


def dataset_id(uri: str) -> tuple[str, str]:
    """(namespace, name) of an artifact by the OpenLineage naming spec: ``file`` + absolute path for
    local files, ``s3://bucket`` + key, ``gs://bucket`` + key, ``abfss://container@account`` + path,
    ``postgres://host:port`` + path, …; the user part of any other URL (a user, ``user:password``, a token)
    is left out, and so is the query (a presigned URL's signature)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return "file", parsed.path or uri
    netloc = parsed.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and (":" in userinfo or parsed.scheme.lower() not in _CONTAINER_USERINFO):
        netloc = host  # a user, password or token: credentials, never part of a dataset's name
    namespace = f"{parsed.scheme}://{netloc}"
    return namespace, parsed.path.lstrip("/")
