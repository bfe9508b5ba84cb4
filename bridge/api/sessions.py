"""``/api/v1/agents`` and ``/api/v1/sessions``: list, create, read, rename, delete, restore."""

from __future__ import annotations

import uuid
from datetime import datetime

from aiohttp import web
from sqlalchemy import and_, func, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.a2a.chains import may_address
from bridge.api.cursors import path_id, read_session_cursor, session_cursor
from bridge.api.errors import ApiError, not_found
from bridge.api.http import caller_of, read_body, read_query, respond
from bridge.api.models import (
    AgentList,
    AgentOut,
    CreateSession,
    SessionOut,
    SessionPage,
    SessionQuery,
    UpdateSession,
)
from bridge.api.tokens import Caller
from bridge.api.views import find_session, in_scope, session_query, session_view, visible_to
from bridge.appkeys import AGENTS, CHANNELS, PIPELINE, SESSIONS, SETTINGS
from bridge.ports.errors import UnknownAgent
from bridge.ports.events import WEB_CHANNEL
from bridge.store.directory import AgentRecord
from bridge.store.models import Agent, ChatSession, utcnow
from bridge.store.sessions import add_member, find_or_create_session


def web_conversation_id() -> str:
    return f"{WEB_CHANNEL}:{uuid.uuid4()}"


def agent_in_scope(request: web.Request, slug: str) -> AgentRecord | None:
    """The configured agent ``slug`` if the caller's workspace has it; None for an agent of
    another workspace exactly as for one that does not exist."""
    try:
        agent = request.config_dict[AGENTS].get(slug)
    except UnknownAgent:
        return None
    return agent if in_scope(caller_of(request), agent.workspace_id) else None


async def list_agents(request: web.Request) -> web.Response:
    """The agents of the caller's workspace (every agent for the operator), each with the
    peers it may address: a peer of another workspace only if it lists the agent back."""
    directory = request.config_dict[AGENTS]
    items = []
    for settings in request.config_dict[SETTINGS].agents:
        agent = agent_in_scope(request, settings.slug)
        if agent is None:
            continue
        peers = [p for p in settings.peers if may_address(agent, directory.get(p))]
        items.append(
            AgentOut(slug=settings.slug, name=settings.name, backend=settings.backend, peers=peers)
        )
    return respond(AgentList(items=items))


async def list_sessions(request: web.Request) -> web.Response:
    query = read_query(request, SessionQuery)
    statement = session_query().where(visible_to(caller_of(request)))
    if query.agent is not None:
        statement = statement.where(Agent.slug == query.agent)
    if query.channel is not None:
        statement = statement.where(ChatSession.source_channel == query.channel)
    if query.is_group is not None:
        statement = statement.where(ChatSession.is_group == query.is_group)
    if query.q:
        needle = query.q.lower()
        statement = statement.where(
            or_(
                func.lower(ChatSession.title).contains(needle, autoescape=True),
                func.lower(ChatSession.group_name).contains(needle, autoescape=True),
            )
        )
    if not query.include_deleted:
        statement = statement.where(ChatSession.deleted_at.is_(None))
    if query.cursor is not None:
        at, last_id = read_session_cursor(query.cursor)
        statement = statement.where(
            or_(
                ChatSession.last_message_at < at,
                and_(ChatSession.last_message_at == at, ChatSession.id < last_id),
            )
        )
    statement = statement.order_by(ChatSession.last_message_at.desc(), ChatSession.id.desc()).limit(
        query.limit + 1
    )
    async with request.config_dict[SESSIONS]() as db:
        items = [session_view(row) for row in await db.execute(statement)]
    more = len(items) > query.limit
    items = items[: query.limit]
    next_cursor = session_cursor(items[-1].last_message_at, items[-1].id) if more else None
    return respond(SessionPage(items=items, next_cursor=next_cursor))


async def create_session(request: web.Request) -> web.Response:
    body = await read_body(request, CreateSession)
    caller = caller_of(request)
    agent = agent_in_scope(request, body.agent)
    if agent is None:
        raise ApiError(422, "unknown_agent", f"agent: no agent {body.agent!r}")
    if request.config_dict[CHANNELS].get(WEB_CHANNEL, body.agent) is None:
        raise ApiError(409, "channel_disabled", f"the web channel is off for {body.agent!r}")
    async with request.config_dict[PIPELINE].store.write() as writes:
        db = writes.db
        created = await find_or_create_session(
            db,
            agent_id=agent.id,
            external_conv_id=web_conversation_id(),
            source_channel=WEB_CHANNEL,
            title=body.title or None,
            participant_id=caller.participant_id,
        )
        await add_member(db, session_id=created.id, participant_id=caller.participant_id)
        writes.changed("session.updated", created.id, None)
        session = await find_session(db, caller, created.id)
    assert session is not None
    return respond(session, status=201)


async def get_session(request: web.Request) -> web.Response:
    session_id = path_id(request.match_info["id"])
    async with request.config_dict[SESSIONS]() as db:
        session = await find_session(db, caller_of(request), session_id)
    if session is None:
        raise not_found()
    return respond(session)


async def update_session(request: web.Request) -> web.Response:
    session_id = path_id(request.match_info["id"])
    body = await read_body(request, UpdateSession)
    return respond(await _change_session(request, session_id, title=body.title or None))


async def delete_session(request: web.Request) -> web.Response:
    session_id = path_id(request.match_info["id"])
    return respond(await _change_session(request, session_id, deleted_at=utcnow()))


async def restore_session(request: web.Request) -> web.Response:
    session_id = path_id(request.match_info["id"])
    return respond(await _change_session(request, session_id, deleted_at=None))


async def _change_session(
    request: web.Request, session_id: int, **values: str | datetime | None
) -> SessionOut:
    caller = caller_of(request)
    async with request.config_dict[PIPELINE].store.write() as writes:
        db = writes.db
        await _require_visible(db, caller, session_id)
        await db.execute(update(ChatSession).where(ChatSession.id == session_id).values(values))
        writes.changed("session.updated", session_id, None)
        session = await find_session(db, caller, session_id)
    assert session is not None
    return session


async def _require_visible(db: AsyncSession, caller: Caller, session_id: int) -> SessionOut:
    session = await find_session(db, caller, session_id)
    if session is None:
        raise not_found()
    return session
