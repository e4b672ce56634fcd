"""aliases belong to a project: ``project`` in artifact_aliases (part of its key) and in
artifact_alias_history; aliases set before this revision belong to ``default``

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 00:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT = "default"


def _project() -> sa.Column:
    return sa.Column("project", sa.String(length=255), nullable=False, server_default=DEFAULT)


def _copy_aliases(key: list[str], with_project: bool) -> None:
    """SQLite changes a primary key by copying the table: a new one keyed by ``key``, the rows, a rename."""
    columns: list[sa.schema.SchemaItem] = [
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("alias", sa.String(length=255), nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=False),
        sa.Column("step_run_id", sa.String(length=36), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]
    if with_project:
        columns.insert(0, _project())
    op.create_table("artifact_aliases_copy", *columns, sa.PrimaryKeyConstraint(*key, name="pk_artifact_aliases"))
    kept = "name, alias, content_hash, step_run_id, updated_at"
    op.execute(f"INSERT INTO artifact_aliases_copy ({kept}) SELECT {kept} FROM artifact_aliases")
    op.drop_table("artifact_aliases")
    op.rename_table("artifact_aliases_copy", "artifact_aliases")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _copy_aliases(["project", "name", "alias"], with_project=True)
    else:
        op.add_column("artifact_aliases", _project())
        op.drop_constraint("pk_artifact_aliases", "artifact_aliases", type_="primary")
        op.create_primary_key("pk_artifact_aliases", "artifact_aliases", ["project", "name", "alias"])
    # the aliases pointing at some versions (artifacts list, invalidate, gc)
    op.create_index("ix_artifact_aliases_content_hash", "artifact_aliases", ["content_hash"])
    op.add_column("artifact_alias_history", _project())
    op.drop_index("ix_artifact_alias_history_name_alias", table_name="artifact_alias_history")
    op.create_index(
        "ix_artifact_alias_history_project_name_alias", "artifact_alias_history", ["project", "name", "alias", "id"]
    )


def downgrade() -> None:
    # two projects may hold the same name@alias: only the default project's aliases survive a downgrade
    bind = op.get_bind()
    bind.execute(sa.text("DELETE FROM artifact_aliases WHERE project <> :p"), {"p": DEFAULT})
    bind.execute(sa.text("DELETE FROM artifact_alias_history WHERE project <> :p"), {"p": DEFAULT})
    op.drop_index("ix_artifact_alias_history_project_name_alias", table_name="artifact_alias_history")
    op.create_index("ix_artifact_alias_history_name_alias", "artifact_alias_history", ["name", "alias", "id"])
    with op.batch_alter_table("artifact_alias_history") as batch:
        batch.drop_column("project")
    op.drop_index("ix_artifact_aliases_content_hash", table_name="artifact_aliases")
    if bind.dialect.name == "sqlite":
        _copy_aliases(["name", "alias"], with_project=False)
    else:
        op.drop_constraint("pk_artifact_aliases", "artifact_aliases", type_="primary")
        op.drop_column("artifact_aliases", "project")
        op.create_primary_key("pk_artifact_aliases", "artifact_aliases", ["name", "alias"])
