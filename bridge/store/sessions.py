"""Find-or-create for participants, sessions and membership, for one key or a whole batch.

Each reads first and, only for keys it did not find, runs one multi-row ``INSERT ... ON
CONFLICT DO NOTHING`` and reads those again, so any number of tasks and processes racing on
the same keys end with one row each and no error, and the common case (the rows exist) costs
one statement per batch. Keys are handled in sorted order, so two batches that share keys
take their locks in the same order. They run inside the caller's transaction (the ingest
batch), never commit on their own. Statements are Core, built once per shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Select,
    Table,
    Update,
    bindparam,
    case,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.ports.events import ParticipantKind
from bridge.store.engine import dialect_of, insert
from bridge.store.models import MEMBERS, PARTICIPANTS, SESSIONS, UTCDateTime, utcnow

ParticipantKey = tuple[str, str, str]
"""``(kind, channel, external_id)``."""
SessionKey = tuple[int, str]
"""``(agent_id, external_conv_id)``."""


@cache
def _select_participants() -> Select[Any]:
    p = PARTICIPANTS.c
    return select(p.id, p.kind, p.channel, p.external_id, p.display_name).where(
        tuple_(p.kind, p.channel, p.external_id).in_(bindparam("keys", expanding=True))
    )


@cache
def _select_sessions() -> Select[Any]:
    s = SESSIONS.c
    return select(
        s.id,
        s.agent_id,
        s.external_conv_id,
        s.last_message_at,
        s.deleted_at,
        s.context_from_message_id,
    ).where(tuple_(s.agent_id, s.external_conv_id).in_(bindparam("keys", expanding=True)))


@cache
def _insert_ignoring(dialect: str, table: Table, *key: str) -> PgInsert | SqliteInsert:
    return insert(dialect, table).on_conflict_do_nothing(index_elements=list(key))


@cache
def _rename_participant() -> Update:
    return (
        update(PARTICIPANTS)
        .where(PARTICIPANTS.c.id == bindparam("participant_id"))
        .values(display_name=bindparam("name"), updated_at=bindparam("now", type_=UTCDateTime()))
    )


async def find_or_create_participants(
    db: AsyncSession, wanted: Mapping[ParticipantKey, str | None]
) -> dict[ParticipantKey, int]:
    """The participant id of each key, created where missing; a key's display name (when
    given) is brought up to date."""
    now = utcnow()
    keys = sorted(wanted)

    async def read(some: list[ParticipantKey]) -> dict[ParticipantKey, Any]:
        rows = await db.execute(_select_participants(), {"keys": some})
        return {(row.kind, row.channel, row.external_id): row for row in rows}

    found = await read(keys)
    missing = [key for key in keys if key not in found]
    if missing:
        await db.execute(
            _insert_ignoring(dialect_of(db), PARTICIPANTS, "kind", "channel", "external_id"),
            [
                {
                    "kind": kind,
                    "channel": channel,
                    "external_id": external_id,
                    "display_name": wanted[(kind, channel, external_id)],
                    "created_at": now,
                    "updated_at": now,
                }
                for kind, channel, external_id in missing
            ],
        )
        found.update(await read(missing))
    renames = [
        {"participant_id": found[key].id, "name": wanted[key], "now": now}
        for key in keys
        if wanted[key] and found[key].display_name != wanted[key]
    ]
    if renames:
        await db.execute(_rename_participant(), renames)
    return {key: int(found[key].id) for key in keys}


async def find_or_create_participant(
    db: AsyncSession,
    *,
    kind: ParticipantKind,
    channel: str,
    external_id: str,
    display_name: str | None = None,
) -> int:
    """The participant's id; a changed display name is brought up to date."""
    key = (kind, channel, external_id)
    return (await find_or_create_participants(db, {key: display_name}))[key]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRef:
    id: int
    last_message_at: datetime
    deleted: bool
    context_from_message_id: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewSession:
    """The descriptive columns a session gets when it is created (an existing one keeps its
    own; activity is recorded with :func:`record_activities`)."""

    source_channel: str
    is_group: bool = False
    group_name: str | None = None
    title: str | None = None
    participant_id: int | None = None
    peer_agent_id: int | None = None
    parent_session_id: int | None = None


async def find_or_create_sessions(
    db: AsyncSession, wanted: Mapping[SessionKey, NewSession]
) -> dict[SessionKey, SessionRef]:
    """The session of each ``(agent_id, external_conv_id)``, created where missing."""
    now = utcnow()
    keys = sorted(wanted)

    async def read(some: list[SessionKey]) -> dict[SessionKey, Any]:
        rows = await db.execute(_select_sessions(), {"keys": some})
        return {(row.agent_id, row.external_conv_id): row for row in rows}

    found = await read(keys)
    missing = [key for key in keys if key not in found]
    if missing:
        await db.execute(
            _insert_ignoring(dialect_of(db), SESSIONS, "agent_id", "external_conv_id"),
            [
                {
                    "agent_id": agent_id,
                    "external_conv_id": external_conv_id,
                    "source_channel": new.source_channel,
                    "is_group": new.is_group,
                    "group_name": new.group_name,
                    "title": new.title,
                    "participant_id": new.participant_id,
                    "peer_agent_id": new.peer_agent_id,
                    "parent_session_id": new.parent_session_id,
                    "message_count": 0,
                    "created_at": now,
                    "last_message_at": now,
                }
                for (agent_id, external_conv_id) in missing
                for new in (wanted[(agent_id, external_conv_id)],)
            ],
        )
        found.update(await read(missing))
    return {
        key: SessionRef(
            id=int(row.id),
            last_message_at=row.last_message_at,
            deleted=row.deleted_at is not None,
            context_from_message_id=row.context_from_message_id,
        )
        for key in keys
        for row in (found[key],)
    }


async def find_or_create_session(
    db: AsyncSession, *, agent_id: int, external_conv_id: str, **new: Any
) -> SessionRef:
    """The session for ``(agent_id, external_conv_id)``, created with ``new``
    (:class:`NewSession`'s fields) if it does not exist yet."""
    key = (agent_id, external_conv_id)
    return (await find_or_create_sessions(db, {key: NewSession(**new)}))[key]


async def add_members(db: AsyncSession, members: Iterable[tuple[int, int]]) -> None:
    """Add ``(session_id, participant_id)`` pairs; a pair already there is left alone."""
    now = utcnow()
    rows = [
        {"session_id": session_id, "participant_id": participant_id, "joined_at": now}
        for session_id, participant_id in sorted(set(members))
    ]
    if rows:
        await db.execute(
            _insert_ignoring(dialect_of(db), MEMBERS, "session_id", "participant_id"), rows
        )


async def add_member(db: AsyncSession, *, session_id: int, participant_id: int) -> None:
    await add_members(db, [(session_id, participant_id)])


def idle_expired(last_message_at: datetime, idle_reset_hours: float | None, now: datetime) -> bool:
    return idle_reset_hours is not None and now - last_message_at > timedelta(
        hours=idle_reset_hours
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Activity:
    """New messages on one session: counted, and (``inbound``) reviving a soft-deleted
    session; ``group_name`` keeps the name current; ``context_from_message_id`` starts the
    agent's context afresh there."""

    session_id: int
    added: int
    inbound: bool
    group_name: str | None = None
    context_from_message_id: int | None = None


@cache
def _activity() -> Update:
    s = SESSIONS.c
    context = bindparam("context", type_=BigInteger())
    fresh = context.is_not(None)
    return (
        update(SESSIONS)
        .where(s.id == bindparam("session_id"))
        .values(
            message_count=s.message_count + bindparam("added"),
            last_message_at=bindparam("now", type_=UTCDateTime()),
            deleted_at=case((bindparam("inbound", type_=Boolean()), None), else_=s.deleted_at),
            group_name=func.coalesce(bindparam("new_group_name"), s.group_name),
            context_from_message_id=func.coalesce(context, s.context_from_message_id),
            # A context starting afresh starts without the long memory of the old one.
            summary=case((fresh, None), else_=s.summary),
            summary_through_message_id=case((fresh, None), else_=s.summary_through_message_id),
            summary_updated_at=case((fresh, None), else_=s.summary_updated_at),
        )
    )


async def record_activities(
    db: AsyncSession, activities: Iterable[Activity], *, now: datetime
) -> None:
    """One statement for the batch, in session order (the lock order every writer keeps)."""
    rows = [
        {
            "session_id": activity.session_id,
            "added": activity.added,
            "now": now,
            "inbound": activity.inbound,
            "new_group_name": activity.group_name or None,
            "context": activity.context_from_message_id,
        }
        for activity in sorted(activities, key=lambda activity: activity.session_id)
    ]
    if rows:
        await db.execute(_activity(), rows)


async def reset_context(db: AsyncSession, *, session_id: int, from_message_id: int) -> None:
    """Start the agent's context afresh at ``from_message_id`` (``/reset``), forgetting the
    long memory of the old one."""
    await db.execute(
        update(SESSIONS)
        .where(SESSIONS.c.id == session_id)
        .values(
            context_from_message_id=from_message_id,
            summary=None,
            summary_through_message_id=None,
            summary_updated_at=None,
        )
    )
