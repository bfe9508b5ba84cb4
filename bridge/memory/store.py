"""Long memory in the database: a session's summary and its bookmark, the messages the history
window dropped since the last fold, and the conditional write of a new summary.

The bookmark (``summary_through_message_id``) is a *position*: the summary holds every message
whose position (``coalesce(reply_to_message_id, id)``, the conversation order the window
uses) is at most the bookmark. Positions, not ids, because a reply can be stored after the
next user message (its id is larger, its position is not): folding by id would skip that user
message for ever, or fold the reply twice. A fold takes whole positions (a message with its
replies), so the bookmark never splits one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Update,
    bindparam,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.flow.history import in_window, position_of
from bridge.store.models import MESSAGES, PARTICIPANTS, SESSIONS, UTCDateTime


@dataclass(frozen=True, slots=True, kw_only=True)
class Remembered:
    """A session's long memory as read before a fold; the fold's write is conditional on
    ``through`` and ``start`` being unchanged (a reset or another fold wins)."""

    summary: str | None
    through: int | None
    """The position bookmark: every message at or before it is in ``summary``."""
    start: int | None
    """``context_from_message_id``: where the agent's context starts (a reset moves it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Dropped:
    """One message the window no longer holds and the summary does not hold yet."""

    position: int
    role: str
    content: str
    sender_name: str | None


@cache
def _remembered() -> Select[Any]:
    s = SESSIONS.c
    return select(s.summary, s.summary_through_message_id, s.context_from_message_id).where(
        s.id == bindparam("session_id")
    )


async def read_memory(db: AsyncSession, session_id: int) -> Remembered | None:
    row = (await db.execute(_remembered(), {"session_id": session_id})).one_or_none()
    if row is None:
        return None
    return Remembered(
        summary=row.summary,
        through=row.summary_through_message_id,
        start=row.context_from_message_id,
    )


@cache
def _dropped(after_window: bool) -> Select[Any]:
    """Messages after the bookmark and before the window, oldest first.

    ``after_window``: the window is not empty, and the oldest message it holds is found the
    way the window found it (newest first, ``skip`` rows down); otherwise (the newest message
    alone was longer than ``history_chars``) everything before the answered message is out."""
    m, p = MESSAGES.c, PARTICIPANTS.c
    position = position_of(MESSAGES)
    boundary: ColumnElement[Any] = bindparam("before")
    if after_window:
        held = MESSAGES.alias("held")
        held_position = position_of(held)
        boundary = (
            select(held_position)
            .where(*in_window(held))
            .order_by(held_position.desc(), held.c.id.desc())
            .limit(1)
            .offset(bindparam("skip"))
            .scalar_subquery()
        )
    return (
        select(position.label("position"), m.role, m.content, p.display_name)
        .select_from(MESSAGES.outerjoin(PARTICIPANTS, p.id == m.sender_participant_id))
        .where(*in_window(MESSAGES), position > bindparam("after"), position < boundary)
        .order_by(position, m.id)
        .limit(bindparam("limit"))
    )


async def dropped_messages(
    db: AsyncSession,
    *,
    session_id: int,
    before_message_id: int,
    remembered: Remembered,
    window_size: int,
    limit: int,
) -> list[Dropped]:
    """Up to ``limit`` messages the window of ``window_size`` messages (as loaded for
    ``before_message_id``) dropped and the summary does not hold yet, oldest first. A range
    scan of the position index (the boundary: one more, ``window_size`` rows deep)."""
    parameters: dict[str, Any] = {
        "session_id": session_id,
        "before": before_message_id,
        "start": remembered.start or 0,
        "after": remembered.through or 0,
        "limit": limit,
    }
    if window_size:
        parameters["skip"] = window_size - 1
    rows = await db.execute(_dropped(window_size > 0), parameters)
    return [
        Dropped(
            position=row.position, role=row.role, content=row.content, sender_name=row.display_name
        )
        for row in rows
    ]


@cache
def _store() -> Update:
    s = SESSIONS.c
    return (
        update(SESSIONS)
        .where(
            s.id == bindparam("session_id"),
            s.summary_through_message_id.is_not_distinct_from(
                bindparam("was_through", type_=BigInteger())
            ),
            s.context_from_message_id.is_not_distinct_from(
                bindparam("was_start", type_=BigInteger())
            ),
        )
        .values(
            summary=bindparam("new_summary"),
            summary_through_message_id=bindparam("new_through", type_=BigInteger()),
            summary_updated_at=bindparam("now", type_=UTCDateTime()),
        )
    )


async def store_summary(
    db: AsyncSession,
    *,
    session_id: int,
    remembered: Remembered,
    summary: str,
    through: int,
    now: datetime,
) -> bool:
    """Store the new summary and bookmark, only if the session's bookmark and context start
    are still what ``remembered`` read: False when a concurrent fold or a reset came first
    (theirs stands)."""
    result = await db.execute(
        _store(),
        {
            "session_id": session_id,
            "was_through": remembered.through,
            "was_start": remembered.start,
            "new_summary": summary,
            "new_through": through,
            "now": now,
        },
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def whole_positions(rows: Sequence[Dropped], *, max_messages: int, max_chars: int) -> list[Dropped]:
    """The oldest of ``rows`` one fold takes: whole positions (a message with its replies) up
    to ``max_messages`` messages and ``max_chars`` characters. Never nothing: the first
    position is taken however long its texts are (they are cut when the fold is written),
    and at most ``max_messages`` of it. ``rows`` must hold one row more than
    ``max_messages`` when there are more, so that a position it cuts is never taken."""
    positions: list[list[Dropped]] = []
    for row in rows:
        if positions and positions[-1][0].position == row.position:
            positions[-1].append(row)
        else:
            positions.append([row])
    taken: list[Dropped] = []
    used = 0
    for position in positions:
        size = sum(len(row.content) for row in position)
        if taken and (len(taken) + len(position) > max_messages or used + size > max_chars):
            break
        taken.extend(position[:max_messages])
        used += size
    return taken
