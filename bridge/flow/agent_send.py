"""Messages an agent posts first (``POST /api/v1/agents/{agent}/send``).

Such a message is stored in its session as the agent's own reply would be, *to deliver* with a
fresh delivery key, through :func:`~bridge.flow.outgoing.store_outgoing`: the delivery step
then sends it exactly once, with the same retries, in-doubt look-ups, failure records and
change events as any reply. Where to post is the channel's decision
(:class:`~bridge.ports.contract.PostingChannel`); nothing is stored when it cannot post there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from bridge.flow.claims import DELIVER
from bridge.flow.outgoing import Outgoing, new_delivery_key, store_outgoing
from bridge.infra.logs import log_event
from bridge.ports.contract import PostAddress, PostingChannel
from bridge.ports.errors import CannotPost
from bridge.ports.events import MAX_ID_LENGTH, Attachment, storable_text
from bridge.store.directory import AgentRecord
from bridge.store.messages import MessageStore, Writes
from bridge.store.models import MESSAGES, SESSIONS
from bridge.store.sessions import find_or_create_session

logger = logging.getLogger(__name__)

LAST_TARGET_SCAN = 20
"""Latest messages of a session read for the reply target the conversation last went with."""


class SessionDeleted(Exception):
    """The session is soft-deleted: restore it before posting to it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversation:
    """Where to post: a known session (``session_id``, with its conversation id) or a
    conversation of ``channel`` found or created by its id (and ``thread``)."""

    external_conv_id: str
    thread: str | None = None
    session_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent:
    session_id: int
    message_id: int
    created: bool
    """False: ``key`` had already stored this message (a retried request)."""


async def send_as_agent(
    store: MessageStore,
    *,
    agent: AgentRecord,
    channel: PostingChannel,
    conversation: Conversation,
    text: str,
    key: str | None,
    attachments: tuple[Attachment, ...] = (),
) -> Sent:
    """Store ``text`` as ``agent``'s message to deliver in the conversation, once per ``key``
    (``(session, key)`` is the message's unique external id). ``attachments`` (contents
    already in the file store) get their rows with the message, and only then. Raises
    CannotPost or SessionDeleted, and then nothing was stored."""
    first: PostAddress | None = None
    refusal: CannotPost | None = None
    if conversation.session_id is None:
        try:
            first = _checked(
                channel.post_address(
                    external_conv_id=conversation.external_conv_id,
                    thread=conversation.thread,
                    last_target=None,
                )
            )
        except CannotPost as error:  # a conversation the bridge knows may still be reachable
            refusal = error
    async with store.write() as writes:
        session_id, deleted = await _session(writes, agent, channel.name, conversation, first)
        if session_id is None:
            assert refusal is not None
            raise refusal
        if deleted:
            raise SessionDeleted(f"session {session_id} is deleted")
        if key is not None:
            found = await writes.existing_messages([(session_id, key)])
            if found:
                writes.roll_back()
                return Sent(
                    session_id=session_id, message_id=found[(session_id, key)], created=False
                )
        last = await _last_target(writes, session_id, channel.name)
        address = first
        if address is None or last is not None:
            address = _checked(
                channel.post_address(
                    external_conv_id=conversation.external_conv_id,
                    thread=conversation.thread,
                    last_target=last,
                )
            )
        (message_id,) = await store_outgoing(
            writes,
            [
                Outgoing(
                    session_id=session_id,
                    sender_participant_id=agent.participant_id,
                    role="assistant",
                    content=storable_text(text),
                    channel=channel.name,
                    reply_target=dict(address.reply_target),
                    delivery_key=new_delivery_key(),
                    external_message_id=key,
                    attachments=attachments,
                    agent_id=agent.id,
                )
            ],
        )
        if message_id is None:  # the same key, stored by a request racing this one
            assert key is not None
            writes.roll_back()
            found = await writes.existing_messages([(session_id, key)])
            return Sent(session_id=session_id, message_id=found[(session_id, key)], created=False)
        writes.wake(DELIVER.name)
    log_event(
        logger,
        "agent.sent",
        agent=agent.settings.slug,
        channel=channel.name,
        session=session_id,
        message=message_id,
    )
    return Sent(session_id=session_id, message_id=message_id, created=True)


def _checked(address: PostAddress) -> PostAddress:
    """The address, if the database can keep its conversation ids."""
    longest = max(len(address.external_conv_id), len(address.parent_conv_id or ""))
    if longest > MAX_ID_LENGTH:
        raise CannotPost(f"the conversation id would be longer than {MAX_ID_LENGTH} characters")
    return address


async def _session(
    writes: Writes,
    agent: AgentRecord,
    channel: str,
    conversation: Conversation,
    address: PostAddress | None,
) -> tuple[int | None, bool]:
    """The session's id and whether it is deleted: the given one, the one of the channel's
    address (found or created, race-free, under its parent for a thread), or, where the
    channel could not address the conversation on its own, one the bridge already has."""
    s = SESSIONS.c
    if conversation.session_id is not None or address is None:
        condition = (
            s.id == conversation.session_id
            if conversation.session_id is not None
            else (s.agent_id == agent.id) & (s.external_conv_id == conversation.external_conv_id)
        )
        row = (await writes.db.execute(select(s.id, s.deleted_at).where(condition))).one_or_none()
        return (None, False) if row is None else (int(row.id), row.deleted_at is not None)
    parent_id = None
    if address.parent_conv_id:
        parent = await find_or_create_session(
            writes.db,
            agent_id=agent.id,
            external_conv_id=address.parent_conv_id,
            source_channel=channel,
            is_group=address.is_group,
        )
        parent_id = parent.id
    ref = await find_or_create_session(
        writes.db,
        agent_id=agent.id,
        external_conv_id=address.external_conv_id,
        source_channel=channel,
        is_group=address.is_group,
        parent_session_id=parent_id,
    )
    return ref.id, ref.deleted


async def _last_target(writes: Writes, session_id: int, channel: str) -> Mapping[str, str] | None:
    """The reply target the session's latest message on ``channel`` went with, if any."""
    m = MESSAGES.c
    rows = await writes.db.execute(
        select(m.reply_target)
        .where(m.session_id == session_id, m.channel == channel)
        .order_by(m.id.desc())
        .limit(LAST_TARGET_SCAN)
    )
    for (target,) in rows:
        found: Any = target
        if isinstance(found, dict) and found:
            return {str(k): str(v) for k, v in found.items()}
    return None
