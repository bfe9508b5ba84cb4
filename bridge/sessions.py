"""Find-or-create for participants, sessions and membership.

Each reads first and, only on a miss, runs ``INSERT ... ON CONFLICT DO NOTHING`` and reads
again, so any number of tasks and processes racing on the same key end with one row and no
error, and the common case (the row exists) costs one statement. They run inside the caller's
transaction (the ingest transaction), never commit on their own. The statements are Core
statements built once (per dialect where it matters): the message path pays no ORM overhead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Row, Select, Table, Update, bindparam, select, update
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.db.engine import insert
from bridge.db.models import (
    MEMBERS,
    PARTICIPANTS,
    SESSIONS,
    UTCDateTime,
    utcnow,
)
from bridge.events import ParticipantKind


def _dialect(db: AsyncSession) -> str:
    return db.get_bind().dialect.name


@cache
def _select_participant() -> Select[Any]:
    p = PARTICIPANTS.c
    return select(p.id, p.display_name).where(
        p.kind == bindparam("kind"),
        p.channel == bindparam("channel"),
        p.external_id == bindparam("external_id"),
    )


@cache
def _select_session() -> Select[Any]:
    s = SESSIONS.c
    return select(s.id, s.last_message_at, s.deleted_at, s.context_from_message_id).where(
        s.agent_id == bindparam("agent_id"), s.external_conv_id == bindparam("external_conv_id")
    )


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


async def _find_or_insert(
    db: AsyncSession,
    query: Select[Any],
    key: dict[str, Any],
    insert_if_missing: PgInsert | SqliteInsert,
    row: dict[str, Any],
) -> Row[Any]:
    """Read; only on a miss insert (``ON CONFLICT DO NOTHING``: a racing creator wins
    harmlessly) and read again."""
    found: Row[Any] | None = (await db.execute(query, key)).one_or_none()
    if found is None:
        await db.execute(insert_if_missing, row)
        found = (await db.execute(query, key)).one()
    return found


async def find_or_create_participant(
    db: AsyncSession,
    *,
    kind: ParticipantKind,
    channel: str,
    external_id: str,
    display_name: str | None = None,
) -> int:
    """The participant's id; a changed display name is brought up to date."""
    now = utcnow()
    key = {"kind": kind, "channel": channel, "external_id": external_id}
    found = await _find_or_insert(
        db,
        _select_participant(),
        key,
        _insert_ignoring(_dialect(db), PARTICIPANTS, "kind", "channel", "external_id"),
        {**key, "display_name": display_name, "created_at": now, "updated_at": now},
    )
    if display_name and found.display_name != display_name:
        await db.execute(
            _rename_participant(), {"participant_id": found.id, "name": display_name, "now": now}
        )
    return int(found.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRef:
    id: int
    last_message_at: datetime
    deleted: bool
    context_from_message_id: int | None


async def find_or_create_session(
    db: AsyncSession,
    *,
    agent_id: int,
    external_conv_id: str,
    source_channel: str,
    is_group: bool = False,
    group_name: str | None = None,
    title: str | None = None,
    participant_id: int | None = None,
    peer_agent_id: int | None = None,
    parent_session_id: int | None = None,
) -> SessionRef:
    """The session for ``(agent_id, external_conv_id)``, created if it does not exist yet.

    Creation fills the descriptive columns; an existing session keeps its own (the caller
    records activity with :func:`record_activity`).
    """
    now = utcnow()
    key = {"agent_id": agent_id, "external_conv_id": external_conv_id}
    found = await _find_or_insert(
        db,
        _select_session(),
        key,
        _insert_ignoring(_dialect(db), SESSIONS, "agent_id", "external_conv_id"),
        {
            **key,
            "source_channel": source_channel,
            "is_group": is_group,
            "group_name": group_name,
            "title": title,
            "participant_id": participant_id,
            "peer_agent_id": peer_agent_id,
            "parent_session_id": parent_session_id,
            "message_count": 0,
            "created_at": now,
            "last_message_at": now,
        },
    )
    return SessionRef(
        id=int(found.id),
        last_message_at=found.last_message_at,
        deleted=found.deleted_at is not None,
        context_from_message_id=found.context_from_message_id,
    )


async def add_member(db: AsyncSession, *, session_id: int, participant_id: int) -> None:
    await db.execute(
        _insert_ignoring(_dialect(db), MEMBERS, "session_id", "participant_id"),
        {"session_id": session_id, "participant_id": participant_id, "joined_at": utcnow()},
    )


def idle_expired(last_message_at: datetime, idle_reset_hours: float | None, now: datetime) -> bool:
    return idle_reset_hours is not None and now - last_message_at > timedelta(
        hours=idle_reset_hours
    )


@cache
def _activity(*, inbound: bool, group_name: bool, context: bool) -> Update:
    s = SESSIONS.c
    values: dict[str, Any] = {
        "message_count": s.message_count + 1,
        "last_message_at": bindparam("now", type_=UTCDateTime()),
    }
    if inbound:
        values["deleted_at"] = None
    if group_name:
        values["group_name"] = bindparam("new_group_name")
    if context:
        values["context_from_message_id"] = bindparam("context")
    return update(SESSIONS).where(s.id == bindparam("session_id")).values(values)


async def record_activity(
    db: AsyncSession,
    *,
    session_id: int,
    group_name: str | None,
    now: datetime,
    inbound: bool,
    context_from_message_id: int | None = None,
) -> None:
    """Count a new message, keep the group name current, let new inbound activity revive a
    soft-deleted session and, when given, start the agent's context afresh at
    ``context_from_message_id``."""
    statement = _activity(
        inbound=inbound, group_name=bool(group_name), context=context_from_message_id is not None
    )
    # Only the statement's own parameters: an extra key named like a column would be SET too.
    parameters: dict[str, Any] = {"session_id": session_id, "now": now}
    if group_name:
        parameters["new_group_name"] = group_name
    if context_from_message_id is not None:
        parameters["context"] = context_from_message_id
    await db.execute(statement, parameters)


async def reset_context(db: AsyncSession, *, session_id: int, from_message_id: int) -> None:
    await db.execute(
        update(SESSIONS)
        .where(SESSIONS.c.id == session_id)
        .values(context_from_message_id=from_message_id)
    )
