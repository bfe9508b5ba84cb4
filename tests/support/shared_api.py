"""A running bridge with API clients for some users, and the steps the API tests repeat."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bridge.settings import Settings
from tests.support.api import ApiClient, LiveSocket, api_clients
from tests.support.harness import RunningBridge, running_bridge


@asynccontextmanager
async def bridge_with_users(
    settings: Settings, *names: str, admin: str = ""
) -> AsyncIterator[tuple[RunningBridge, dict[str, ApiClient]]]:
    """The real app on ``settings``, and one signed-in client per name (``admin`` names the
    one with an admin token)."""
    async with (
        running_bridge(settings) as bridge,
        api_clients(bridge.url, bridge.sessions, *names, admin=admin) as users,
    ):
        yield bridge, users


async def live_exchange(client: ApiClient, session_id: int, text: str) -> tuple[Any, int]:
    """Says ``text`` with a live socket open and waits there for the delivered reply; returns
    the reply and the last event id the socket saw (where a reconnect resumes from)."""
    async with client.live() as live:
        sent = await client.say(session_id, text)
        reply = await live.reply_to(sent["id"])
        return reply, live.last_event_id


async def resume_is_reset(live: LiveSocket, last_event_id: int) -> None:
    """Resuming from ``last_event_id`` makes the server ask the client to reload."""
    await live.socket.send_json({"type": "resume", "last_event_id": last_event_id})
    await live.next(lambda f: f["type"] == "reset", within=3)


@asynccontextmanager
async def user_with_session(
    settings: Settings, name: str = "alice", *, admin: bool = False
) -> AsyncIterator[tuple[RunningBridge, ApiClient, Any]]:
    """The real app on ``settings``, the client of user ``name`` (an admin if ``admin``) and a
    new session of theirs with the default agent."""
    async with bridge_with_users(settings, name, admin=name if admin else "") as (bridge, users):
        client = users[name]
        yield bridge, client, await client.new_session()
