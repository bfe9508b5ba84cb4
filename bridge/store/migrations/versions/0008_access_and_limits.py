"""access and limits: pairing grants and codes, refusal counts, notices, token usage

Refused messages are never stored, so they are counted per hour in ``refusals``;
``access_notices`` keeps ``denied_text`` to once a day per user; ``access_grants`` and
``pairing_codes`` hold DM pairing; ``input_tokens``/``output_tokens`` on an answered message
are what answering it cost, summed by the token budgets and the usage API.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _agent() -> sa.Column[int]:
    return sa.Column(
        "agent_id",
        BigId,
        sa.ForeignKey("agents.id", ondelete="CASCADE", name=None),
        nullable=False,
    )


def upgrade() -> None:
    with op.batch_alter_table("chat_messages") as batch_op:
        batch_op.add_column(sa.Column("input_tokens", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("output_tokens", sa.Integer(), nullable=True))
    op.create_table(
        "access_grants",
        sa.Column("id", BigId, primary_key=True),
        _agent(),
        sa.Column("identity", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("agent_id", "identity"),
    )
    op.create_table(
        "pairing_codes",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("code", sa.String(16), nullable=False, unique=True),
        _agent(),
        sa.Column("identity", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("agent_id", "identity"),
    )
    op.create_table(
        "refusals",
        sa.Column("id", BigId, primary_key=True),
        _agent(),
        sa.Column("identity", sa.String(300), nullable=False),
        sa.Column("external_conv_id", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.UniqueConstraint("agent_id", "identity", "external_conv_id", "reason", "hour"),
        sa.Index(None, "agent_id", "hour"),
    )
    op.create_table(
        "access_notices",
        _agent(),
        sa.Column("identity", sa.String(300), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.PrimaryKeyConstraint("agent_id", "identity", "day"),
    )


def downgrade() -> None:
    for table in ("access_notices", "refusals", "pairing_codes", "access_grants"):
        op.drop_table(table)
    with op.batch_alter_table("chat_messages") as batch_op:
        batch_op.drop_column("output_tokens")
        batch_op.drop_column("input_tokens")
