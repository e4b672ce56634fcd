"""Table definitions (SQLAlchemy Core). Change them only together with a new alembic revision."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(36)
HASH = String(80)

pipeline_runs = Table(
    "pipeline_runs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("pipeline", String(255), nullable=False),
    Column("orchestrator", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("params", JSON, nullable=False),
    Column("context", JSON, nullable=False),
    Column("user", String(255)),
    Column("host", String(255)),
    Column("environment_hash", HASH),
    Column("outputs", JSON),
    Column("error", Text),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("project", String(255)),  # ISTHMUS_PROJECT or the Flyte project; None reads as "default" (0005)
    Index("ix_pipeline_runs_started_at", "started_at"),
    Index("ix_pipeline_runs_pipeline", "pipeline"),
    # the newest runs of a pipeline (diff --last), from the index (revision 0004)
    Index("ix_pipeline_runs_pipeline_started_at", "pipeline", "started_at"),
    # the runs list of one project, newest first (revision 0005)
    Index("ix_pipeline_runs_project_started_at", "project", "started_at"),
)

step_runs = Table(
    "step_runs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("pipeline_run_id", ID, ForeignKey("pipeline_runs.id", ondelete="CASCADE")),
    Column("invocation", String(255), nullable=False),
    Column("step_name", String(255), nullable=False),
    Column("step_path", String(1024), nullable=False),
    Column("orchestrator", String(32), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("traceback", Text),
    Column("code_hash", HASH),
    Column("deps_hash", HASH),
    Column("deps", JSON),
    Column("environment_hash", HASH),
    Column("params", JSON, nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("outputs", JSON),
    Column("cache_key", HASH),
    Column("cache_hit", Boolean, nullable=False),
    Column("source_step_run_id", ID),
    Column("resources", JSON),
    Column("context", JSON, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("duration_ms", Float),
    Column("metadata", JSON),  # what the step logged (isthmus.log_metadata), revision 0003
    Column("invalidated_at", DateTime(timezone=True)),  # derived from a bad artifact (isthmus invalidate), 0004
    Column("invalidated_reason", Text),
    Index("ix_step_runs_pipeline_run_id", "pipeline_run_id"),
    Index("ix_step_runs_cache_key", "cache_key"),
    Index("ix_step_runs_step_name", "step_name"),
    # the nearest earlier run of a step (isthmus why), newest first from the index (revision 0004)
    Index("ix_step_runs_step_name_started_at", "step_name", "started_at"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("content_hash", HASH, primary_key=True),
    Column("uri", String(2048), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("materializer", String(255), nullable=False),
    Column("python_type", String(1024), nullable=False),
    Column("metadata", JSON),
    Column("producer_step_run_id", ID),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_artifacts_created_at", "created_at"),
)

step_run_artifacts = Table(
    "step_run_artifacts",
    metadata,
    Column("step_run_id", ID, ForeignKey("step_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(8), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("content_hash", HASH, nullable=False),
    Column("artifact_name", String(512), nullable=False),
    Index("ix_step_run_artifacts_content_hash", "content_hash"),
    Index("ix_step_run_artifacts_artifact_name", "artifact_name"),
    # the versions of a name, from the index alone (revision 0004)
    Index("ix_step_run_artifacts_versions", "artifact_name", "role", "content_hash", "step_run_id"),
)

# Each version of an artifact name: when a step run first and last produced (or reused) it under the
# name — min and max of those step runs' started_at, kept by a trigger on step_run_artifacts in the
# transaction that links them, whoever writes the link (revision 0007). NAME~N and a name's version list
# read the newest from the index, not every link of the name.
artifact_versions = Table(
    "artifact_versions",
    metadata,
    Column("artifact_name", String(512), primary_key=True),
    Column("content_hash", HASH, primary_key=True),
    Column("first_at", DateTime(timezone=True), nullable=False),
    Column("last_at", DateTime(timezone=True), nullable=False),
    Index("ix_artifact_versions_artifact_name_first_at", "artifact_name", "first_at", "content_hash"),
    sqlite_with_rowid=False,  # rows kept in the key's b-tree: one b-tree fewer to write per step run
)

artifact_aliases = Table(
    "artifact_aliases",
    metadata,
    # name@alias within a project: two projects' "train.output@production" are two aliases (revision 0006)
    Column("project", String(255), primary_key=True, server_default="default"),
    Column("name", String(512), primary_key=True),
    Column("alias", String(255), primary_key=True),
    Column("content_hash", HASH, nullable=False),
    Column("step_run_id", ID),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_artifact_aliases_content_hash", "content_hash"),
)

artifact_alias_history = Table(
    "artifact_alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(512), nullable=False),
    Column("alias", String(255), nullable=False),
    Column("action", String(16), nullable=False),  # "set" or "rollback"
    Column("from_hash", HASH),
    Column("to_hash", HASH, nullable=False),
    Column("forced", Boolean, nullable=False),
    Column("user", String(255)),
    Column("host", String(255)),
    Column("via", String(32), nullable=False),  # "cli", "api" or an orchestrator
    Column("reason", Text),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("project", String(255), nullable=False, server_default="default"),  # revision 0006 (added last)
    # the history of one alias of one project, in order (revision 0006)
    Index("ix_artifact_alias_history_project_name_alias", "project", "name", "alias", "id"),
)

role_grants = Table(
    "role_grants",
    metadata,
    # a person's role in a project ("*": every project) (revision 0005)
    Column("principal", String(255), primary_key=True),
    Column("project", String(255), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("granted_by", String(255)),
    Column("granted_at", DateTime(timezone=True), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    # API tokens, stored as a salted hash (the token itself is shown once, never stored) (revision 0005)
    Column("id", String(16), primary_key=True),  # the public part of the token: isthmus_<id>_<secret>
    Column("secret_hash", String(128), nullable=False),
    Column("principal", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("project", String(255)),  # None: every project
    Column("created_by", String(255)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

audit_log = Table(
    "audit_log",
    metadata,
    # every mutating action, append-only (triggers refuse UPDATE and DELETE) (revision 0005)
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("role", String(16)),
    Column("via", String(32), nullable=False),  # "cli", "ui", "api", "airflow"
    Column("origin", String(255)),  # from where: a host name or a client address
    Column("action", String(64), nullable=False),
    Column("target", Text),
    Column("project", String(255)),
    Column("details", JSON),
    Index("ix_audit_log_at", "at"),
)

code_snapshots = Table(
    "code_snapshots",
    metadata,
    Column("hash", HASH, primary_key=True),
    Column("components", JSON, nullable=False),
    Column("sources", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

environments = Table(
    "environments",
    metadata,
    Column("hash", HASH, primary_key=True),
    Column("data", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

cache_entries = Table(
    "cache_entries",
    metadata,
    Column("cache_key", HASH, primary_key=True),
    Column("step_run_id", ID, ForeignKey("step_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("step_name", String(255), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    # the live entries of a step run, from the index alone (gc, cascading deletes) (revision 0004)
    Index("ix_cache_entries_step_run_id", "step_run_id", "expires_at"),
)

cache_leases = Table(
    "cache_leases",
    metadata,
    Column("cache_key", HASH, primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)


# one random secret per store, and later store-wide settings (revision 0002; read and written with text SQL)
store_settings = Table(
    "store_settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

AUDIT_APPEND_ONLY = "audit log is append-only"
SQLITE_AUDIT_TRIGGERS = tuple(
    f"CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
    f"BEGIN SELECT RAISE(ABORT, '{AUDIT_APPEND_ONLY}'); END"
    for event in ("UPDATE", "DELETE")
)
"""The SQLite triggers that keep ``audit_log`` append-only (revision 0005 creates the same)."""

SQLITE_VERSIONS_TRIGGER = (
    "CREATE TRIGGER artifact_versions_of_links AFTER INSERT ON step_run_artifacts "
    "FOR EACH ROW WHEN NEW.role = 'output' BEGIN "
    "INSERT INTO artifact_versions (artifact_name, content_hash, first_at, last_at) "
    "SELECT NEW.artifact_name, NEW.content_hash, started_at, started_at FROM step_runs WHERE id = NEW.step_run_id "
    "ON CONFLICT (artifact_name, content_hash) DO UPDATE SET "
    "first_at = min(artifact_versions.first_at, excluded.first_at), "
    "last_at = max(artifact_versions.last_at, excluded.last_at); END"
)
"""The SQLite trigger that keeps ``artifact_versions`` with every output link inserted: a new version, or
its first and last production widened (revision 0007 creates the same; PostgreSQL runs a function)."""
