"""Rate limits and token budgets, counted in the transaction that stores the message.

The counts are the stored messages themselves (sliding windows: the last hour, the last
minute, the UTC day), read after locking the sender's participant row (and the session's, for
the per-conversation limit) ``FOR UPDATE``, so two processes storing messages of one user
serialize on that lock and each sees what the other committed: the limit holds across
processes and restarts. SQLite writes one transaction at a time, so it needs no lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Literal

from sqlalchemy import Select, and_, bindparam, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.access.settings import LimitSettings
from bridge.infra.redact import failure
from bridge.store.models import MESSAGES, PARTICIPANTS, SESSIONS, MessageState, UTCDateTime

LimitKind = Literal[
    "user_messages_per_hour", "conversation_messages_per_minute", "user_tokens_per_day"
]

_REASONS: dict[LimitKind, str] = {
    "user_tokens_per_day": "over the daily token budget",
    "user_messages_per_hour": "over the limit of messages per hour",
    "conversation_messages_per_minute": "over the limit of messages per minute here",
}


def limit_error(kind: LimitKind) -> str:
    """What a limited message stores as its ``last_error``: the reason people see, then the
    limit's name (what the "note once per window" count looks for)."""
    return failure(_REASONS[kind], kind)


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitCheck:
    """One message to check: who sent it to which agent, in which session."""

    agent_id: int
    participant_id: int
    session_id: int
    limits: LimitSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class Limited:
    kind: LimitKind
    note: bool
    """Whether this message earns the ``limited_text`` note (the first one limited in its
    window; later ones in the same window are limited silently)."""


def day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


@cache
def _user_counts() -> Select[Any]:
    """The sender's messages to the agent since ``since``: how many counted (not limited),
    how many were limited for ``marker``, and the tokens their answers cost."""
    m, s = MESSAGES.c, SESSIONS.c
    limited = m.state == MessageState.LIMITED
    return (
        select(
            func.coalesce(func.sum(case((limited, 0), else_=1)), 0).label("counted"),
            func.coalesce(
                func.sum(case((and_(limited, m.last_error == bindparam("marker")), 1), else_=0)), 0
            ).label("noted"),
            func.coalesce(
                func.sum(func.coalesce(m.input_tokens, 0) + func.coalesce(m.output_tokens, 0)), 0
            ).label("tokens"),
        )
        .select_from(MESSAGES.join(SESSIONS, s.id == m.session_id))
        .where(
            m.sender_participant_id == bindparam("participant_id"),
            m.created_at > bindparam("since", type_=UTCDateTime()),
            m.role == "user",
            s.agent_id == bindparam("agent_id"),
        )
    )


@cache
def _conversation_counts() -> Select[Any]:
    m = MESSAGES.c
    limited = m.state == MessageState.LIMITED
    return select(
        func.coalesce(func.sum(case((limited, 0), else_=1)), 0).label("counted"),
        func.coalesce(
            func.sum(case((and_(limited, m.last_error == bindparam("marker")), 1), else_=0)), 0
        ).label("noted"),
    ).where(
        m.session_id == bindparam("session_id"),
        m.created_at > bindparam("since", type_=UTCDateTime()),
        m.role == "user",
    )


async def lock_counted(db: AsyncSession, checks: Iterable[LimitCheck | None]) -> None:
    """Serialize the transactions storing messages of the same people and conversations
    (participants first, then sessions, each in id order: no two transactions wait on each
    other in a circle). Call before anything is counted, duplicates included."""
    counted = [check for check in checks if check is not None and check.limits.any]
    if not counted or db.get_bind().dialect.name == "sqlite":
        return
    people = sorted({check.participant_id for check in counted})
    await db.execute(
        select(PARTICIPANTS.c.id)
        .where(PARTICIPANTS.c.id.in_(people))
        .order_by(PARTICIPANTS.c.id)
        .with_for_update()
    )
    conversations = sorted(
        {check.session_id for check in counted if check.limits.conversation_messages_per_minute}
    )
    if conversations:
        await db.execute(
            select(SESSIONS.c.id)
            .where(SESSIONS.c.id.in_(conversations))
            .order_by(SESSIONS.c.id)
            .with_for_update()
        )


class _Window:
    """Counts of one window, plus what earlier messages of this batch added to it."""

    def __init__(self, counted: int, noted: int, tokens: int = 0) -> None:
        self.counted = counted
        self.noted = noted
        self.tokens = tokens


async def check_limits(
    db: AsyncSession, checks: list[LimitCheck | None], *, now: datetime
) -> list[Limited | None]:
    """For each message (None: not subject to limits), whether a limit stops it. Messages of
    one batch count against each other in order. The rows must be locked
    (:func:`lock_counted`) in this transaction first."""
    if all(check is None or not check.limits.any for check in checks):
        return [None] * len(checks)
    windows: dict[tuple[Any, ...], _Window] = {}

    async def user_window(check: LimitCheck, kind: LimitKind, since: datetime) -> _Window:
        key = (kind, check.agent_id, check.participant_id)
        if key not in windows:
            row = (
                await db.execute(
                    _user_counts(),
                    {
                        "participant_id": check.participant_id,
                        "agent_id": check.agent_id,
                        "since": since,
                        "marker": limit_error(kind),
                    },
                )
            ).one()
            windows[key] = _Window(int(row.counted), int(row.noted), int(row.tokens))
        return windows[key]

    async def conversation_window(check: LimitCheck, since: datetime) -> _Window:
        kind: LimitKind = "conversation_messages_per_minute"
        key = (kind, check.session_id)
        if key not in windows:
            row = (
                await db.execute(
                    _conversation_counts(),
                    {"session_id": check.session_id, "since": since, "marker": limit_error(kind)},
                )
            ).one()
            windows[key] = _Window(int(row.counted), int(row.noted))
        return windows[key]

    results: list[Limited | None] = []
    for check in checks:
        if check is None or not check.limits.any:
            results.append(None)
            continue
        limits = check.limits
        touched: list[_Window] = []
        hit: tuple[LimitKind, _Window] | None = None
        if limits.user_tokens_per_day:
            window = await user_window(
                check, "user_tokens_per_day", day_start(now) - timedelta(microseconds=1)
            )
            if window.tokens >= limits.user_tokens_per_day:
                hit = ("user_tokens_per_day", window)
        if hit is None and limits.user_messages_per_hour:
            window = await user_window(check, "user_messages_per_hour", now - timedelta(hours=1))
            touched.append(window)
            if window.counted >= limits.user_messages_per_hour:
                hit = ("user_messages_per_hour", window)
        if hit is None and limits.conversation_messages_per_minute:
            window = await conversation_window(check, now - timedelta(minutes=1))
            touched.append(window)
            if window.counted >= limits.conversation_messages_per_minute:
                hit = ("conversation_messages_per_minute", window)
        if hit is None:
            for window in touched:
                window.counted += 1
            results.append(None)
            continue
        kind, window = hit
        results.append(Limited(kind=kind, note=window.noted == 0))
        window.noted += 1
    return results
