"""The bounded window of history an agent sees: never the whole session."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    FromClause,
    Integer,
    Select,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.agents.base import HistoryMessage
from bridge.store.models import MESSAGES, PARTICIPANTS, MessageState


def position_of(table: FromClause) -> ColumnElement[Any]:
    """Conversation order: a reply right after what it answers (an index matches it)."""
    return func.coalesce(table.c.reply_to_message_id, table.c.id)


def in_window(table: FromClause) -> tuple[ColumnElement[bool], ...]:
    """What a window may hold: the session's user and assistant messages from the context start
    to before the message answered, without those deleted, limited or purged. Bound by
    ``session_id``, ``start`` and ``before``; long memory folds by the same rule."""
    m, position = table.c, position_of(table)
    return (
        m.session_id == bindparam("session_id"),
        position < bindparam("before"),
        position >= bindparam("start"),
        m.role.in_(("user", "assistant")),
        m.state != MessageState.LIMITED,
        m.deleted_at.is_(None),
        m.purged_at.is_(None),
    )


@cache
def _window() -> Select[Any]:
    """Built once; the position expression matches the index on it exactly."""
    m, p = MESSAGES.c, PARTICIPANTS.c
    position = position_of(MESSAGES)
    return (
        select(m.role, m.content, p.display_name)
        .select_from(MESSAGES.outerjoin(PARTICIPANTS, p.id == m.sender_participant_id))
        .where(*in_window(MESSAGES))
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
    and are left out, as are deleted messages, those a limit stopped and those whose content
    retention deleted.
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
    return _oldest_first(rows, max_chars)


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """The history one claimed message needs (see :func:`load_history`)."""

    message_id: int
    session_id: int
    from_message_id: int | None
    max_messages: int
    max_chars: int


_LATERAL = text(
    """
    SELECT b.message_id, h.role, h.content, h.display_name
    FROM unnest(:message_ids, :session_ids, :starts, :limits)
        AS b(message_id, session_id, start_id, max_rows)
    CROSS JOIN LATERAL (
        SELECT m.role, m.content, p.display_name,
               coalesce(m.reply_to_message_id, m.id) AS position, m.id
        FROM chat_messages AS m
        LEFT OUTER JOIN participants AS p ON p.id = m.sender_participant_id
        WHERE m.session_id = b.session_id
          AND coalesce(m.reply_to_message_id, m.id) < b.message_id
          AND coalesce(m.reply_to_message_id, m.id) >= b.start_id
          AND m.role IN ('user', 'assistant')
          AND m.state <> 'limited'
          AND m.deleted_at IS NULL
          AND m.purged_at IS NULL
        ORDER BY coalesce(m.reply_to_message_id, m.id) DESC, m.id DESC
        LIMIT b.max_rows
    ) AS h
    ORDER BY b.message_id, h.position DESC, h.id DESC
    """
).bindparams(
    bindparam("message_ids", type_=ARRAY(BigInteger())),
    bindparam("session_ids", type_=ARRAY(BigInteger())),
    bindparam("starts", type_=ARRAY(BigInteger())),
    bindparam("limits", type_=ARRAY(Integer())),
)


def _oldest_first(rows: Iterable[Any], max_chars: int) -> tuple[HistoryMessage, ...]:
    """Newest-first rows cut at ``max_chars`` characters in all, returned oldest first."""
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


async def load_histories(
    db: AsyncSession, windows: Sequence[Window]
) -> dict[int, tuple[HistoryMessage, ...]]:
    """The history of each window, by message id: on PostgreSQL one statement for the whole
    batch (a ``LATERAL`` range scan of the position index per message); SQLite, local and
    without ``LATERAL``, runs one query per window on the same connection."""
    wanted = [w for w in windows if w.max_messages > 0 and w.max_chars > 0]
    histories: dict[int, tuple[HistoryMessage, ...]] = {w.message_id: () for w in windows}
    if not wanted:
        return histories
    if db.get_bind().dialect.name != "postgresql":
        for w in wanted:
            histories[w.message_id] = await load_history(
                db,
                session_id=w.session_id,
                before_message_id=w.message_id,
                from_message_id=w.from_message_id,
                max_messages=w.max_messages,
                max_chars=w.max_chars,
            )
        return histories
    rows = await db.execute(
        _LATERAL,
        {
            "message_ids": [w.message_id for w in wanted],
            "session_ids": [w.session_id for w in wanted],
            "starts": [w.from_message_id or 0 for w in wanted],
            "limits": [w.max_messages for w in wanted],
        },
    )
    by_message: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        by_message[row.message_id].append(row)
    for w in wanted:
        histories[w.message_id] = _oldest_first(by_message[w.message_id], w.max_chars)
    return histories
