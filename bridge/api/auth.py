"""Bearer-token authentication, the live socket's origin check, and the local sign-in for
``make run``."""

from __future__ import annotations

import logging

from aiohttp import web

from bridge.api.clients import client_address, forwarding_headers, is_loopback
from bridge.api.errors import ApiError, Handler
from bridge.api.http import CALLER, caller_of, respond
from bridge.api.models import DevLogin, Me
from bridge.api.origins import DEFAULT_PORTS, check_socket_origin, parse_origin, split_host
from bridge.api.tokens import find_caller, rotate_token
from bridge.appkeys import SESSIONS, SETTINGS
from bridge.files.links import is_signed_file_path
from bridge.infra.logs import log_event
from bridge.settings import Settings
from bridge.workspaces.store import workspace_slug

logger = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/api/v1/auth/dev-login", "/api/v1/openapi.json"})
QUERY_TOKEN_PATHS = frozenset({"/api/v1/ws"})
"""Browsers cannot set headers on a WebSocket, so there the token may come as ``?token=``."""
DEV_USER = "local"
LOCAL_TOKEN_NAME = "local-sign-in"
"""The one token the local sign-in keeps (rotated on every sign-in)."""


def _presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.path in QUERY_TOKEN_PATHS:
        return request.query.get("token") or None
    return None


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in QUERY_TOKEN_PATHS or _is_upgrade(request):
        check_socket_origin(request)  # before the token: another site's page learns nothing
    if request.path in PUBLIC_PATHS or is_signed_file_path(request.path):
        return await handler(request)  # a signed file link carries its own credential
    token = _presented_token(request)
    if token is None:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    caller = await find_caller(request.config_dict[SESSIONS], token)
    if caller is None:
        raise ApiError(401, "unauthorized", "unknown or revoked token")
    request[CALLER] = caller
    return await handler(request)


def dev_login_enabled(settings: Settings) -> bool:
    """Local sign-in is for a bridge only this machine can reach: listening on loopback, with
    no reverse proxy in front (a proxy on the same host makes every visitor look local)."""
    return (
        settings.web.dev_login
        and is_loopback(settings.http.host)
        and not settings.http.trusted_proxies
    )


def _listening_port(request: web.Request) -> int | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2 and isinstance(sockname[1], int):
        return sockname[1]
    return None


def why_not_local(request: web.Request) -> str | None:
    """Why this request may not be a person at this machine using this bridge (None: it is).

    Each rule closes one way in: a remote peer; a proxy on this host relaying a remote
    client; a page of another site whose name resolves to 127.0.0.1 (DNS rebinding: its
    ``Host`` is not ours); a page of another site posting here (its ``Origin`` is not ours)."""
    if not is_loopback(request.remote):
        return "the connection is not from this machine"
    relayed = forwarding_headers(request)
    if relayed:
        return f"the request was relayed by a proxy ({relayed[0]})"
    host = split_host(request.headers.get("Host", ""))
    port = _listening_port(request)
    if host is None or not is_loopback(host[0]):
        return "the Host header is not localhost or a loopback address"
    if (host[1] or DEFAULT_PORTS.get(request.scheme)) != port:
        return "the Host header names another port"
    origin = request.headers.get("Origin")
    if origin is not None:
        parts = parse_origin(origin)
        if parts is None or parts.scheme != request.scheme or split_host(parts.netloc) != host:
            return "the request comes from another site's page"
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return "the request comes from another site's page"
    return None


async def dev_login(request: web.Request) -> web.Response:
    """An admin token for the local user, for a person at this machine (see ``why_not_local``).
    Each sign-in replaces the previous local token: there is never more than one."""
    settings = request.config_dict[SETTINGS]
    client = client_address(request)
    if not dev_login_enabled(settings):
        log_event(logger, "api.dev_login_refused", client=client, reason="disabled")
        raise ApiError(
            403,
            "dev_login_disabled",
            "sign in with a token (bridge token create NAME); local sign-in needs "
            "web.dev_login = true, http.host on loopback and no http.trusted_proxies",
        )
    reason = why_not_local(request)
    if reason is not None:
        log_event(logger, "api.dev_login_refused", client=client, reason=reason)
        raise ApiError(403, "dev_login_not_local", f"local sign-in is for this machine: {reason}")
    token = await rotate_token(request.config_dict[SESSIONS], name=LOCAL_TOKEN_NAME, user=DEV_USER)
    log_event(logger, "api.dev_login", client=client, token=LOCAL_TOKEN_NAME)
    return respond(DevLogin(token=token, user=DEV_USER))


async def me(request: web.Request) -> web.Response:
    caller = caller_of(request)
    workspace = None
    if caller.workspace_id is not None:
        async with request.config_dict[SESSIONS]() as db:
            workspace = await workspace_slug(db, caller.workspace_id)
    return respond(
        Me(
            name=caller.user,
            is_admin=caller.is_admin,
            participant_id=caller.participant_id,
            workspace=workspace,
        )
    )
