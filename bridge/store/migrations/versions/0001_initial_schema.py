"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-20 23:03:24.611468
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('participants',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('display_name', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_participants')),
    sa.UniqueConstraint('kind', 'channel', 'external_id', name=op.f('uq_participants_kind_channel_external_id'))
    )
    op.create_table('agents',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('slug', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('backend', sa.String(length=32), nullable=False),
    sa.Column('backend_options', sa.JSON(), nullable=False),
    sa.Column('system_prompt', sa.Text(), nullable=False),
    sa.Column('history_messages', sa.Integer(), nullable=False),
    sa.Column('history_chars', sa.Integer(), nullable=False),
    sa.Column('idle_reset_hours', sa.Double(), nullable=True),
    sa.Column('participant_id', BIG_ID, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], name=op.f('fk_agents_participant_id_participants'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agents')),
    sa.UniqueConstraint('slug', name=op.f('uq_agents_slug'))
    )
    op.create_table('api_tokens',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('is_admin', sa.Boolean(), nullable=False),
    sa.Column('participant_id', BIG_ID, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], name=op.f('fk_api_tokens_participant_id_participants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('name', name=op.f('uq_api_tokens_name')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_table('chat_sessions',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('agent_id', BIG_ID, nullable=False),
    sa.Column('external_conv_id', sa.String(length=255), nullable=False),
    sa.Column('source_channel', sa.String(length=32), nullable=False),
    sa.Column('title', sa.String(length=255), nullable=True),
    sa.Column('is_group', sa.Boolean(), nullable=False),
    sa.Column('group_name', sa.String(length=255), nullable=True),
    sa.Column('participant_id', BIG_ID, nullable=True),
    sa.Column('peer_agent_id', BIG_ID, nullable=True),
    sa.Column('parent_session_id', BIG_ID, nullable=True),
    sa.Column('context_from_message_id', sa.BigInteger(), nullable=True),
    sa.Column('message_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_message_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_chat_sessions_agent_id_agents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parent_session_id'], ['chat_sessions.id'], name=op.f('fk_chat_sessions_parent_session_id_chat_sessions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], name=op.f('fk_chat_sessions_participant_id_participants'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['peer_agent_id'], ['agents.id'], name=op.f('fk_chat_sessions_peer_agent_id_agents'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_sessions')),
    sa.UniqueConstraint('agent_id', 'external_conv_id', name=op.f('uq_chat_sessions_agent_id_external_conv_id'))
    )
    with op.batch_alter_table('chat_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chat_sessions_last_message_at_id'), ['last_message_at', 'id'], unique=False)

    op.create_table('chat_messages',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('session_id', BIG_ID, nullable=False),
    sa.Column('sender_participant_id', BIG_ID, nullable=True),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('external_message_id', sa.String(length=255), nullable=True),
    sa.Column('reply_to_message_id', BIG_ID, nullable=True),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('reply_target', sa.JSON(), nullable=False),
    sa.Column('attachments', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claimed_by', sa.String(length=64), nullable=True),
    sa.Column('claim_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivery_key', sa.String(length=32), nullable=True),
    sa.Column('delivery_in_doubt', sa.Boolean(), nullable=False),
    sa.Column('platform_message_ids', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['reply_to_message_id'], ['chat_messages.id'], name=op.f('fk_chat_messages_reply_to_message_id_chat_messages'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['sender_participant_id'], ['participants.id'], name=op.f('fk_chat_messages_sender_participant_id_participants'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['session_id'], ['chat_sessions.id'], name=op.f('fk_chat_messages_session_id_chat_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_messages')),
    sa.UniqueConstraint('delivery_key', name=op.f('uq_chat_messages_delivery_key')),
    sa.UniqueConstraint('session_id', 'external_message_id', name=op.f('uq_chat_messages_session_id_external_message_id'))
    )
    with op.batch_alter_table('chat_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chat_messages_claimed_by_state'), ['claimed_by', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_chat_messages_session_id_id'), ['session_id', 'id'], unique=False)
        batch_op.create_index('ix_chat_messages_session_position', ['session_id', sa.text('coalesce(reply_to_message_id, id)'), 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_chat_messages_state_next_attempt_at'), ['state', 'next_attempt_at'], unique=False)

    op.create_table('session_members',
    sa.Column('session_id', BIG_ID, nullable=False),
    sa.Column('participant_id', BIG_ID, nullable=False),
    sa.Column('joined_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], name=op.f('fk_session_members_participant_id_participants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_id'], ['chat_sessions.id'], name=op.f('fk_session_members_session_id_chat_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('session_id', 'participant_id', name=op.f('pk_session_members'))
    )


def downgrade() -> None:
    op.drop_table('session_members')
    with op.batch_alter_table('chat_messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chat_messages_state_next_attempt_at'))
        batch_op.drop_index(batch_op.f('ix_chat_messages_session_id_id'))
        batch_op.drop_index('ix_chat_messages_session_position')
        batch_op.drop_index(batch_op.f('ix_chat_messages_claimed_by_state'))

    op.drop_table('chat_messages')
    with op.batch_alter_table('chat_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chat_sessions_last_message_at_id'))

    op.drop_table('chat_sessions')
    op.drop_table('api_tokens')
    op.drop_table('agents')
    op.drop_table('participants')
