"""Row claims: how workers, in one process or many, take work without taking it twice.

A claim moves a message from its waiting state to its working state, stamps the worker and an
expiry, and is renewed while the work runs. Only the oldest unfinished message of a session can
be claimed, so the messages of one session are handled strictly in order. On PostgreSQL the
claim uses ``FOR UPDATE SKIP LOCKED``; SQLite runs one process and serializes its writers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    String,
    TextClause,
    Update,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.store.models import MESSAGES, ChatMessage, MessageState, UTCDateTime, utcnow


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimKind:
    name: str
    waiting: str
    working: str
    counts_attempts: bool = False
    """Claiming counts an attempt and marks it in doubt (a delivery, before it is sent)."""


ANSWER = ClaimKind(name="answer", waiting=MessageState.PENDING, working=MessageState.ANSWERING)
DELIVER = ClaimKind(
    name="deliver",
    waiting=MessageState.TO_DELIVER,
    working=MessageState.DELIVERING,
    counts_attempts=True,
)
KINDS = (ANSWER, DELIVER)


NOW = bindparam("now", type_=UTCDateTime())


def _state(value: str) -> ColumnElement[str]:
    """A state as a literal, not a bind parameter: PostgreSQL proves a partial index's
    predicate only from constants, also in the generic plan of a prepared statement."""
    return literal_column(f"'{value}'", String())


@cache
def _find(kind: ClaimKind) -> Select[Any]:
    """The ready messages of ``kind``, oldest first, none behind an unfinished one of its
    session; with each its in-doubt flag as it was before the claim. Scans only the kind's
    small queue index (``ix_chat_messages_<kind>_queue``), however long the history."""
    m, earlier = MESSAGES.c, MESSAGES.alias("earlier").c
    waiting, working = _state(kind.waiting), _state(kind.working)
    blocked_by_earlier = exists().where(
        earlier.session_id == m.session_id,
        earlier.id < m.id,
        earlier.state.in_((waiting, working)),
    )
    ready = or_(
        and_(
            m.state == waiting,
            or_(m.next_attempt_at.is_(None), m.next_attempt_at <= NOW),
        ),
        and_(m.state == working, m.claim_expires_at < NOW),
    )
    return (
        select(m.id, m.delivery_in_doubt.label("was_in_doubt"))
        .where(m.state.in_((waiting, working)), ready, ~blocked_by_earlier)
        .order_by(m.id)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
    )


def _claim_values(kind: ClaimKind) -> dict[str, Any]:
    values: dict[str, Any] = {
        "state": kind.working,
        "claimed_by": bindparam("worker"),
        "claim_expires_at": bindparam("expires", type_=UTCDateTime()),
    }
    if kind.counts_attempts:
        # The attempt is recorded and the delivery marked in doubt before anything is sent.
        values |= {
            "attempts": MESSAGES.c.attempts + 1,
            "delivery_in_doubt": True,
            "updated_at": NOW,
        }
    return values


Load = Callable[[FromClause], Select[Any]]
"""Builds the select of what a step needs from a FROM that has the claimed message rows."""


def _planner(setting: str) -> TextClause:
    return text(
        f"SELECT set_config('enable_seqscan', '{setting}', true),"
        f" set_config('enable_bitmapscan', '{setting}', true),"
        f" set_config('enable_sort', '{setting}', true)"
    )


_ORDERED_SCAN, _PLANNER_DEFAULTS = _planner("off"), _planner("on")
"""Around the claim statement only (the transaction goes on to other queries): walk the
kind's queue index in id order and stop at the limit. Left to its estimates (which lag
behind a queue that fills in seconds), the planner often reads every queued row, checks
each for an earlier one of its session, then sorts: tens of milliseconds per claim under a
burst instead of a fraction of one."""


@cache
def _claim_in_one(kind: ClaimKind, load: Load) -> Select[Any]:
    """PostgreSQL: find, claim and load in one statement."""
    found = _find(kind).cte("found")
    claimed = (
        update(MESSAGES)
        .where(MESSAGES.c.id == found.c.id)
        .values(_claim_values(kind))
        .returning(*MESSAGES.c, found.c.was_in_doubt)
        .cte("claimed")
    )
    return load(claimed).add_columns(claimed.c.was_in_doubt)


@cache
def _claim_in_steps(kind: ClaimKind, load: Load) -> tuple[Update, Select[Any]]:
    """SQLite (one writer, and no RETURNING from a join): claim the found ids, then load."""
    take = (
        update(MESSAGES)
        .where(MESSAGES.c.id.in_(bindparam("ids", expanding=True)))
        .values(_claim_values(kind))
    )
    return take, load(MESSAGES).where(MESSAGES.c.id.in_(bindparam("ids", expanding=True)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    row: Any
    """What ``load`` selected (after the claim: ``attempts`` already counts this one)."""
    was_in_doubt: bool


async def claim(
    db: AsyncSession,
    kind: ClaimKind,
    *,
    worker_id: str,
    limit: int,
    ttl_seconds: float,
    load: Load,
) -> list[Claimed]:
    """Claim up to ``limit`` messages of ``kind``, oldest first, in the caller's transaction
    (which may go on to read what the work needs), and return what ``load`` selects of each
    (``load`` must be a module-level function: the statement is built once per kind and
    load)."""
    now = utcnow()
    parameters = {
        "now": now,
        "limit": limit,
        "worker": worker_id,
        "expires": now + timedelta(seconds=ttl_seconds),
    }
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(_ORDERED_SCAN)
        rows = (await db.execute(_claim_in_one(kind, load), parameters)).all()
        await db.execute(_PLANNER_DEFAULTS)
        claimed = [Claimed(row=row, was_in_doubt=bool(row.was_in_doubt)) for row in rows]
    else:
        found = {
            row.id: bool(row.was_in_doubt) for row in await db.execute(_find(kind), parameters)
        }
        if not found:
            return []
        take, load_claimed = _claim_in_steps(kind, load)
        await db.execute(take, {**parameters, "ids": list(found)})
        rows = (await db.execute(load_claimed, {"ids": list(found)})).all()
        claimed = [Claimed(row=row, was_in_doubt=found[row.id]) for row in rows]
    return sorted(claimed, key=lambda item: int(item.row.id))


@cache
def _held(kind: ClaimKind) -> Select[Any]:
    m = MESSAGES.c
    return (
        select(m.id)
        .where(
            m.id.in_(bindparam("ids", expanding=True)),
            m.state == kind.working,
            m.claimed_by == bindparam("worker"),
        )
        .order_by(m.id)
        .with_for_update()
    )


async def held_claims(
    db: AsyncSession, kind: ClaimKind, *, worker_id: str, message_ids: Collection[int]
) -> set[int]:
    """Of ``message_ids``, those this worker still holds, locked until the caller's
    transaction ends: only these may be finished (a claim that expired may be another's)."""
    found = await db.execute(_held(kind), {"ids": list(message_ids), "worker": worker_id})
    return set(found.scalars())


async def renew(
    sessions: async_sessionmaker[AsyncSession],
    *,
    worker_id: str,
    message_ids: Collection[int],
    ttl_seconds: float,
) -> int:
    """Push back the expiry of the claims whose work is running right now, and only those: a
    claim left behind by a failed handler must expire so the work is tried again. Claims a
    finishing batch has locked are skipped, never waited for: that batch is ending them, and
    waiting (while holding others it wants) could deadlock with it."""
    running = (
        select(ChatMessage.id)
        .where(
            ChatMessage.id.in_(list(message_ids)),
            ChatMessage.claimed_by == worker_id,
            ChatMessage.state.in_([k.working for k in KINDS]),
        )
        .with_for_update(skip_locked=True)
    )
    async with sessions() as db, db.begin():
        result = await db.execute(
            update(ChatMessage)
            .where(ChatMessage.id.in_(running.scalar_subquery()))
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


async def finish_claimed(
    db: AsyncSession,
    kind: ClaimKind,
    *,
    worker_id: str,
    finishes: Sequence[tuple[int, dict[str, Any]]],
) -> set[int]:
    """Set each ``(message_id, values)`` in the caller's transaction, for the claims this
    worker still holds (returned); one statement per shape of ``values``."""
    held = await held_claims(db, kind, worker_id=worker_id, message_ids=[m for m, _ in finishes])
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for message_id, values in sorted(finishes, key=lambda finish: finish[0]):
        if message_id in held:
            shapes[tuple(values)].append(claimed_parameters(message_id, worker_id, values))
    for columns, parameters in shapes.items():
        await db.execute(update_if_claimed(kind, columns), parameters)
    return held


@cache
def _queued(kind: ClaimKind) -> Select[Any]:
    m = MESSAGES.c
    states = (_state(kind.waiting), _state(kind.working))
    return select(m.state, func.count()).where(m.state.in_(states)).group_by(m.state)


async def count_queued(db: AsyncSession) -> dict[str, int]:
    """Messages waiting or being worked on, by state: one count per kind, each over its
    queue index."""
    counts: dict[str, int] = {}
    for kind in KINDS:
        for state, count in await db.execute(_queued(kind)):
            counts[str(state)] = int(count)
    return counts
