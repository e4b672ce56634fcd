"""``SlurmHook``: an isthmus ``SlurmClient`` (and job defaults) from an Airflow connection of type ``slurm``."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from isthmus.slurm import SlurmClient, connect, run_sync

BACKENDS = ("cli", "rest", "pyslurm")


def _bool(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def settings_from_connection(conn: Any, conn_id: str = "slurm_default") -> dict[str, Any]:
    """``{"backend", "client": {...}, "defaults": {...}}`` from a ``slurm`` connection.

    - backend ``cli`` (default): ``host`` empty runs the Slurm commands here; otherwise over SSH as
      ``login`` with ``extra.key_file`` (or the agent), ``port``, ``extra.known_hosts``
      (``extra.verify_host_key: false`` only for throwaway hosts); ``extra.slurm_conf`` sets SLURM_CONF
      for local commands.
    - backend ``rest``: ``host`` is the slurmrestd URL (``http(s)://host:port``; ``port`` is added if the
      URL has none) or ``extra.socket`` a unix socket; ``password`` the JWT (``scontrol token``) and
      ``login`` its user; ``extra.api_version`` pins the API.
    - backend ``pyslurm``: libslurm in the worker (pyslurm built for the cluster's Slurm release).
    - job defaults: ``extra.partition``, ``account``, ``qos``, ``constraint``, ``python`` (interpreter on
      the compute nodes), ``work_root`` (shared directory for job files), ``record`` (``db`` or
      ``manifest``), ``pythonpath`` (list), ``env`` (object).
    """
    extra = dict(conn.extra_dejson or {}) if conn is not None else {}
    backend = str(extra.get("backend") or "cli").strip().lower()
    if backend not in BACKENDS:
        raise ValueError(f"Slurm connection {conn_id!r}: extra.backend={backend!r} must be one of {BACKENDS}")
    host = (conn.host or "").strip() if conn is not None else ""
    client: dict[str, Any]
    if backend == "cli":
        client = {
            "host": host or None,
            "user": (conn.login or None) if conn is not None else None,
            "port": int(conn.port or 22) if conn is not None and conn.port else 22,
            "key_file": extra.get("key_file"),
            "known_hosts": extra.get("known_hosts"),
            "verify_host_key": _bool(extra.get("verify_host_key"), True),
            "env": {"SLURM_CONF": extra["slurm_conf"]} if extra.get("slurm_conf") else {},
            "timeout": float(extra.get("timeout") or 60),
        }
    elif backend == "pyslurm":  # libslurm in this process: the controller comes from SLURM_CONF
        if extra.get("slurm_conf"):
            raise ValueError(
                f"Slurm connection {conn_id!r}: extra.slurm_conf does not apply to the pyslurm backend "
                "(libslurm reads SLURM_CONF when pyslurm is imported); set SLURM_CONF for the worker instead"
            )
        client = {}
    else:
        url = host or None
        if url and "://" not in url:
            url = f"{conn.schema or 'http'}://{url}"
        if url and conn is not None and conn.port and url.count(":") < 2:
            url = f"{url}:{conn.port}"
        if not url and not extra.get("socket"):
            raise ValueError(
                f"Slurm connection {conn_id!r}: the rest backend needs host (slurmrestd URL) or extra.socket"
            )
        client = {
            "url": url,
            "socket": extra.get("socket"),
            "token": (conn.password or None) if conn is not None else None,
            "user": (conn.login or None) if conn is not None else None,
            "version": extra.get("api_version"),
            "timeout": float(extra.get("timeout") or 30),
        }
    defaults = {
        k: extra[k]
        for k in ("partition", "account", "qos", "constraint", "python", "work_root", "record", "pythonpath", "env")
        if extra.get(k) not in (None, "", [], {})
    }
    return {"backend": backend, "client": client, "defaults": defaults}


class SlurmHook(BaseHook):
    """Connection type ``slurm`` (see :func:`settings_from_connection` for its fields).

    With the default connection id and no such connection, Slurm's commands run on this machine
    (backend ``cli``, the process's own ``SLURM_CONF``).
    """

    conn_name_attr = "slurm_conn_id"
    default_conn_name = "slurm_default"
    conn_type = "slurm"
    hook_name = "Slurm (isthmus)"

    def __init__(self, slurm_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slurm_conn_id = slurm_conn_id

    def _missing(self, exc: Exception) -> dict[str, Any]:
        if self.slurm_conn_id != self.default_conn_name:
            raise ValueError(
                f"Slurm connection {self.slurm_conn_id!r} does not exist ({exc}); create it (type 'slurm') "
                "or leave slurm_conn_id unset to run Slurm's commands on this machine"
            ) from None
        return settings_from_connection(None, self.slurm_conn_id)

    def settings(self) -> dict[str, Any]:
        try:
            conn = self.get_connection(self.slurm_conn_id)
        except Exception as exc:  # AirflowNotFoundException, or no connections backend
            return self._missing(exc)
        return settings_from_connection(conn, self.slurm_conn_id)

    async def asettings(self) -> dict[str, Any]:
        """:meth:`settings` from async code (the triggerer)."""
        try:
            conn = await self.aget_connection(self.slurm_conn_id)
        except Exception as exc:
            return self._missing(exc)
        return settings_from_connection(conn, self.slurm_conn_id)

    def get_conn(self) -> SlurmClient:
        cfg = self.settings()
        return connect(cfg["backend"], **cfg["client"])

    async def aget_conn(self) -> SlurmClient:
        cfg = await self.asettings()
        return connect(cfg["backend"], **cfg["client"])

    def test_connection(self) -> tuple[bool, str]:
        """Ask the controller for a ping and its partitions."""
        try:
            client = self.get_conn()

            async def ping() -> dict[str, Any]:
                try:
                    return await client.ping()
                finally:
                    await client.close()

            info = run_sync(ping())
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return (
            True,
            f"Slurm controller reachable via {client.backend}; partitions: {', '.join(info.get('partitions') or []) or '?'}",
        )
