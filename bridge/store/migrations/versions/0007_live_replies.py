"""live replies: the key a message's reply will be delivered with, and its live messages

``reply_key`` is chosen when a message to answer is stored, so a reply shown while it is
written (a streamed message on the platform) already carries the key its final delivery will
use. ``live_message_ids`` records the platform messages a streamed reply has started, so a
process that takes the work over after a crash finishes those instead of posting again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chat_messages") as batch_op:
        batch_op.add_column(sa.Column("reply_key", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("live_message_ids", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chat_messages") as batch_op:
        batch_op.drop_column("live_message_ids")
        batch_op.drop_column("reply_key")
