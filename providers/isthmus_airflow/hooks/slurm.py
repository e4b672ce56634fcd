"""``SlurmHook``: an isthmus ``SlurmClient`` (and job defaults) from an Airflow connection of type ``slurm``."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from isthmus.slurm import SlurmClient, SlurmJobOptions, connect, run_sync
from isthmus.slurm.backends import backend_class, check_kind
from isthmus.slurm.backends.base import ConnectionFields


def settings_from_connection(conn: Any, conn_id: str = "slurm_default") -> dict[str, Any]:
    """``{"backend", "client": {...}, "defaults": {...}}`` from a ``slurm`` connection.

    - ``extra.backend``: a backend of :data:`isthmus.slurm.backends.BACKENDS` (default: the registry's
      default); the other fields become its client options, as its class's ``connection_options`` says
      (host or SSH login node, slurmrestd URL and token, ...);
    - job defaults: the :class:`~isthmus.slurm.SlurmJobOptions` among ``extra``'s keys (``partition``,
      ``account``, ``qos``, ``constraint``, ``python``, ``work_root``, ``record``, ``pythonpath`` (list),
      ``env`` (object), ...); an operator's own options win over them.
    """
    where = f"Slurm connection {conn_id!r}"
    extra = dict(conn.extra_dejson or {}) if conn is not None else {}
    backend = check_kind(extra.get("backend"), f"{where}: extra.backend")
    fields = ConnectionFields(extra=extra)
    if conn is not None:
        fields = ConnectionFields(
            host=(conn.host or "").strip(),
            port=conn.port or None,
            login=conn.login or None,
            password=conn.password or None,
            schema=conn.schema or None,
            extra=extra,
        )
    client = backend_class(backend).connection_options(fields, where)
    defaults = SlurmJobOptions.from_mapping(extra).to_dict(set_only=True)
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
            f"Slurm controller reachable via {client.kind}; partitions: {', '.join(info.get('partitions') or []) or '?'}",
        )
