"""Platform webhooks: ``POST /{channel}/{agent}/events`` for every configured channel whose
capabilities say ``webhook``, handed to the running channel.

Routes must exist before the app starts and channels are created once the pipeline runs, so the
route looks its channel up per request; until the channel exists the platform gets a 503 and
delivers again later.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.appkeys import CHANNELS
from bridge.ports.contract import WebhookChannel


def add_webhook_routes(app: web.Application) -> None:
    for configured in app[CHANNELS].configured():
        if configured.plugin.capabilities.webhook:
            name, slug = configured.plugin.name, configured.agent.slug
            app.router.add_post(f"/{name}/{slug}/events", _handler(name, slug))


def _handler(name: str, slug: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        channel = request.config_dict[CHANNELS].get(name, slug)
        if not isinstance(channel, WebhookChannel):
            return web.json_response({"error": f"{name} is not running"}, status=503)
        return await channel.handle_webhook(request)

    return handle
