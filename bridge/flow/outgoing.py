"""Storing messages the bridge sends: agents' replies, notes, records of asks.

One insert for all of them (through the message store), so every outgoing message carries the
same columns: its chain (origin and hops), where it goes (channel and reply target) and, when
it is to be delivered, a fresh delivery key. ``external_message_id`` makes a note idempotent:
storing it twice is a no-op that returns None.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.files.rows import attachment_rows, insert_attachments, summary
from bridge.ports.events import Attachment
from bridge.store.messages import Writes, message_row, new_delivery_key
from bridge.store.models import MessageState
from bridge.store.sessions import Activity, record_activities

__all__ = ["Outgoing", "new_delivery_key", "store_outgoing"]


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
    attachments: tuple[Attachment, ...] = ()
    """Its files (their contents already in the file store): rows written with it."""
    agent_id: int | None = None
    """The agent whose store holds the files (required with ``attachments``)."""


async def store_outgoing(writes: Writes, messages: Sequence[Outgoing]) -> list[int | None]:
    """Insert ``messages`` in one statement and count them on their sessions; each one's id,
    or None where it was already stored. Records a ``message.created`` change for each new
    one; waking the delivery workers is the caller's (not every outgoing message is sent)."""
    ids = await writes.insert_messages(
        [
            message_row(
                session_id=message.session_id,
                sender_participant_id=message.sender_participant_id,
                role=message.role,
                content=message.content,
                channel=message.channel,
                reply_target=message.reply_target,
                state=message.state,
                now=writes.now,
                external_message_id=message.external_message_id,
                reply_to_message_id=message.reply_to_message_id,
                delivery_key=message.delivery_key,
                chain_origin_id=message.chain_origin_id,
                chain_hops=message.chain_hops,
                attachments=[summary(a) for a in message.attachments] or None,
            )
            for message in messages
        ]
    )
    await insert_attachments(  # no statement when no new message carries a file
        writes.db,
        [
            row
            for message, message_id in zip(messages, ids, strict=True)
            if message_id is not None and message.attachments and message.agent_id is not None
            for row in attachment_rows(
                message_id=message_id,
                agent_id=message.agent_id,
                attachments=message.attachments,
                now=writes.now,
            )
        ],
    )
    added = Counter(
        message.session_id
        for message, message_id in zip(messages, ids, strict=True)
        if message_id is not None
    )
    await record_activities(
        writes.db,
        [
            Activity(session_id=session, added=count, inbound=False)
            for session, count in added.items()
        ],
        now=writes.now,
    )
    for message, message_id in zip(messages, ids, strict=True):
        if message_id is not None:
            writes.changed("message.created", message.session_id, message_id)
    return ids
