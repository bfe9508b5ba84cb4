"""``/api/v1/workspaces``: the operator lists, creates, deletes and restores workspaces.

Only the operator (an admin token bound to no workspace) may; every other token gets the same
403 before anything is read, so it learns nothing of which workspaces exist."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bridge.api.errors import ApiError
from bridge.api.http import caller_of, read_body, respond
from bridge.api.workspace_models import CreateWorkspace, WorkspaceList, WorkspaceOut
from bridge.appkeys import PIPELINE, SESSIONS
from bridge.infra.logs import log_event
from bridge.store.messages import MessageStore
from bridge.workspaces import store as workspaces
from bridge.workspaces.store import SLUG, WorkspaceChange, WorkspaceError, WorkspaceInfo, unknown

logger = logging.getLogger(__name__)

ChangeOf = Callable[[MessageStore, str], Awaitable[WorkspaceChange]]
"""A delete or a restore of the workspace named by its slug."""


def _require_operator(request: web.Request) -> None:
    if not caller_of(request).is_operator:
        raise ApiError(403, "forbidden", "managing workspaces needs the operator's token")


def _api_error(error: WorkspaceError) -> ApiError:
    return ApiError(error.status, error.code, str(error))


def _out(info: WorkspaceInfo) -> WorkspaceOut:
    return WorkspaceOut(
        slug=info.slug,
        name=info.name,
        created_at=info.created_at,
        deleted_at=info.deleted_at,
        agents=info.agents,
        active_tokens=info.active_tokens,
    )


def _log(event: str, change: WorkspaceChange) -> None:
    log_event(
        logger,
        event,
        workspace=change.workspace.slug,
        sessions=change.sessions,
        tokens=change.tokens,
    )


def _path_workspace(request: web.Request) -> str:
    """The ``{workspace}`` of the path; what cannot be a slug is simply not found."""
    slug = request.match_info["workspace"]
    if not SLUG.match(slug):
        raise _api_error(unknown(slug))
    return slug


async def list_workspaces(request: web.Request) -> web.Response:
    _require_operator(request)
    found = await workspaces.list_workspaces(request.config_dict[SESSIONS])
    return respond(WorkspaceList(items=[_out(info) for info in found]))


async def create_workspace(request: web.Request) -> web.Response:
    _require_operator(request)
    body = await read_body(request, CreateWorkspace)
    try:
        info = await workspaces.create_workspace(
            request.config_dict[SESSIONS], slug=body.slug, name=body.name
        )
    except WorkspaceError as error:
        raise _api_error(error) from None
    return respond(_out(info), status=201)


async def _change(request: web.Request, change_of: ChangeOf, event: str) -> web.Response:
    _require_operator(request)
    slug = _path_workspace(request)
    try:
        change = await change_of(request.config_dict[PIPELINE].store, slug)
    except WorkspaceError as error:
        raise _api_error(error) from None
    _log(event, change)
    return respond(_out(change.workspace))


async def delete_workspace(request: web.Request) -> web.Response:
    return await _change(request, workspaces.delete_workspace, "workspace.deleted")


async def restore_workspace(request: web.Request) -> web.Response:
    return await _change(request, workspaces.restore_workspace, "workspace.restored")
