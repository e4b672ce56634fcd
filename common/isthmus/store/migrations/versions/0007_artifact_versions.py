"""artifact_versions: each version of an artifact name with when a step run first and last produced it
under the name, filled from the step runs' output links and kept by a trigger on every link inserted
(whichever process writes it, an older isthmus included)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_TRIGGER = (
    "CREATE TRIGGER artifact_versions_of_links AFTER INSERT ON step_run_artifacts "
    "FOR EACH ROW WHEN NEW.role = 'output' BEGIN "
    "INSERT INTO artifact_versions (artifact_name, content_hash, first_at, last_at) "
    "SELECT NEW.artifact_name, NEW.content_hash, started_at, started_at FROM step_runs WHERE id = NEW.step_run_id "
    "ON CONFLICT (artifact_name, content_hash) DO UPDATE SET "
    "first_at = min(artifact_versions.first_at, excluded.first_at), "
    "last_at = max(artifact_versions.last_at, excluded.last_at); END"
)
_POSTGRES_FUNCTION = (
    "CREATE FUNCTION isthmus_artifact_version() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO artifact_versions (artifact_name, content_hash, first_at, last_at) "
    "SELECT NEW.artifact_name, NEW.content_hash, r.started_at, r.started_at FROM step_runs r "
    "WHERE r.id = NEW.step_run_id "
    "ON CONFLICT (artifact_name, content_hash) DO UPDATE SET "
    "first_at = LEAST(artifact_versions.first_at, excluded.first_at), "
    "last_at = GREATEST(artifact_versions.last_at, excluded.last_at); "
    "RETURN NULL; END $$"
)
_POSTGRES_TRIGGER = (
    "CREATE TRIGGER artifact_versions_of_links AFTER INSERT ON step_run_artifacts "
    "FOR EACH ROW WHEN (NEW.role = 'output') EXECUTE FUNCTION isthmus_artifact_version()"
)


def upgrade() -> None:
    op.create_table(
        "artifact_versions",
        sa.Column("artifact_name", sa.String(length=512), nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("artifact_name", "content_hash", name=op.f("pk_artifact_versions")),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_artifact_versions_artifact_name_first_at", "artifact_versions", ["artifact_name", "first_at", "content_hash"]
    )
    op.execute(
        "INSERT INTO artifact_versions (artifact_name, content_hash, first_at, last_at) "
        "SELECT l.artifact_name, l.content_hash, min(r.started_at), max(r.started_at) "
        "FROM step_run_artifacts l JOIN step_runs r ON r.id = l.step_run_id "
        "WHERE l.role = 'output' GROUP BY l.artifact_name, l.content_hash"
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(_SQLITE_TRIGGER)
    elif dialect == "postgresql":
        op.execute(_POSTGRES_FUNCTION)
        op.execute(_POSTGRES_TRIGGER)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute("DROP TRIGGER IF EXISTS artifact_versions_of_links" + (" ON step_run_artifacts" if dialect == "postgresql" else ""))
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS isthmus_artifact_version()")
    op.drop_index("ix_artifact_versions_artifact_name_first_at", table_name="artifact_versions")
    op.drop_table("artifact_versions")
