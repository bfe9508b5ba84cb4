"""The bounded window of history an agent sees: never the whole session."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.agents.base import HistoryMessage
from bridge.db.models import ChatMessage, Participant


async def load_history(
    db: AsyncSession,
    *,
    session_id: int,
    before_message_id: int,
    from_message_id: int | None,
    max_messages: int,
    max_chars: int,
) -> tuple[HistoryMessage, ...]:
    """The latest user and assistant messages before ``before_message_id`` in conversation
    order (:meth:`ChatMessage.position`), oldest first, at most ``max_messages`` of them and
    ``max_chars`` characters in all. Bridge notes (role ``system``: apologies, reset
    confirmations) are not the agent's words and are left out, as are deleted messages.
    One range scan of the position index, however long the session."""
    if max_messages == 0 or max_chars == 0:
        return ()
    position = ChatMessage.position()
    conditions = [
        ChatMessage.session_id == session_id,
        position < before_message_id,
        ChatMessage.role.in_(("user", "assistant")),
        ChatMessage.deleted_at.is_(None),
    ]
    if from_message_id is not None:
        conditions.append(position >= from_message_id)
    rows = (
        await db.execute(
            select(ChatMessage.role, ChatMessage.content, Participant.display_name)
            .outerjoin(Participant, Participant.id == ChatMessage.sender_participant_id)
            .where(*conditions)
            .order_by(position.desc(), ChatMessage.id.desc())
            .limit(max_messages)
        )
    ).all()
    window: list[HistoryMessage] = []
    used = 0
    for row in rows:
        used += len(row.content)
        if used > max_chars:
            break
        window.append(
            HistoryMessage(role=row.role, content=row.content, sender_name=row.display_name)
        )
    window.reverse()
    return tuple(window)
