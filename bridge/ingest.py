"""Step 2 of the flow: store one inbound message durably, in one transaction.

The unique key on ``(session_id, external_message_id)`` turns a redelivered or
double-subscribed event into a no-op. A channel acknowledges the platform only after this
returns, so an acknowledged message is never lost.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import cache
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import ReturningInsert

from bridge.chains import ChainStopped, Hop, check_budget
from bridge.claims import ANSWER
from bridge.db.engine import insert
from bridge.db.models import MESSAGES, ChatMessage, ChatSession, MessageState, utcnow
from bridge.directory import AgentDirectory, AgentRecord
from bridge.events import (
    AGENT_CHANNEL,
    ConversationChange,
    InboundMessage,
    IngestResult,
    MessageEdit,
)
from bridge.feed import FEED, record_changes
from bridge.logs import log_event
from bridge.metrics import Metrics
from bridge.sessions import (
    add_member,
    find_or_create_participant,
    find_or_create_session,
    idle_expired,
    record_activity,
)
from bridge.settings import A2ASettings
from bridge.wakeups import WorkSignals, notify_in_transaction

logger = logging.getLogger(__name__)


@cache
def insert_message_statement(dialect: str) -> ReturningInsert[Any]:
    """Built once per dialect: a redelivered message (same session and external id) is a no-op
    that returns no id."""
    return (
        insert(dialect, MESSAGES)
        .on_conflict_do_nothing(index_elements=["session_id", "external_message_id"])
        .returning(MESSAGES.c.id)
    )


class InvalidMessage(ValueError):
    """The channel built a message the core cannot store; nothing was stored."""


MAX_ID_LENGTH = 255


def storable_text(text: str) -> str:
    """What every database can store: no NUL (PostgreSQL refuses it), no lone surrogates."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _validate(message: InboundMessage) -> None:
    for name in ("channel", "agent_slug", "external_conv_id"):
        if not getattr(message, name):
            raise InvalidMessage(f"{name} is empty")
    if not message.sender.external_id:
        raise InvalidMessage("sender.external_id is empty")
    for name, value in (
        ("external_conv_id", message.external_conv_id),
        ("parent_conv_id", message.parent_conv_id or ""),
        ("external_message_id", message.external_message_id),
        ("sender.external_id", message.sender.external_id),
    ):
        if len(value) > MAX_ID_LENGTH:
            raise InvalidMessage(f"{name} is longer than {MAX_ID_LENGTH} characters")
    if not message.text.strip() and not message.attachments:
        raise InvalidMessage("the message has neither text nor attachments")


class Ingestor:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        agents: AgentDirectory,
        signals: WorkSignals,
        metrics: Metrics,
        budget: A2ASettings,
    ) -> None:
        self._sessions = sessions
        self._budget = budget
        self._agents = agents
        self._signals = signals
        self._metrics = metrics

    async def __call__(self, message: InboundMessage) -> IngestResult:
        _validate(message)
        agent = self._agents.get(message.agent_slug)
        now = utcnow()
        async with self._sessions() as db, db.begin() as transaction:
            if message.only_if_engaged and not await _conversation_exists(
                db, agent_id=agent.id, external_conv_id=message.external_conv_id
            ):
                log_event(
                    logger,
                    "message.not_for_agent",
                    channel=message.channel,
                    agent=message.agent_slug,
                    conversation=message.external_conv_id,
                )
                return IngestResult(session_id=0, message_id=0, duplicate=False, ignored=True)
            sender = None if message.chain is None else self._agents.get(message.chain.from_agent)
            sender_id = (
                sender.participant_id
                if sender is not None
                else await find_or_create_participant(
                    db,
                    kind=message.sender.kind,
                    channel=message.channel,
                    external_id=message.sender.external_id,
                    display_name=message.sender.display_name,
                )
            )
            parent_id = None
            if message.parent_conv_id:
                parent = await find_or_create_session(
                    db,
                    agent_id=agent.id,
                    external_conv_id=message.parent_conv_id,
                    source_channel=message.channel,
                    is_group=message.is_group,
                    group_name=message.group_name,
                )
                parent_id = parent.id
            # A direct ask (channel ``agent``) is a session with the asking agent as its peer.
            peer = sender if message.channel == AGENT_CHANNEL else None
            session = await find_or_create_session(
                db,
                agent_id=agent.id,
                external_conv_id=message.external_conv_id,
                source_channel=message.channel,
                is_group=message.is_group,
                group_name=message.group_name,
                title=message.title,
                participant_id=None if message.is_group else sender_id,
                peer_agent_id=peer.id if peer is not None else None,
                parent_session_id=parent_id,
            )
            if sender is not None and message.chain is not None:
                existing = await _existing_message(db, session.id, message.external_message_id)
                if existing is None:
                    await self._check_chain(db, message, sender=sender, target=agent)
            await add_member(db, session_id=session.id, participant_id=sender_id)
            chain = message.chain
            message_id = (
                await db.execute(
                    insert_message_statement(db.get_bind().dialect.name),
                    {
                        "session_id": session.id,
                        "sender_participant_id": sender_id,
                        "role": "user",
                        "content": storable_text(message.text),
                        "external_message_id": message.external_message_id or None,
                        "channel": message.channel,
                        "reply_target": dict(message.reply_target),
                        "attachments": [asdict(a) for a in message.attachments],
                        "state": MessageState.PENDING,
                        "attempts": 0,
                        "delivery_in_doubt": False,
                        "platform_message_ids": [],
                        "chain_origin_id": chain.origin_message_id if chain else None,
                        "chain_hops": chain.hops if chain else 0,
                        "created_at": now,
                        "updated_at": now,
                    },
                )
            ).scalar_one_or_none()
            if message_id is None:
                existing = await _existing_message(db, session.id, message.external_message_id)
                assert existing is not None
                await transaction.rollback()
                self._metrics.duplicates.labels(message.channel).inc()
                log_event(
                    logger,
                    "message.duplicate",
                    channel=message.channel,
                    session=session.id,
                    message=existing,
                    external_id=message.external_message_id,
                )
                return IngestResult(session_id=session.id, message_id=existing, duplicate=True)
            fresh_context = idle_expired(
                session.last_message_at, agent.settings.idle_reset_hours, now
            )
            await record_activity(
                db,
                session_id=session.id,
                group_name=message.group_name,
                now=now,
                inbound=True,
                context_from_message_id=message_id if fresh_context else None,
            )
            await record_changes(db, [("message.created", session.id, message_id)])
            await notify_in_transaction(db, ANSWER.name)
        self._signals.wake(ANSWER.name)
        self._signals.wake(FEED)
        self._metrics.ingested.labels(message.channel).inc()
        if message.chain is not None:
            self._metrics.a2a_messages.labels(message.channel).inc()
        log_event(
            logger,
            "message.ingested",
            channel=message.channel,
            agent=message.agent_slug,
            session=session.id,
            message=message_id,
            conversation=message.external_conv_id,
            idle_reset=fresh_context,
            from_agent=message.chain.from_agent if message.chain else None,
            hops=message.chain.hops if message.chain else None,
        )
        return IngestResult(session_id=session.id, message_id=message_id, duplicate=False)

    async def _check_chain(
        self, db: AsyncSession, message: InboundMessage, *, sender: AgentRecord, target: AgentRecord
    ) -> None:
        """Raise ChainStopped (counted and logged) when the budgets forbid this hop."""
        assert message.chain is not None
        hop = Hop(
            sender=sender,
            target=target,
            origin_message_id=message.chain.origin_message_id,
            hops=message.chain.hops,
            text=storable_text(message.text),
        )
        try:
            await check_budget(db, hop, self._budget)
        except ChainStopped as stopped:
            self._metrics.a2a_stopped.labels(stopped.reason).inc()
            log_event(
                logger,
                "chain.stopped",
                level=logging.WARNING,
                channel=message.channel,
                from_agent=sender.settings.slug,
                agent=target.settings.slug,
                conversation=message.external_conv_id,
                hops=message.chain.hops,
                reason=stopped.reason,
            )
            raise

    async def apply_edit(self, edit: MessageEdit) -> bool:
        """Bring a stored user message up to date with an edit or deletion on the platform.
        No reply is triggered. Returns False when the bridge never stored that message."""
        agent = self._agents.get(edit.agent_slug)
        now = utcnow()
        values: dict[str, object] = (
            {"deleted_at": now, "updated_at": now}
            if edit.text is None
            else {"content": edit.text, "edited_at": now, "updated_at": now}
        )
        in_session = select(ChatSession.id).where(ChatSession.agent_id == agent.id)
        in_session = in_session.where(
            ChatSession.source_channel == edit.channel
            if edit.external_conv_id is None
            else ChatSession.external_conv_id == edit.external_conv_id
        )
        async with self._sessions() as db, db.begin():
            changed = (
                await db.execute(
                    update(ChatMessage)
                    .where(
                        ChatMessage.session_id.in_(in_session.scalar_subquery()),
                        ChatMessage.external_message_id == edit.external_message_id,
                        ChatMessage.role == "user",
                    )
                    .values(**values)
                    .returning(ChatMessage.session_id, ChatMessage.id)
                )
            ).all()
            if changed:
                await record_changes(
                    db, [("message.updated", row.session_id, row.id) for row in changed]
                )
        if changed:
            self._signals.wake(FEED)
        found = bool(changed)
        log_event(
            logger,
            "message.deleted" if edit.text is None else "message.edited",
            channel=edit.channel,
            agent=edit.agent_slug,
            conversation=edit.external_conv_id,
            external_id=edit.external_message_id,
            found=found,
        )
        return found

    async def apply_conversation(self, change: ConversationChange) -> int:
        """Create (or revive) the group session when the agent joins; mark it deleted when the
        agent leaves. Idempotent and order-safe: with ``changed_at``, the row changes only if
        no newer (or same) membership change was applied, in the same statement, so a
        redelivered, replayed or late event changes nothing. Returns the session's id."""
        agent = self._agents.get(change.agent_slug)
        now = utcnow()
        async with self._sessions() as db, db.begin():
            session = await find_or_create_session(
                db,
                agent_id=agent.id,
                external_conv_id=change.external_conv_id,
                source_channel=change.channel,
                is_group=True,
                group_name=change.group_name,
            )
            values: dict[str, object] = {"deleted_at": None if change.present else now}
            if change.group_name:
                values["group_name"] = change.group_name
            statement = update(ChatSession).where(ChatSession.id == session.id)
            if change.changed_at is not None:
                values["membership_changed_at"] = change.changed_at
                statement = statement.where(
                    or_(
                        ChatSession.membership_changed_at.is_(None),
                        ChatSession.membership_changed_at < change.changed_at,
                    )
                )
            result = await db.execute(statement.values(values))
            applied = bool(result.rowcount)  # type: ignore[attr-defined]
            if applied:
                await record_changes(db, [("session.updated", session.id, None)])
        if applied:
            self._signals.wake(FEED)
        log_event(
            logger,
            "conversation.joined" if change.present else "conversation.left",
            channel=change.channel,
            agent=change.agent_slug,
            session=session.id,
            conversation=change.external_conv_id,
            applied=applied,
        )
        return session.id


async def _existing_message(
    db: AsyncSession, session_id: int, external_message_id: str
) -> int | None:
    found = await db.execute(
        select(ChatMessage.id).where(
            ChatMessage.session_id == session_id,
            ChatMessage.external_message_id == external_message_id,
        )
    )
    return found.scalar_one_or_none()


async def _conversation_exists(db: AsyncSession, *, agent_id: int, external_conv_id: str) -> bool:
    found = await db.execute(
        select(ChatSession.id).where(
            ChatSession.agent_id == agent_id,
            ChatSession.external_conv_id == external_conv_id,
            ChatSession.deleted_at.is_(None),
        )
    )
    return found.first() is not None
