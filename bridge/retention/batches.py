"""One batch of retention work, each in the caller's (short) transaction.

Messages are scanned by primary key from a bookmark, so retention needs no index of its own on
the hot insert path; sessions by their ``(last_message_at, id)`` index. Rows are locked in id
order, the order every other writer keeps, and each statement checks again what the scan saw,
so a row changed meanwhile is left alone and none is changed twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select, update

from bridge.store.messages import Writes
from bridge.store.models import MESSAGES, SESSIONS, MessageState

UNFINISHED = (
    MessageState.PENDING,
    MessageState.ANSWERING,
    MessageState.TO_DELIVER,
    MessageState.DELIVERING,
)
"""Work still to do on these: their content is needed, and they stop the scan for this run."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageBatch:
    purged: int
    bookmark: int
    """The last message id looked at: the next batch starts after it."""
    done: bool
    """Nothing more to purge in this run (a newer or unfinished message, or the end)."""


async def purge_messages(
    writes: Writes, *, after: int, cutoff: datetime, limit: int
) -> MessageBatch:
    """Turn finished messages created before ``cutoff`` into tombstones, from id ``after`` on,
    up to ``limit`` of them: content, attachments and error gone, ``purged_at`` set; the row
    (its session, role, order, state) stays."""
    m = MESSAGES.c
    scanned = (
        await writes.db.execute(
            select(m.id, m.created_at, m.state).where(m.id > after).order_by(m.id).limit(limit)
        )
    ).all()
    bookmark, done = after, len(scanned) < limit
    for row in scanned:
        if row.created_at >= cutoff or row.state in UNFINISHED:
            done = True
            break
        bookmark = row.id
    if bookmark == after:
        return MessageBatch(purged=0, bookmark=after, done=done)
    still = and_(
        m.id > after,
        m.id <= bookmark,
        m.purged_at.is_(None),
        m.created_at < cutoff,
        m.state.not_in(UNFINISHED),
    )
    locked = select(m.id).where(still).order_by(m.id).with_for_update()
    purged = (
        await writes.db.execute(
            update(MESSAGES)
            .where(m.id.in_(locked), still)
            .values(
                content="",
                attachments=[],
                last_error=None,
                purged_at=writes.now,
                updated_at=writes.now,
            )
            .returning(m.id, m.session_id)
        )
    ).all()
    for row in purged:
        writes.changed("message.updated", row.session_id, row.id)
    return MessageBatch(purged=len(purged), bookmark=bookmark, done=done)


SessionKey = tuple[datetime, int]
"""``(last_message_at, id)``: where the scan of idle sessions is."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionBatch:
    archived: int
    last: SessionKey | None
    done: bool


async def archive_sessions(
    writes: Writes, *, after: SessionKey | None, cutoff: datetime, limit: int
) -> SessionBatch:
    """Soft-delete up to ``limit`` sessions without a message since ``cutoff``, scanning from
    ``after``. A session that got a message meanwhile is left as it is (and a message to an
    archived session revives it, as for any soft-deleted one)."""
    s = SESSIONS.c
    idle = and_(s.deleted_at.is_(None), s.last_message_at < cutoff)
    query = select(s.id, s.last_message_at).where(idle)
    if after is not None:
        at, last_id = after
        query = query.where(
            or_(s.last_message_at > at, and_(s.last_message_at == at, s.id > last_id))
        )
    found = (await writes.db.execute(query.order_by(s.last_message_at, s.id).limit(limit))).all()
    if not found:
        return SessionBatch(archived=0, last=after, done=True)
    ids = [row.id for row in found]
    locked = select(s.id).where(s.id.in_(ids), idle).order_by(s.id).with_for_update()
    archived = (
        await writes.db.execute(
            update(SESSIONS)
            .where(s.id.in_(locked), idle)
            .values(deleted_at=writes.now)
            .returning(s.id)
        )
    ).all()
    for row in archived:
        writes.changed("session.updated", row.id, None)
    last = found[-1]
    return SessionBatch(
        archived=len(archived), last=(last.last_message_at, last.id), done=len(found) < limit
    )
