"""workspaces, retention and long memory

Every agent belongs to a workspace (today's agents and user tokens go into ``default``; admin
tokens stay operators, who see every workspace). ``purged_at`` marks a message whose content
retention deleted (the row stays, so counts and order hold); ``job_leases`` lets one process
at a time run the retention job. ``summary`` on a session is its long memory: the messages the
history window dropped, folded in up to ``summary_through_message_id``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _default_id() -> sa.ScalarSelect[int]:
    workspaces = sa.table("workspaces", sa.column("id", BigId), sa.column("slug"))
    return (
        sa.select(workspaces.c.id).where(workspaces.c.slug == "default").scalar_subquery()
    )


def upgrade() -> None:
    workspaces = op.create_table(
        "workspaces",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("slug", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    op.bulk_insert(workspaces, [{"slug": "default", "name": "Default", "created_at": now}])
    default_id = _default_id()

    with op.batch_alter_table("agents") as batch_op:
        batch_op.add_column(sa.Column("workspace_id", BigId, nullable=True))
    op.execute(sa.table("agents", sa.column("workspace_id")).update().values(workspace_id=default_id))
    with op.batch_alter_table("agents") as batch_op:
        batch_op.alter_column("workspace_id", existing_type=BigId, nullable=False)
        batch_op.create_foreign_key(
            "fk_agents_workspace_id_workspaces",
            "workspaces",
            ["workspace_id"],
            ["id"],
            ondelete="RESTRICT",
        )

    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.add_column(sa.Column("workspace_id", BigId, nullable=True))
        batch_op.create_foreign_key(
            "fk_api_tokens_workspace_id_workspaces",
            "workspaces",
            ["workspace_id"],
            ["id"],
            ondelete="CASCADE",
        )
    tokens = sa.table("api_tokens", sa.column("workspace_id"), sa.column("is_admin"))
    op.execute(
        tokens.update().where(tokens.c.is_admin == sa.false()).values(workspace_id=default_id)
    )

    with op.batch_alter_table("chat_sessions") as batch_op:
        batch_op.add_column(sa.Column("summary", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("summary_through_message_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("summary_updated_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("chat_messages") as batch_op:
        batch_op.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("progress", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_leases")
    with op.batch_alter_table("chat_messages") as batch_op:
        batch_op.drop_column("purged_at")
    with op.batch_alter_table("chat_sessions") as batch_op:
        batch_op.drop_column("summary_updated_at")
        batch_op.drop_column("summary_through_message_id")
        batch_op.drop_column("summary")
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.drop_constraint("fk_api_tokens_workspace_id_workspaces", type_="foreignkey")
        batch_op.drop_column("workspace_id")
    with op.batch_alter_table("agents") as batch_op:
        batch_op.drop_constraint("fk_agents_workspace_id_workspaces", type_="foreignkey")
        batch_op.drop_column("workspace_id")
    op.drop_table("workspaces")
