"""Bearer-token authentication, and the local sign-in for ``make run``."""

from __future__ import annotations

import ipaddress
import logging
import secrets

from aiohttp import web

from bridge.api.errors import ApiError, Handler
from bridge.api.http import CALLER, caller_of, respond
from bridge.api.models import DevLogin, Me
from bridge.appkeys import SESSIONS, SETTINGS
from bridge.logs import log_event
from bridge.settings import Settings
from bridge.tokens import create_token, find_caller

logger = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/api/v1/auth/dev-login", "/api/v1/openapi.json"})
QUERY_TOKEN_PATHS = frozenset({"/api/v1/ws"})
"""Browsers cannot set headers on a WebSocket, so there the token may come as ``?token=``."""
DEV_USER = "local"


def _presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.path in QUERY_TOKEN_PATHS:
        return request.query.get("token") or None
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    token = _presented_token(request)
    if token is None:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    caller = await find_caller(request.config_dict[SESSIONS], token)
    if caller is None:
        raise ApiError(401, "unauthorized", "unknown or revoked token")
    request[CALLER] = caller
    return await handler(request)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def dev_login_enabled(settings: Settings) -> bool:
    return settings.web.dev_login and _is_loopback(settings.http.host)


async def dev_login(request: web.Request) -> web.Response:
    """A fresh admin token for the local user, only on a bridge that listens on loopback alone
    and only for a request from loopback."""
    settings = request.config_dict[SETTINGS]
    if not dev_login_enabled(settings) or not _is_loopback(request.remote):
        raise ApiError(
            403,
            "dev_login_disabled",
            "sign in with a token (bridge token create NAME); local sign-in needs "
            "web.dev_login = true and http.host on loopback",
        )
    name = f"dev-login-{secrets.token_hex(6)}"
    token = await create_token(request.config_dict[SESSIONS], name=name, admin=True, user=DEV_USER)
    log_event(logger, "api.dev_login", token=name)
    return respond(DevLogin(token=token, user=DEV_USER))


async def me(request: web.Request) -> web.Response:
    caller = caller_of(request)
    return respond(
        Me(name=caller.user, is_admin=caller.is_admin, participant_id=caller.participant_id)
    )
