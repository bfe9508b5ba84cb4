"""A channel whose replies need no platform: the web chat and direct asks between agents.

Sending always succeeds at once: the reply is already in the database, and marking it delivered
writes the change that live clients and waiting callers read from there, from any process.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from bridge.events import Reply
from channels.base import ChannelContext, ChannelStatus


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoredOnlyChannel:
    def __init__(self, *, name: str) -> None:
        self.name = name

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, reply: Reply) -> Sequence[str]:
        return [f"{self.name}:{reply.message_id}"]

    def status(self) -> ChannelStatus:
        return ChannelStatus(ready=True)

    def mention_id(self) -> str | None:
        return None


class StoredOnlyPlugin:
    """The plugin of such a channel: one settings-free instance per agent."""

    settings_model = NoSettings

    def __init__(self, *, name: str) -> None:
        self.name = name

    def create(self, context: ChannelContext) -> StoredOnlyChannel:
        return StoredOnlyChannel(name=self.name)
