"""work queues: partial indexes over the unfinished messages of each kind of work

They replace the indexes on (state, next_attempt_at) and (claimed_by, state): every state
change of a message wrote to those, and the queue indexes serve their queries.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

QUEUES = {"answer": ("pending", "answering"), "deliver": ("to_deliver", "delivering")}


def upgrade() -> None:
    with op.batch_alter_table("chat_messages") as batch_op:
        batch_op.drop_index("ix_chat_messages_state_next_attempt_at")
        batch_op.drop_index("ix_chat_messages_claimed_by_state")
    for kind, (waiting, working) in QUEUES.items():
        where = sa.text(f"state IN ('{waiting}', '{working}')")
        for suffix, columns in (("queue", ["id"]), ("session_queue", ["session_id", "id"])):
            op.create_index(
                f"ix_chat_messages_{kind}_{suffix}",
                "chat_messages",
                columns,
                postgresql_where=where,
                sqlite_where=where,
            )


def downgrade() -> None:
    for kind in QUEUES:
        for suffix in ("queue", "session_queue"):
            op.drop_index(f"ix_chat_messages_{kind}_{suffix}", table_name="chat_messages")
    with op.batch_alter_table("chat_messages") as batch_op:
        batch_op.create_index(
            "ix_chat_messages_state_next_attempt_at", ["state", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "ix_chat_messages_claimed_by_state", ["claimed_by", "state"], unique=False
        )
