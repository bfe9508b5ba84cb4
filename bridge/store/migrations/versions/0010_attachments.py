"""attachments: the files a message carries, their content in the file store

One row per file of a message, in order: metadata (name, type, size), the SHA-256 and the file
store key once the content is stored (once per hash per agent), and the state of fetching it
(``pending``, ``stored``, ``refused``, ``failed`` with a reason). ``source`` is the channel's own
note of where to fetch it; ``platform_file_id`` the platform's id of an upload sent out.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    op.create_table(
        "attachments",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "message_id",
            BigId,
            sa.ForeignKey("chat_messages.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("agent_id", BigId, sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("storage_key", sa.String(300), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("source", sa.JSON(), nullable=False),
        sa.Column("platform_file_id", sa.String(255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("message_id", "position"),
        sa.Index(None, "agent_id", "sha256"),
        sa.Index("ix_attachments_pending", "id", postgresql_where=PENDING, sqlite_where=PENDING),
    )


def downgrade() -> None:
    op.drop_table("attachments")
