"""The rows of one ingest batch: which conversations the agent is in, the senders, and the
user messages themselves (with the notes of those a limit stopped).

The statements are set-based, one per kind of row for the whole batch (see
:mod:`bridge.flow.ingest`, which composes them in one transaction).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, tuple_

from bridge.access.limits import Limited, limit_error
from bridge.files.rows import attachment_rows, insert_attachments, summary
from bridge.flow.claims import ANSWER, DELIVER
from bridge.flow.outgoing import Outgoing, store_outgoing
from bridge.ports.events import InboundMessage, IngestResult, storable_text
from bridge.store.directory import AgentRecord
from bridge.store.messages import Writes, message_row, new_delivery_key
from bridge.store.models import SESSIONS, MessageState
from bridge.store.sessions import (
    Activity,
    ParticipantKey,
    SessionKey,
    SessionRef,
    find_or_create_participants,
    idle_expired,
    record_activities,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Inbound:
    """A validated message with the agents it involves (``from_agent``: a chain's sender)."""

    message: InboundMessage
    agent: AgentRecord
    from_agent: AgentRecord | None

    @property
    def session_key(self) -> SessionKey:
        return (self.agent.id, self.message.external_conv_id)

    @property
    def sender_key(self) -> ParticipantKey:
        sender = self.message.sender
        return (sender.kind, self.message.channel, sender.external_id)


async def engaged_sessions(writes: Writes, items: Sequence[Inbound]) -> set[SessionKey]:
    """Of the conversations that ``only_if_engaged`` messages need, those the agent is in."""
    wanted = {item.session_key for item in items if item.message.only_if_engaged}
    if not wanted:
        return set()
    s = SESSIONS.c
    found = await writes.db.execute(
        select(s.agent_id, s.external_conv_id).where(
            tuple_(s.agent_id, s.external_conv_id).in_(bindparam("keys", expanding=True)),
            s.deleted_at.is_(None),
        ),
        {"keys": sorted(wanted)},
    )
    return {(row.agent_id, row.external_conv_id) for row in found}


async def senders_of(writes: Writes, batch: Sequence[Inbound]) -> list[int]:
    """Each message's sender participant: the asking agent's own for a chain, else found or
    created from the sender the channel saw (its latest display name in the batch wins)."""
    wanted: dict[ParticipantKey, str | None] = {}
    for item in batch:
        if item.from_agent is None:
            name = item.message.sender.display_name
            if name or item.sender_key not in wanted:
                wanted[item.sender_key] = name
    found = await find_or_create_participants(writes.db, wanted) if wanted else {}
    return [
        item.from_agent.participant_id if item.from_agent is not None else found[item.sender_key]
        for item in batch
    ]


async def insert_messages(
    writes: Writes,
    batch: Sequence[Inbound],
    senders: Sequence[int],
    sessions: dict[SessionKey, SessionRef],
    limited: Sequence[Limited | None],
) -> list[IngestResult]:
    """The messages as *pending* (*limited* where a limit stops them), in one statement; a
    message already stored (or repeated within the batch) is a duplicate with the stored id.
    A new message's files get their ``attachments`` rows in the same transaction (a
    duplicate's are there already). Counts them on their sessions, starting an idle session's
    context afresh at its first new message."""
    rows = []
    for index, item in enumerate(batch):
        message, chain, limit = item.message, item.message.chain, limited[index]
        rows.append(
            message_row(
                session_id=sessions[item.session_key].id,
                sender_participant_id=senders[index],
                role="user",
                content=storable_text(message.text),
                channel=message.channel,
                reply_target=dict(message.reply_target),
                state=MessageState.PENDING if limit is None else MessageState.LIMITED,
                now=writes.now,
                external_message_id=message.external_message_id or None,
                attachments=[summary(a) for a in message.attachments],
                chain_origin_id=chain.origin_message_id if chain else None,
                chain_hops=chain.hops if chain else 0,
                last_error=None if limit is None else limit_error(limit.kind),
            )
        )
    ids = await writes.insert_messages(rows)
    duplicates = [
        (row["session_id"], row["external_message_id"])
        for row, message_id in zip(rows, ids, strict=True)
        if message_id is None
    ]
    existing = await writes.existing_messages(duplicates)
    await insert_attachments(
        writes.db,
        (
            row
            for item, message_id in zip(batch, ids, strict=True)
            if message_id is not None and item.message.attachments
            for row in attachment_rows(
                message_id=message_id,
                agent_id=item.agent.id,
                attachments=item.message.attachments,
                now=writes.now,
            )
        ),
    )
    activities: dict[int, Activity] = {}
    results = []
    notes: list[Outgoing] = []
    for item, row, message_id, limit in zip(batch, rows, ids, limited, strict=True):
        session_id = row["session_id"]
        if message_id is None:
            stored = existing[(session_id, row["external_message_id"])]
            results.append(IngestResult(session_id=session_id, message_id=stored, duplicate=True))
            continue
        writes.changed("message.created", session_id, message_id)
        results.append(
            IngestResult(
                session_id=session_id,
                message_id=message_id,
                duplicate=False,
                limited=None if limit is None else limit.kind,
            )
        )
        if limit is not None and limit.note:
            notes.append(_limited_note(item, row, message_id))
        earlier = activities.get(session_id)
        if earlier is None:
            ref = sessions[item.session_key]
            fresh = idle_expired(
                ref.last_message_at, item.agent.settings.idle_reset_hours, writes.now
            )
            activities[session_id] = Activity(
                session_id=session_id,
                added=1,
                inbound=True,
                group_name=item.message.group_name,
                context_from_message_id=message_id if fresh else None,
            )
        else:
            activities[session_id] = dataclasses.replace(
                earlier,
                added=earlier.added + 1,
                group_name=item.message.group_name or earlier.group_name,
            )
    if activities:
        writes.wake(ANSWER.name)
        await record_activities(writes.db, activities.values(), now=writes.now)
    if notes:
        await store_outgoing(writes, notes)
        writes.wake(DELIVER.name)
    return results


def _limited_note(item: Inbound, row: dict[str, Any], message_id: int) -> Outgoing:
    """``limited_text``, delivered like any reply (once, through the outbox) to the first
    message a limit stops in its window."""
    return Outgoing(
        session_id=row["session_id"],
        sender_participant_id=item.agent.participant_id,
        role="system",
        content=item.agent.settings.limits.limited_text,
        channel=row["channel"],
        reply_target=row["reply_target"],
        delivery_key=new_delivery_key(),
        reply_to_message_id=message_id,
    )
