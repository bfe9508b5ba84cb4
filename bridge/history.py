"""The bounded window of history an agent sees: never the whole session."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.agents.base import HistoryMessage
from bridge.db.models import MESSAGES, PARTICIPANTS


@cache
def _window() -> Select[Any]:
    """Built once; the position expression matches the index on it exactly."""
    m, p = MESSAGES.c, PARTICIPANTS.c
    position = func.coalesce(m.reply_to_message_id, m.id)
    return (
        select(m.role, m.content, p.display_name)
        .select_from(MESSAGES.outerjoin(PARTICIPANTS, p.id == m.sender_participant_id))
        .where(
            m.session_id == bindparam("session_id"),
            position < bindparam("before"),
            position >= bindparam("start"),
            m.role.in_(("user", "assistant")),
            m.deleted_at.is_(None),
        )
        .order_by(position.desc(), m.id.desc())
        .limit(bindparam("limit"))
    )


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
    order (a reply right after what it answers: ``coalesce(reply_to_message_id, id)``),
    oldest first, at most ``max_messages`` of them and ``max_chars`` characters in all.
    Bridge notes (role ``system``: apologies, reset confirmations) are not the agent's words
    and are left out, as are deleted messages.
    One range scan of the position index, however long the session."""
    if max_messages == 0 or max_chars == 0:
        return ()
    rows = (
        await db.execute(
            _window(),
            {
                "session_id": session_id,
                "before": before_message_id,
                "start": from_message_id or 0,
                "limit": max_messages,
            },
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
