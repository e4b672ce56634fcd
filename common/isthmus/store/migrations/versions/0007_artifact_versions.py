"""artifact_versions: each version of an artifact name with when a step run first and last produced it
under the name, filled from the step runs' output links

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


def upgrade() -> None:
    op.create_table(
        "artifact_versions",
        sa.Column("artifact_name", sa.String(length=512), nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("artifact_name", "content_hash", name=op.f("pk_artifact_versions")),
    )
    op.create_index(
        "ix_artifact_versions_artifact_name_first_at",
        "artifact_versions",
        ["artifact_name", "first_at", "content_hash"],
    )
    op.execute(
        "INSERT INTO artifact_versions (artifact_name, content_hash, first_at, last_at) "
        "SELECT l.artifact_name, l.content_hash, min(r.started_at), max(r.started_at) "
        "FROM step_run_artifacts l JOIN step_runs r ON r.id = l.step_run_id "
        "WHERE l.role = 'output' GROUP BY l.artifact_name, l.content_hash"
    )


def downgrade() -> None:
    op.drop_index("ix_artifact_versions_artifact_name_first_at", table_name="artifact_versions")
    op.drop_table("artifact_versions")
