"""Approved pairings, for operators: approve a code, list and revoke approvals. The same
operations back ``bridge access ...`` and the admin routes ``/api/v1/access/approve`` and
``/api/v1/agents/{agent}/access``; their failures carry an HTTP status and one line."""

from __future__ import annotations

import re

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.access.settings import IDENTITY_PATTERN
from bridge.access.store import Grant, PairingError, approve, grants, revoke
from bridge.access.usage import agent_id_of
from bridge.api.access_models import SLUG_PATTERN, ApproveCode, Approved, GrantList, GrantOut
from bridge.api.errors import ApiError
from bridge.api.http import caller_of, read_body, respond
from bridge.appkeys import SESSIONS
from bridge.ports.events import storable_text
from bridge.store.models import PAIRING_CODES, Agent, utcnow

_SLUG = re.compile(SLUG_PATTERN)


class AccessError(Exception):
    """An expected failure: ``status`` and ``code`` for the API, the message for both."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


async def _agent_id(db: AsyncSession, slug: str, workspace_id: int | None) -> int:
    """The agent's id; an agent of another workspace is not found, like one never recorded."""
    agent_id = await agent_id_of(db, slug, workspace_id=workspace_id)
    if agent_id is None:
        raise AccessError(
            404,
            "not_found",
            f"unknown agent {slug!r} (agents are recorded when `bridge serve` starts)",
        )
    return agent_id


async def approve_code(
    sessions: async_sessionmaker[AsyncSession], code: str, *, workspace_id: int | None = None
) -> Approved:
    """Approve the identity a live pairing code was given to; 404 for a code never issued
    (or already used), 410 for an expired one. With ``workspace_id`` (a workspace admin), a
    code for an agent of another workspace is 404 as if never issued, and is left alone."""
    async with sessions() as db, db.begin():
        if workspace_id is not None and not await _code_in_workspace(db, code, workspace_id):
            raise AccessError(404, "not_found", f"no pairing code {code.strip()!r}")
        try:
            agent_id, identity = await approve(db, code=code, now=utcnow())
        except PairingError as error:
            issued = await db.execute(
                select(PAIRING_CODES.c.id).where(PAIRING_CODES.c.code == code.strip().upper())
            )
            if issued.first() is None:
                raise AccessError(404, "not_found", str(error)) from None
            raise AccessError(410, "expired", str(error)) from None
        slug = (await db.execute(select(Agent.slug).where(Agent.id == agent_id))).scalar_one()
    return Approved(agent=slug, identity=identity)


async def _code_in_workspace(db: AsyncSession, code: str, workspace_id: int) -> bool:
    """Whether ``code`` was issued for an agent of ``workspace_id`` (the code's row, joined to
    its agent)."""
    p = PAIRING_CODES.c
    found = await db.execute(
        select(p.id)
        .join(Agent, Agent.id == p.agent_id)
        .where(p.code == code.strip().upper(), Agent.workspace_id == workspace_id)
    )
    return found.first() is not None


async def list_grants(
    sessions: async_sessionmaker[AsyncSession], agent: str, *, workspace_id: int | None = None
) -> list[Grant]:
    """``workspace_id``: only an agent of that workspace is found (None: any agent)."""
    async with sessions() as db:
        return await grants(db, agent_id=await _agent_id(db, agent, workspace_id))


async def revoke_grant(
    sessions: async_sessionmaker[AsyncSession],
    agent: str,
    identity: str,
    *,
    workspace_id: int | None = None,
) -> None:
    async with sessions() as db, db.begin():
        agent_id = await _agent_id(db, agent, workspace_id)
        if not await revoke(db, agent_id=agent_id, identity=identity):
            raise AccessError(
                404, "not_found", f"{identity} is not approved for {agent}; nothing revoked"
            )


# --- the admin routes ------------------------------------------------------------------------


def _require_admin(request: web.Request) -> None:
    if not caller_of(request).is_admin:
        raise ApiError(403, "forbidden", "managing access needs an admin token")


def _api_error(error: AccessError) -> ApiError:
    return ApiError(error.status, error.code, str(error))


def _path_agent(request: web.Request) -> str:
    """The ``{agent}`` of the path; what cannot be a slug is simply not found."""
    slug = request.match_info["agent"]
    if not _SLUG.match(slug):
        raise ApiError(404, "not_found", "no such agent")
    return slug


async def approve_pairing(request: web.Request) -> web.Response:
    _require_admin(request)
    body = await read_body(request, ApproveCode)
    try:
        approved = await approve_code(
            request.config_dict[SESSIONS], body.code, workspace_id=caller_of(request).workspace_id
        )
    except AccessError as error:
        raise _api_error(error) from None
    return respond(approved)


async def list_access(request: web.Request) -> web.Response:
    _require_admin(request)
    agent = _path_agent(request)
    try:
        found = await list_grants(
            request.config_dict[SESSIONS], agent, workspace_id=caller_of(request).workspace_id
        )
    except AccessError as error:
        raise _api_error(error) from None
    return respond(
        GrantList(
            items=[
                GrantOut(identity=grant.identity, approved_at=grant.created_at) for grant in found
            ]
        )
    )


async def revoke_access(request: web.Request) -> web.Response:
    _require_admin(request)
    agent = _path_agent(request)
    identity = request.match_info["identity"]
    if not IDENTITY_PATTERN.match(identity) or storable_text(identity) != identity:
        raise ApiError(404, "not_found", f"{identity!r} is not an identity; nothing revoked")
    try:
        await revoke_grant(
            request.config_dict[SESSIONS],
            agent,
            identity,
            workspace_id=caller_of(request).workspace_id,
        )
    except AccessError as error:
        raise _api_error(error) from None
    return web.Response(status=204)
