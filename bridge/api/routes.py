"""The API's routes in one table: the router and the OpenAPI document are both built from it."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from bridge.api import access, asks, auth, export, live, messages, sessions, usage, workspaces
from bridge.api.access_models import ApproveCode, Approved, GrantList, UsageQuery, UsageReport
from bridge.api.agent_send import agent_send
from bridge.api.errors import Handler
from bridge.api.files import download_file
from bridge.api.models import (
    AgentList,
    AskAgent,
    AskQuery,
    CreateSession,
    DevLogin,
    Me,
    MessageOut,
    MessagePage,
    MessageQuery,
    PostMessage,
    SessionOut,
    SessionPage,
    SessionQuery,
    UpdateSession,
)
from bridge.api.send_models import AgentSend
from bridge.api.signed_files import download_signed
from bridge.api.summary import SessionSummary, get_summary
from bridge.api.workspace_models import CreateWorkspace, WorkspaceList, WorkspaceOut

PREFIX = "/api/v1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    response: type[BaseModel] | None
    status: int = 200
    also_ok: tuple[int, ...] = ()
    """Other success statuses with the same response body."""
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    public: bool = False
    websocket: bool = False


ROUTES = (
    Route(
        method="POST",
        path="/auth/dev-login",
        handler=auth.dev_login,
        summary="Sign in as the local user (loopback only, web.dev_login)",
        response=DevLogin,
        errors=(403,),
        public=True,
    ),
    Route(method="GET", path="/me", handler=auth.me, summary="Who the token is", response=Me),
    Route(
        method="GET",
        path="/agents",
        handler=sessions.list_agents,
        summary="The agents",
        response=AgentList,
    ),
    Route(
        method="POST",
        path="/agents/{to}/messages",
        handler=asks.ask_agent,
        summary="One agent asks another (admin); ?wait= returns the answer when it comes in time",
        response=MessageOut,
        status=202,
        also_ok=(200,),
        body=AskAgent,
        query=AskQuery,
        errors=(400, 403, 404, 409, 413, 422, 429),
    ),
    Route(
        method="POST",
        path="/agents/{agent}/send",
        handler=agent_send,
        summary="The agent posts first, into a session or a channel's conversation (admin);"
        " delivered once, like a reply; 200 for a repeated client_message_id",
        response=MessageOut,
        status=202,
        also_ok=(200,),
        body=AgentSend,
        errors=(400, 403, 404, 409, 413, 422),
    ),
    Route(
        method="POST",
        path="/access/approve",
        handler=access.approve_pairing,
        summary="Approve a pairing code (admin): its person may then talk to the agent",
        response=Approved,
        body=ApproveCode,
        errors=(400, 403, 404, 410, 413, 422),
    ),
    Route(
        method="GET",
        path="/agents/{agent}/access",
        handler=access.list_access,
        summary="The identities approved for an agent by pairing (admin)",
        response=GrantList,
        errors=(403, 404),
    ),
    Route(
        method="DELETE",
        path="/agents/{agent}/access/{identity}",
        handler=access.revoke_access,
        summary="Revoke an approval (admin); the person must pair again",
        response=None,
        status=204,
        errors=(403, 404),
    ),
    Route(
        method="GET",
        path="/usage",
        handler=usage.get_usage,
        summary="Messages answered, failed, limited and refused, and tokens, per user or"
        " conversation (admin)",
        response=UsageReport,
        query=UsageQuery,
        errors=(403, 422),
    ),
    Route(
        method="GET",
        path="/workspaces",
        handler=workspaces.list_workspaces,
        summary="Every workspace, deleted ones too (operator)",
        response=WorkspaceList,
        errors=(403,),
    ),
    Route(
        method="POST",
        path="/workspaces",
        handler=workspaces.create_workspace,
        summary="Create a workspace (operator)",
        response=WorkspaceOut,
        status=201,
        body=CreateWorkspace,
        errors=(400, 403, 409, 413, 422),
    ),
    Route(
        method="DELETE",
        path="/workspaces/{workspace}",
        handler=workspaces.delete_workspace,
        summary="Delete a workspace (operator): its sessions are soft-deleted, its tokens revoked",
        response=WorkspaceOut,
        errors=(403, 404, 409),
    ),
    Route(
        method="POST",
        path="/workspaces/{workspace}/restore",
        handler=workspaces.restore_workspace,
        summary="Undo a workspace's delete: what it took comes back (operator)",
        response=WorkspaceOut,
        errors=(403, 404, 409),
    ),
    Route(
        method="GET",
        path="/sessions",
        handler=sessions.list_sessions,
        summary="Sessions, newest activity first (keyset pages)",
        response=SessionPage,
        query=SessionQuery,
        errors=(400, 422),
    ),
    Route(
        method="POST",
        path="/sessions",
        handler=sessions.create_session,
        summary="Start a web session with an agent",
        response=SessionOut,
        status=201,
        body=CreateSession,
        errors=(400, 409, 413, 422),
    ),
    Route(
        method="GET",
        path="/sessions/{id}",
        handler=sessions.get_session,
        summary="One session",
        response=SessionOut,
        errors=(404,),
    ),
    Route(
        method="PATCH",
        path="/sessions/{id}",
        handler=sessions.update_session,
        summary="Rename a session",
        response=SessionOut,
        body=UpdateSession,
        errors=(400, 404, 413, 422),
    ),
    Route(
        method="DELETE",
        path="/sessions/{id}",
        handler=sessions.delete_session,
        summary="Soft-delete a session (hidden from lists, history kept)",
        response=SessionOut,
        errors=(404,),
    ),
    Route(
        method="POST",
        path="/sessions/{id}/restore",
        handler=sessions.restore_session,
        summary="Undo a soft delete",
        response=SessionOut,
        errors=(404,),
    ),
    Route(
        method="GET",
        path="/sessions/{id}/summary",
        handler=get_summary,
        summary="The session's long memory: a summary of what the window dropped (admin)",
        response=SessionSummary,
        errors=(403, 404),
    ),
    Route(
        method="GET",
        path="/sessions/{id}/export",
        handler=export.export_session,
        summary="The session and its messages as JSON lines (application/x-ndjson), streamed",
        response=None,
        status=200,
        errors=(404,),
    ),
    Route(
        method="GET",
        path="/sessions/{id}/messages",
        handler=messages.list_messages,
        summary="A page of messages, oldest first within the page",
        response=MessagePage,
        query=MessageQuery,
        errors=(400, 404, 422),
    ),
    Route(
        method="POST",
        path="/sessions/{id}/messages",
        handler=messages.post_message,
        summary="Send a message; the reply comes on the WebSocket and in the history",
        response=MessageOut,
        status=202,
        body=PostMessage,
        errors=(400, 404, 409, 413, 422),
    ),
    Route(
        method="GET",
        path="/files/{id}",
        handler=download_file,
        summary="An attachment's bytes, as a download (who may see its session; 409: not stored)",
        response=None,
        errors=(404, 409),
    ),
    Route(
        method="GET",
        path="/files/{id}/signed",
        handler=download_signed,
        summary="An attachment's bytes through a signed link (no token; 403: not a valid "
        "link, 410: expired)",
        response=None,
        errors=(403, 404, 409, 410),
        public=True,
    ),
    Route(
        method="GET",
        path="/ws",
        handler=live.websocket,
        summary="Live events (WebSocket): message.created, message.updated, session.updated",
        response=None,
        status=101,
        errors=(400,),
        websocket=True,
    ),
)


def add_routes(api: web.Application) -> None:
    for route in ROUTES:
        api.router.add_route(route.method, route.path, route.handler)
