"""The web channel: the bridge's own chat page and HTTP API.

It is on for every agent unless an agent says ``[agents.web] enabled = false``. Sending is a
no-op that always succeeds: the reply is already in the database, and marking it delivered
writes the change that the live clients (the WebSocket) stream from there, from any process.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from bridge.events import WEB_CHANNEL, Reply
from channels.base import ChannelContext, ChannelStatus


class WebChannelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebChannel:
    name = WEB_CHANNEL

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, reply: Reply) -> Sequence[str]:
        return [f"web:{reply.message_id}"]

    def status(self) -> ChannelStatus:
        return ChannelStatus(ready=True)

    def mention_id(self) -> str | None:
        return None


class WebPlugin:
    name = WEB_CHANNEL
    settings_model = WebChannelSettings

    def create(self, context: ChannelContext) -> WebChannel:
        return WebChannel()


plugin = WebPlugin()
