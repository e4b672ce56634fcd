"""alias history (every change of name@alias), invalidated step runs, indexes for artifact versions,
the nearest earlier run of a step, the newest runs of a pipeline and the cache entries of a step run

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("step_runs", sa.Column("invalidated_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("step_runs", sa.Column("invalidated_reason", sa.Text(), nullable=True))
    op.create_index("ix_artifacts_created_at", "artifacts", ["created_at"])
    op.create_index("ix_step_runs_step_name_started_at", "step_runs", ["step_name", "started_at"])
    op.create_index("ix_cache_entries_step_run_id", "cache_entries", ["step_run_id", "expires_at"])
    op.create_index("ix_pipeline_runs_pipeline_started_at", "pipeline_runs", ["pipeline", "started_at"])
    op.create_index(
        "ix_step_run_artifacts_versions",
        "step_run_artifacts",
        ["artifact_name", "role", "content_hash", "step_run_id"],
    )
    history = op.create_table(
        "artifact_alias_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("alias", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("from_hash", sa.String(length=80), nullable=True),
        sa.Column("to_hash", sa.String(length=80), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("user", sa.String(length=255), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("via", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifact_alias_history")),
    )
    op.create_index("ix_artifact_alias_history_name_alias", "artifact_alias_history", ["name", "alias", "id"])
    # Aliases set before this revision start their history where they point now.
    aliases = sa.table(
        "artifact_aliases",
        sa.column("name", sa.String()),
        sa.column("alias", sa.String()),
        sa.column("content_hash", sa.String()),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    rows = op.get_bind().execute(sa.select(aliases).order_by(aliases.c.name, aliases.c.alias)).mappings().all()
    if rows:
        op.bulk_insert(
            history,
            [
                {
                    "name": r["name"],
                    "alias": r["alias"],
                    "action": "set",
                    "from_hash": None,
                    "to_hash": r["content_hash"],
                    "forced": False,
                    "user": None,
                    "host": None,
                    "via": "migration",
                    "reason": "set before alias history was kept",
                    "changed_at": r["updated_at"],
                }
                for r in rows
            ],
        )


def downgrade() -> None:
    op.drop_index("ix_artifact_alias_history_name_alias", table_name="artifact_alias_history")
    op.drop_table("artifact_alias_history")
    op.drop_index("ix_step_run_artifacts_versions", table_name="step_run_artifacts")
    op.drop_index("ix_artifacts_created_at", table_name="artifacts")
    op.drop_index("ix_pipeline_runs_pipeline_started_at", table_name="pipeline_runs")
    op.drop_index("ix_cache_entries_step_run_id", table_name="cache_entries")
    op.drop_index("ix_step_runs_step_name_started_at", table_name="step_runs")
    with op.batch_alter_table("step_runs") as batch:
        batch.drop_column("invalidated_reason")
        batch.drop_column("invalidated_at")
