"""Find-or-create for participants, sessions and membership.

Each is ``INSERT ... ON CONFLICT DO NOTHING`` followed by a read, so any number of tasks and
processes racing on the same key end with one row and no error. They run inside the caller's
transaction (the ingest transaction), never commit on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVarTuple

from sqlalchemy import Row, Select, select, update
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.db.engine import insert
from bridge.db.models import ChatSession, Participant, SessionMember, utcnow
from bridge.events import ParticipantKind

Columns = TypeVarTuple("Columns")


def _dialect(db: AsyncSession) -> str:
    return db.get_bind().dialect.name


async def _find_or_insert(
    db: AsyncSession, query: Select[*Columns], insert_if_missing: PgInsert | SqliteInsert
) -> Row[*Columns]:
    """Read; only on a miss insert (``ON CONFLICT DO NOTHING``: a racing creator wins
    harmlessly) and read again. The common case, the row exists, costs one statement."""
    row = (await db.execute(query)).one_or_none()
    if row is None:
        await db.execute(insert_if_missing)
        row = (await db.execute(query)).one()
    return row


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
    row = await _find_or_insert(
        db,
        select(Participant.id, Participant.display_name).where(
            Participant.kind == kind,
            Participant.channel == channel,
            Participant.external_id == external_id,
        ),
        insert(_dialect(db), Participant)
        .values(
            kind=kind,
            channel=channel,
            external_id=external_id,
            display_name=display_name,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["kind", "channel", "external_id"]),
    )
    if display_name and row.display_name != display_name:
        await db.execute(
            update(Participant)
            .where(Participant.id == row.id)
            .values(display_name=display_name, updated_at=now)
        )
    return int(row.id)


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
    row = await _find_or_insert(
        db,
        select(
            ChatSession.id,
            ChatSession.last_message_at,
            ChatSession.deleted_at,
            ChatSession.context_from_message_id,
        ).where(
            ChatSession.agent_id == agent_id,
            ChatSession.external_conv_id == external_conv_id,
        ),
        insert(_dialect(db), ChatSession)
        .values(
            agent_id=agent_id,
            external_conv_id=external_conv_id,
            source_channel=source_channel,
            is_group=is_group,
            group_name=group_name,
            title=title,
            participant_id=participant_id,
            peer_agent_id=peer_agent_id,
            parent_session_id=parent_session_id,
            message_count=0,
            created_at=now,
            last_message_at=now,
        )
        .on_conflict_do_nothing(index_elements=["agent_id", "external_conv_id"]),
    )
    return SessionRef(
        id=int(row.id),
        last_message_at=row.last_message_at,
        deleted=row.deleted_at is not None,
        context_from_message_id=row.context_from_message_id,
    )


async def add_member(db: AsyncSession, *, session_id: int, participant_id: int) -> None:
    await db.execute(
        insert(_dialect(db), SessionMember)
        .values(session_id=session_id, participant_id=participant_id, joined_at=utcnow())
        .on_conflict_do_nothing(index_elements=["session_id", "participant_id"])
    )


def idle_expired(last_message_at: datetime, idle_reset_hours: float | None, now: datetime) -> bool:
    return idle_reset_hours is not None and now - last_message_at > timedelta(
        hours=idle_reset_hours
    )


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
    values: dict[str, object] = {
        "message_count": ChatSession.message_count + 1,
        "last_message_at": now,
    }
    if inbound:
        values["deleted_at"] = None
    if group_name:
        values["group_name"] = group_name
    if context_from_message_id is not None:
        values["context_from_message_id"] = context_from_message_id
    await db.execute(update(ChatSession).where(ChatSession.id == session_id).values(**values))


async def reset_context(db: AsyncSession, *, session_id: int, from_message_id: int) -> None:
    await db.execute(
        update(ChatSession)
        .where(ChatSession.id == session_id)
        .values(context_from_message_id=from_message_id)
    )
