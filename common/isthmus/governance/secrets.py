"""``isthmus.secret("name")``: a credential read at run time from the orchestrator's own store — a
Flyte secret (``group/key`` or ``group.key``), an Airflow connection (its password) or variable — else
an environment variable (``ISTHMUS_SECRET_<NAME>``, then ``<NAME>``: Slurm jobs and plain Python).

The value is never recorded: it is registered with :mod:`isthmus.redaction`, so errors, tracebacks,
logged metadata and pipeline records are scrubbed of it, and a step output holding it is refused.
"""

from __future__ import annotations

import os
import re

from isthmus.errors import IsthmusError
from isthmus.redaction import register_secret

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}")


class SecretNotFound(IsthmusError, LookupError):
    """No store this run can read holds the secret."""


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _from_flyte(name: str) -> str | None:
    try:
        import flytekit
        from flytekit.core.context_manager import FlyteContextManager
    except ImportError:
        return None
    if FlyteContextManager.current_context().user_space_params is None:
        return None
    group, sep, key = re.split(r"([/.])", name, maxsplit=1) if re.search(r"[/.]", name) else (name, "", "")
    try:
        return str(flytekit.current_context().secrets.get(group, key or None))
    except (ValueError, AssertionError):
        return None


def _from_airflow(name: str) -> str | None:
    if not os.environ.get("AIRFLOW_CTX_DAG_ID"):  # set while an Airflow task runs
        return None
    try:
        from airflow.sdk import Connection, Variable
    except ImportError:
        return None
    try:
        conn = Connection.get(name)
        if conn is not None and (conn.password or conn.get_uri()):
            return str(conn.password or conn.get_uri())
    except Exception:  # no such connection: try a variable
        pass
    try:
        return str(Variable.get(name))
    except Exception:
        return None


def secret(name: str) -> str:
    """The credential ``name``, from the store of the orchestrator this step runs on, else the
    environment. Raises :class:`SecretNotFound` naming where it looked."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SecretNotFound(
            f"isthmus.secret({str(name)[:60]!r}): a secret name holds letters, digits and _ . / - (at most 200)"
        )
    env = _env_name(name)
    for found in (
        _from_flyte(name),
        _from_airflow(name),
        os.environ.get(f"ISTHMUS_SECRET_{env}"),
        os.environ.get(name),
    ):
        if found:
            register_secret(found)
            return found
    raise SecretNotFound(
        f"isthmus.secret({name!r}): not found in a Flyte secret, an Airflow connection or variable, "
        f"ISTHMUS_SECRET_{env} or {name}; define it in the orchestrator's secret store (or set ISTHMUS_SECRET_{env})"
    )
