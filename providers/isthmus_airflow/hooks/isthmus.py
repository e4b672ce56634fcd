"""``IsthmusHook``: the isthmus metadata store and artifact root, from an Airflow connection."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseHook

import isthmus
from isthmus.artifacts.store import ArtifactStore
from isthmus.config import check_artifact_root, get_settings
from isthmus.runner import StepRunner
from isthmus.store import MetadataStore


def connection_locations(conn: Any | None) -> tuple[str, str, str]:
    """(store URL, artifact root, verify mode) from an Airflow connection of type ``isthmus`` (any
    object with its fields), each falling back to isthmus's own settings; all from them for None."""
    settings = get_settings()
    if conn is None:
        return settings.store_url, settings.artifact_root, settings.verify
    extra = conn.extra_dejson or {}
    store_url = extra.get("store_url")
    if not store_url and conn.host:
        auth = quote(conn.login or "", safe="")
        if conn.password:
            auth += ":" + quote(conn.password, safe="")
        port = f":{conn.port}" if conn.port else ""
        store_url = f"postgresql+psycopg://{auth}{'@' if auth else ''}{conn.host}{port}/{conn.schema or 'isthmus'}"
    root = extra.get("artifact_root")
    if root:  # recorded with every run: credentials belong to the filesystem's own configuration
        check_artifact_root(str(root), "the isthmus connection's extra.artifact_root")
    return (
        store_url or settings.store_url,
        root or settings.artifact_root,
        extra.get("verify") or settings.verify,
    )


class IsthmusHook(BaseHook):
    """Connection type ``isthmus``.

    - ``extra.store_url`` (any SQLAlchemy URL), or host/port/schema/login/password for PostgreSQL
      (``postgresql+psycopg://login:password@host:port/schema``);
    - ``extra.artifact_root``: a path or fsspec URL (``s3://bucket/isthmus``);
    - ``extra.verify``: ``hash`` (default), ``size`` or ``off``;
    - ``extra.project``: the project of the runs recorded through it (:meth:`project`);
    - ``extra.k8s``: defaults of the Kubernetes step pods (:meth:`k8s_defaults`).

    The connection form fields are declared in the provider info (``conn-fields``).
    With the default connection id and no such connection, isthmus's own configuration
    (``ISTHMUS_*`` environment variables, ``~/.isthmus``) is used.
    """

    conn_name_attr = "isthmus_conn_id"
    default_conn_name = "isthmus_default"
    conn_type = "isthmus"
    hook_name = "isthmus"

    _cache: dict[tuple[str, str, str], StepRunner] = {}
    _lock = threading.Lock()

    def __init__(self, isthmus_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.isthmus_conn_id = isthmus_conn_id

    def _connection(self) -> Any | None:
        """The connection; None for the default id when there is no such connection."""
        try:
            return self.get_connection(self.isthmus_conn_id)
        except Exception as exc:  # AirflowNotFoundException, or no Airflow connections backend
            if self.isthmus_conn_id != self.default_conn_name:
                raise ValueError(
                    f"isthmus connection {self.isthmus_conn_id!r} does not exist ({exc}); create it "
                    "(type 'isthmus') or leave isthmus_conn_id unset to use ISTHMUS_* settings"
                ) from None
            return None

    def locations(self) -> tuple[str, str, str]:
        """(store URL, artifact root, verify mode) from the connection, else from isthmus's config."""
        return connection_locations(self._connection())

    def project(self) -> str | None:
        """The project the DAG runs recorded through this connection belong to: ``extra.project``
        (checked); None when the connection does not say (then ``ISTHMUS_PROJECT``, else ``default``)."""
        conn = self._connection()
        raw = (conn.extra_dejson or {}).get("project") if conn is not None else None
        if raw in (None, ""):
            return None
        from isthmus.governance.projects import check_project

        return check_project(str(raw), f"isthmus connection {self.isthmus_conn_id!r} extra.project")

    def k8s_defaults(self) -> dict[str, Any]:
        """Kubernetes job options from the connection's ``extra.k8s`` (``{"image": ..., "namespace":
        ..., "service_account": ..., "env_from": [...], ...}``: the fields of
        :class:`~isthmus.k8s.K8sJobOptions`); an operator's own options win over them, and they win
        over the ``ISTHMUS_K8S_*`` environment."""
        conn = self._connection()
        extra = (conn.extra_dejson or {}).get("k8s") if conn is not None else None
        if extra is None:
            return {}
        where = f"isthmus connection {self.isthmus_conn_id!r}: extra.k8s"
        if not isinstance(extra, dict):
            raise ValueError(f"{where} must be a JSON object of Kubernetes job options, got {type(extra).__name__}")
        from isthmus.k8s.options import K8sJobOptions  # the Kubernetes options only where they are used

        unknown = sorted(set(extra) - set(K8sJobOptions.names()))
        if unknown:
            raise ValueError(
                f"{where} has unknown option(s) {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(K8sJobOptions.names())}"
            )
        return {k: v for k, v in extra.items() if v not in (None, "", [], (), {})}

    def get_conn(self) -> StepRunner:
        """A StepRunner on this connection's stores (one per process and location)."""
        return self.runner_at(self.locations(), self.isthmus_conn_id)

    @classmethod
    def runner_at(cls, locations: tuple[str, str, str], conn_id: str = default_conn_name) -> StepRunner:
        """The process's StepRunner on (store URL, artifact root, verify mode); ``conn_id`` names the
        connection they came from in errors."""
        with cls._lock:
            runner = cls._cache.get(locations)
            if runner is not None:
                return runner
            store_url, root, verify = locations
            settings = get_settings()
            try:
                metadata = MetadataStore(store_url)
            except Exception as exc:
                raise ConnectionError(
                    f"isthmus metadata store unreachable via connection {conn_id!r}: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0]}; check the connection's host, "
                    "credentials and database, or ISTHMUS_STORE_URL"
                ) from None
            artifacts = ArtifactStore(root, verify=verify, local_cache=str(settings.home / "cache"))
            runner = StepRunner(metadata, artifacts, settings)
            cls._cache[locations] = runner
            return runner

    def load(self, ref: Any) -> Any:
        """The value of an isthmus output (its ref, ref dict or JSON) from this connection's artifact
        store, verified by hash: ``isthmus.load`` for a plain ``@task`` when the store comes from the
        connection rather than from ``ISTHMUS_*`` settings."""
        return isthmus.load(ref, store=self.get_conn().artifacts)

    def test_connection(self) -> tuple[bool, str]:
        """Open the metadata store (migrating it if needed) and the artifact root."""
        try:
            runner = self.get_conn()
            runs = runner.metadata.count_runs()
            runner.artifacts.exists  # noqa: B018 - the store opened
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return (
            True,
            f"isthmus store reachable ({runner.metadata.dialect}, {runs} pipeline runs); artifacts at {runner.artifacts.root}",
        )
