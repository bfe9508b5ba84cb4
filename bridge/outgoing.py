"""Storing a message the bridge sends: an agent's reply, a note, a record of an ask.

One insert for all of them, so every outgoing message carries the same columns: its chain
(origin and hops), where it goes (channel and reply target) and, when it is to be delivered,
a fresh delivery key. ``external_message_id`` makes a note idempotent: storing it twice is a
no-op that returns None.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bridge.db.models import MessageState
from bridge.ingest import insert_message_statement
from bridge.sessions import record_activity


def new_delivery_key() -> str:
    """Stable id of one reply's delivery; 24 characters fit Discord's 25-character nonce."""
    return secrets.token_hex(12)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    session_id: int
    sender_participant_id: int | None
    role: str
    content: str
    channel: str
    reply_target: dict[str, str]
    state: str = MessageState.TO_DELIVER
    delivery_key: str | None = None
    reply_to_message_id: int | None = None
    chain_origin_id: int | None = None
    chain_hops: int = 0
    external_message_id: str | None = None


async def store_outgoing(db: AsyncSession, message: Outgoing, *, now: datetime) -> int | None:
    """Insert ``message`` and count it on its session; None if it was already stored."""
    stored: int | None = (
        await db.execute(
            insert_message_statement(db.get_bind().dialect.name),
            {
                "session_id": message.session_id,
                "sender_participant_id": message.sender_participant_id,
                "role": message.role,
                "content": message.content,
                "external_message_id": message.external_message_id,
                "reply_to_message_id": message.reply_to_message_id,
                "channel": message.channel,
                "reply_target": message.reply_target,
                "attachments": [],
                "state": message.state,
                "attempts": 0,
                "delivery_key": message.delivery_key,
                "delivery_in_doubt": False,
                "platform_message_ids": [],
                "chain_origin_id": message.chain_origin_id,
                "chain_hops": message.chain_hops,
                "created_at": now,
                "updated_at": now,
            },
        )
    ).scalar_one_or_none()
    if stored is not None:
        await record_activity(
            db, session_id=message.session_id, group_name=None, now=now, inbound=False
        )
    return stored
