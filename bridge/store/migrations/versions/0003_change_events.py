"""change events for live clients

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("session_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_events")),
        # Clients resume from these ids: SQLite must never reuse a pruned one.
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_change_events_created_at"), "change_events", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_change_events_created_at"), table_name="change_events")
    op.drop_table("change_events")
