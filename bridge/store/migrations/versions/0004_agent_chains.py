"""agent-to-agent chains: origin and hop count on every message

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chat_messages") as batch_op:
        batch_op.add_column(sa.Column("chain_origin_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("chain_hops", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_index(
        op.f("ix_chat_messages_chain_origin_id"), "chat_messages", ["chain_origin_id"]
    )
    op.create_index(
        op.f("ix_chat_messages_sender_participant_id_created_at"),
        "chat_messages",
        ["sender_participant_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_chat_messages_sender_participant_id_created_at"), table_name="chat_messages"
    )
    op.drop_index(op.f("ix_chat_messages_chain_origin_id"), table_name="chat_messages")
    with op.batch_alter_table("chat_messages") as batch_op:
        batch_op.drop_column("chain_hops")
        batch_op.drop_column("chain_origin_id")
