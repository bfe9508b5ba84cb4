"""Edits, deletions and membership changes from a platform, applied to what is stored.

None of them triggers a reply. Each is one transaction through the message store, so live
clients see the change from any process.
"""

from __future__ import annotations

import logging

from sqlalchemy import or_, select, update

from bridge.infra.logs import log_event
from bridge.ports.errors import InvalidMessage
from bridge.ports.events import MAX_ID_LENGTH, ConversationChange, MessageEdit
from bridge.store.directory import AgentDirectory
from bridge.store.messages import MessageStore
from bridge.store.models import ChatMessage, ChatSession, utcnow
from bridge.store.sessions import find_or_create_session

logger = logging.getLogger(__name__)


class ChangeApplier:
    def __init__(self, *, store: MessageStore, agents: AgentDirectory) -> None:
        self._store = store
        self._agents = agents

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
        async with self._store.write() as writes:
            changed = (
                await writes.db.execute(
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
            for row in changed:
                writes.changed("message.updated", row.session_id, row.id)
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
        redelivered, replayed or late event changes nothing. Returns the session's id. Raises
        InvalidMessage (nothing stored) for a conversation id the database cannot keep."""
        if not change.external_conv_id or len(change.external_conv_id) > MAX_ID_LENGTH:
            raise InvalidMessage(
                f"external_conv_id is empty or longer than {MAX_ID_LENGTH} characters"
            )
        agent = self._agents.get(change.agent_slug)
        async with self._store.write() as writes:
            session = await find_or_create_session(
                writes.db,
                agent_id=agent.id,
                external_conv_id=change.external_conv_id,
                source_channel=change.channel,
                is_group=True,
                group_name=change.group_name,
            )
            values: dict[str, object] = {"deleted_at": None if change.present else writes.now}
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
            result = await writes.db.execute(statement.values(values))
            applied = bool(result.rowcount)  # type: ignore[attr-defined]
            if applied:
                writes.changed("session.updated", session.id, None)
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
