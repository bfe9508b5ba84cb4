"""The HTTP API under ``/api/v1`` and the chat page: ``setup_api(app)`` mounts both."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from bridge.api.auth import auth_middleware
from bridge.api.errors import error_middleware
from bridge.api.live import LIVE, LiveHub
from bridge.api.openapi import openapi_json
from bridge.api.page import add_page_routes
from bridge.api.routes import PREFIX, add_routes
from bridge.appkeys import PIPELINE, SESSIONS, SETTINGS


def setup_api(app: web.Application) -> None:
    api = web.Application(middlewares=[error_middleware, auth_middleware])
    add_routes(api)
    api.router.add_get("/openapi.json", openapi_json)
    app.add_subapp(PREFIX, api)
    add_page_routes(app)
    app.cleanup_ctx.append(_live)
    app.on_shutdown.append(_close_live_clients)


async def _live(app: web.Application) -> AsyncIterator[None]:
    web_settings = app[SETTINGS].web
    hub = LiveHub(
        sessions=app[SESSIONS],
        signals=app[PIPELINE].signals,
        retention_hours=web_settings.event_retention_hours,
        send_timeout_seconds=web_settings.live_send_timeout_seconds,
        max_catch_up_events=web_settings.live_max_catch_up_events,
        deltas=app[PIPELINE].deltas,
    )
    app[LIVE] = hub
    await hub.start()
    try:
        yield
    finally:
        await hub.stop()


async def _close_live_clients(app: web.Application) -> None:
    if LIVE in app:
        await app[LIVE].close_all()
