"""Reading sessions and messages as the API shows them, and who may see which session.

One place builds these views, for REST responses and live events alike.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from bridge.api.models import (
    AttachmentOut,
    DeliveryState,
    MessageOut,
    ParticipantOut,
    SessionOut,
)
from bridge.api.tokens import Caller
from bridge.infra.redact import reason_of, redact
from bridge.store.models import (
    ATTACHMENTS,
    Agent,
    ChatMessage,
    ChatSession,
    MessageState,
    Participant,
    SessionMember,
)

_PeerAgent = aliased(Agent)
_Owner = aliased(Participant)
_Sender = aliased(Participant)


def visible_to(caller: Caller) -> ColumnElement[bool]:
    """The operator sees every session; a workspace admin every session of its workspace's
    agents; a user those of its workspace it takes part in. For :func:`session_query`, which
    joins the session's agent: the workspace is one more condition on that join.

    A user token with no workspace (made before workspaces) is limited by membership only."""
    if caller.is_operator:
        return true()
    in_workspace = (
        true() if caller.workspace_id is None else Agent.workspace_id == caller.workspace_id
    )
    if caller.is_admin:
        return in_workspace
    return and_(
        in_workspace,
        exists().where(
            SessionMember.session_id == ChatSession.id,
            SessionMember.participant_id == caller.participant_id,
        ),
    )


def in_scope(caller: Caller, workspace_id: int) -> bool:
    """Whether an object of ``workspace_id`` is in the caller's workspace (the operator's
    scope is every workspace)."""
    return caller.workspace_id is None or caller.workspace_id == workspace_id


def session_query() -> Select[ChatSession, str, str, Participant]:
    return (
        select(ChatSession, Agent.slug, _PeerAgent.slug, _Owner)
        .join(Agent, Agent.id == ChatSession.agent_id)
        .outerjoin(_PeerAgent, _PeerAgent.id == ChatSession.peer_agent_id)
        .outerjoin(_Owner, _Owner.id == ChatSession.participant_id)
    )


def _participant(row: Participant | None) -> ParticipantOut | None:
    if row is None:
        return None
    return ParticipantOut(
        id=row.id, kind=row.kind, channel=row.channel, display_name=row.display_name
    )


def session_view(row: Any) -> SessionOut:
    session: ChatSession = row[0]
    return SessionOut(
        id=session.id,
        agent=row[1],
        title=session.title,
        source_channel=session.source_channel,
        external_conv_id=session.external_conv_id,
        is_group=session.is_group,
        group_name=session.group_name,
        participant=_participant(row[3]),
        peer_agent=row[2],
        parent_session=session.parent_session_id,
        message_count=session.message_count,
        created_at=session.created_at,
        last_message_at=session.last_message_at,
        deleted_at=session.deleted_at,
    )


async def find_session(db: AsyncSession, caller: Caller, session_id: int) -> SessionOut | None:
    row = (
        await db.execute(session_query().where(ChatSession.id == session_id, visible_to(caller)))
    ).one_or_none()
    return None if row is None else session_view(row)


async def sessions_by_id(db: AsyncSession, ids: Collection[int]) -> dict[int, SessionOut]:
    rows = await db.execute(session_query().where(ChatSession.id.in_(list(ids))))
    return {view.id: view for view in map(session_view, rows)}


async def scoped_sessions_by_id(
    db: AsyncSession, ids: Collection[int]
) -> dict[int, tuple[SessionOut, int]]:
    """Each session with its workspace (from the agent it already joins), for live events."""
    rows = await db.execute(
        session_query().add_columns(Agent.workspace_id).where(ChatSession.id.in_(list(ids)))
    )
    return {row[0].id: (session_view(row), int(row[4])) for row in rows}


def message_query() -> Select[ChatMessage, Participant]:
    return select(ChatMessage, _Sender).outerjoin(
        _Sender, _Sender.id == ChatMessage.sender_participant_id
    )


def _delivery(message: ChatMessage) -> DeliveryState | None:
    if message.role == "user" or message.state == MessageState.RECORDED:
        return None
    if message.state == MessageState.DELIVERED:
        return "delivered"
    if message.state == MessageState.FAILED:
        return "failed"
    return "pending"


def _error(message: ChatMessage, *, admin: bool) -> str | None:
    """Admins see the stored failure (redacted again, for rows stored before redaction);
    everyone else only the reason the bridge wrote, never text that came from upstream."""
    if message.last_error is None:
        return None
    if admin:
        return redact(message.last_error)
    fallback = "the agent could not answer" if message.role == "user" else "delivery failed"
    return reason_of(message.last_error) or fallback


FILES_PATH = "/api/v1/files/{id}"
"""Where an attachment downloads (:mod:`bridge.api.files`)."""


async def attachments_of(
    db: AsyncSession, message_ids: Collection[int]
) -> dict[int, list[AttachmentOut]]:
    """The files of these messages, in order, in one statement on the index that leads
    with ``message_id`` (none for no messages)."""
    if not message_ids:
        return {}
    a = ATTACHMENTS.c
    rows = await db.execute(
        select(a.id, a.message_id, a.name, a.content_type, a.size, a.sha256, a.state, a.reason)
        .where(a.message_id.in_(list(message_ids)))
        .order_by(a.message_id, a.position)
    )
    found: dict[int, list[AttachmentOut]] = {}
    for row in rows:
        found.setdefault(row.message_id, []).append(
            AttachmentOut(
                id=row.id,
                name=row.name,
                content_type=row.content_type,
                size=row.size,
                sha256=row.sha256,
                state=row.state,
                reason=row.reason,
                url=FILES_PATH.format(id=row.id),
            )
        )
    return found


async def message_views(
    db: AsyncSession, rows: Sequence[Any], *, admin: bool = False
) -> list[MessageOut]:
    """:func:`message_view` of each row of :func:`message_query`, with their files."""
    files = await attachments_of(db, [row[0].id for row in rows])
    return [message_view(row, admin=admin, attachments=files.get(row[0].id, [])) for row in rows]


def message_view(
    row: Any, *, admin: bool = False, attachments: list[AttachmentOut] | None = None
) -> MessageOut:
    """``admin`` shows the failure detail in ``error``; shared views (live events) leave it
    out."""
    message: ChatMessage = row[0]
    return MessageOut(
        id=message.id,
        session_id=message.session_id,
        role=message.role,
        content=message.content,
        sender=_participant(row[1]),
        state=message.state,
        delivery=_delivery(message),
        error=_error(message, admin=admin),
        attempts=message.attempts,
        reply_to=message.reply_to_message_id,
        chain_origin=message.chain_origin_id or message.id,
        chain_hops=message.chain_hops,
        created_at=message.created_at,
        edited_at=message.edited_at,
        deleted_at=message.deleted_at,
        purged_at=message.purged_at,
        attachments=[] if message.purged_at is not None else attachments or [],
    )


async def messages_by_id(db: AsyncSession, ids: Collection[int]) -> dict[int, MessageOut]:
    rows = list(await db.execute(message_query().where(ChatMessage.id.in_(list(ids)))))
    return {view.id: view for view in await message_views(db, rows)}


async def scoped_messages_by_id(
    db: AsyncSession, ids: Collection[int]
) -> dict[int, tuple[MessageOut, int]]:
    """Each message with its session's workspace: one statement, joined through the session
    to its agent, for live events."""
    rows = await db.execute(
        message_query()
        .add_columns(Agent.workspace_id)
        .join(ChatSession, ChatSession.id == ChatMessage.session_id)
        .join(Agent, Agent.id == ChatSession.agent_id)
        .where(ChatMessage.id.in_(list(ids)))
    )
    found = list(rows)
    views = await message_views(db, found)
    return {view.id: (view, int(row[2])) for view, row in zip(views, found, strict=True)}


async def session_scopes(
    db: AsyncSession, session_ids: Sequence[int]
) -> dict[int, tuple[int, set[int]]]:
    """The workspace and the member participants of each session, in one statement: who
    may see a reply's text as it is written."""
    rows = await db.execute(
        select(ChatSession.id, Agent.workspace_id, SessionMember.participant_id)
        .join(Agent, Agent.id == ChatSession.agent_id)
        .outerjoin(SessionMember, SessionMember.session_id == ChatSession.id)
        .where(ChatSession.id.in_(list(session_ids)))
    )
    scopes: dict[int, tuple[int, set[int]]] = {}
    for session_id, workspace_id, participant_id in rows:
        _, members = scopes.setdefault(session_id, (int(workspace_id), set()))
        if participant_id is not None:
            members.add(participant_id)
    return scopes


async def members_of(db: AsyncSession, session_ids: Sequence[int]) -> dict[int, set[int]]:
    """Participant ids per session, to decide which live clients may see a change."""
    rows = await db.execute(
        select(SessionMember.session_id, SessionMember.participant_id).where(
            SessionMember.session_id.in_(list(session_ids))
        )
    )
    members: dict[int, set[int]] = {}
    for session_id, participant_id in rows:
        members.setdefault(session_id, set()).add(participant_id)
    return members
