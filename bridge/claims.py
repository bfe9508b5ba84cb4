"""Row claims: how workers, in one process or many, take work without taking it twice.

A claim moves a message from its waiting state to its working state, stamps the worker and an
expiry, and is renewed while the work runs. Only the oldest unfinished message of a session can
be claimed, so the messages of one session are handled strictly in order. On PostgreSQL the
claim uses ``FOR UPDATE SKIP LOCKED``; SQLite runs one process and serializes its writers.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Update,
    and_,
    bindparam,
    case,
    exists,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.db.models import MESSAGES, ChatMessage, MessageState, UTCDateTime, utcnow


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimKind:
    name: str
    waiting: str
    working: str


ANSWER = ClaimKind(name="answer", waiting=MessageState.PENDING, working=MessageState.ANSWERING)
DELIVER = ClaimKind(
    name="deliver", waiting=MessageState.TO_DELIVER, working=MessageState.DELIVERING
)
KINDS = (ANSWER, DELIVER)


NOW = bindparam("now", type_=UTCDateTime())


@cache
def _claim_statements(kind: ClaimKind) -> tuple[Select[int], Update]:
    """Built once per kind: Core statements with bind parameters skip the ORM's per-call
    statement building, the largest CPU cost on the message path."""
    m, earlier = MESSAGES.c, MESSAGES.alias("earlier").c
    blocked_by_earlier = exists().where(
        earlier.session_id == m.session_id,
        earlier.id < m.id,
        earlier.state.in_((kind.waiting, kind.working)),
    )
    ready = or_(
        and_(
            m.state == kind.waiting,
            or_(m.next_attempt_at.is_(None), m.next_attempt_at <= NOW),
        ),
        and_(m.state == kind.working, m.claim_expires_at < NOW),
    )
    find = (
        select(m.id)
        .where(ready, ~blocked_by_earlier)
        .order_by(m.id)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
    )
    take = (
        update(MESSAGES)
        .where(m.id.in_(bindparam("ids", expanding=True)))
        .values(
            state=kind.working,
            claimed_by=bindparam("worker"),
            claim_expires_at=bindparam("expires", type_=UTCDateTime()),
        )
    )
    return find, take


async def claim(
    sessions: async_sessionmaker[AsyncSession],
    kind: ClaimKind,
    *,
    worker_id: str,
    limit: int,
    ttl_seconds: float,
) -> list[int]:
    """Claim up to ``limit`` messages of ``kind``, oldest first; returns their ids."""
    now = utcnow()
    find, take = _claim_statements(kind)
    async with sessions() as db, db.begin():
        ids = list((await db.execute(find, {"now": now, "limit": limit})).scalars())
        if ids:
            await db.execute(
                take,
                {"ids": ids, "worker": worker_id, "expires": now + timedelta(seconds=ttl_seconds)},
            )
    return ids


async def renew(
    sessions: async_sessionmaker[AsyncSession],
    *,
    worker_id: str,
    message_ids: Collection[int],
    ttl_seconds: float,
) -> int:
    """Push back the expiry of the claims whose work is running right now, and only those: a
    claim left behind by a failed handler must expire so the work is tried again."""
    async with sessions() as db, db.begin():
        result = await db.execute(
            update(ChatMessage)
            .where(
                ChatMessage.id.in_(list(message_ids)),
                ChatMessage.claimed_by == worker_id,
                ChatMessage.state.in_([k.working for k in KINDS]),
            )
            .values(claim_expires_at=utcnow() + timedelta(seconds=ttl_seconds))
        )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def release(
    sessions: async_sessionmaker[AsyncSession],
    *,
    worker_id: str | None,
    message_ids: Collection[int] | None = None,
    retry_in_seconds: float | None = None,
) -> int:
    """Hand claimed work back to the queue: this worker's (only ``message_ids``, if given), or
    (``None``) everyone's; ``retry_in_seconds`` holds it back that long."""
    working = [k.working for k in KINDS]
    condition: ColumnElement[bool] = ChatMessage.state.in_(working)
    if worker_id is not None:
        condition = and_(condition, ChatMessage.claimed_by == worker_id)
    if message_ids is not None:
        condition = and_(condition, ChatMessage.id.in_(list(message_ids)))
    retry_at = None if retry_in_seconds is None else next_retry_at(retry_in_seconds)
    back_to_waiting = case(
        *((ChatMessage.state == k.working, k.waiting) for k in KINDS), else_=ChatMessage.state
    )
    async with sessions() as db, db.begin():
        result = await db.execute(
            update(ChatMessage)
            .where(condition)
            .values(
                state=back_to_waiting,
                claimed_by=None,
                claim_expires_at=None,
                next_attempt_at=retry_at,
            )
        )
    return int(result.rowcount)  # type: ignore[attr-defined]


@cache
def update_if_claimed(kind: ClaimKind, columns: tuple[str, ...]) -> Update:
    """``UPDATE chat_messages SET <columns>`` only while this worker still holds the claim;
    parameters ``message_id``, ``worker`` and ``set_<column>``. Built once per shape."""
    m = MESSAGES.c
    return (
        update(MESSAGES)
        .where(
            m.id == bindparam("message_id"),
            m.state == kind.working,
            m.claimed_by == bindparam("worker"),
        )
        .values({name: bindparam(f"set_{name}") for name in columns})
    )


def claimed_parameters(message_id: int, worker_id: str, values: dict[str, Any]) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "worker": worker_id,
        **{f"set_{name}": value for name, value in values.items()},
    }


def next_retry_at(delay_seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=delay_seconds)
