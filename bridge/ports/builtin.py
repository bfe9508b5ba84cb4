"""The core's own channels: the web chat (and HTTP API) and direct asks between agents.

They are part of the core, not plugins: their routes are the API's, and their replies need no
platform. Sending always succeeds at once: the reply is already in the database, and marking it
delivered writes the change that live clients and waiting callers read from there, from any
process. Every agent has both unless its section says ``enabled = false``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from bridge.ports.contract import (
    Capabilities,
    ChannelContext,
    ChannelPlugin,
    ChannelStatus,
    PostAddress,
)
from bridge.ports.errors import CannotPost
from bridge.ports.events import AGENT_CHANNEL, WEB_CHANNEL, Reply


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

    def post_address(
        self,
        *,
        external_conv_id: str,
        thread: str | None,
        last_target: Mapping[str, str] | None,
    ) -> PostAddress:
        """A web conversation is ``web:{uuid}`` and needs no target (its messages live in the
        database); direct asks are started by the asking agent, never posted to first."""
        if self.name != WEB_CHANNEL:
            raise CannotPost(f"the {self.name} channel takes no posts; ask the agent instead")
        if thread:
            raise CannotPost("the web channel has no threads")
        prefix, _, rest = external_conv_id.partition(":")
        try:
            valid = prefix == WEB_CHANNEL and str(uuid.UUID(rest)) == rest
        except ValueError:
            valid = False
        if not valid:
            raise CannotPost(f"a web conversation id is web:{{uuid}}, not {external_conv_id!r}")
        return PostAddress(external_conv_id=external_conv_id, reply_target={})


def _stored_only(name: str, capabilities: Capabilities) -> ChannelPlugin[NoSettings]:
    def create(*, context: ChannelContext[NoSettings]) -> StoredOnlyChannel:
        return StoredOnlyChannel(name=name)

    return ChannelPlugin(
        name=name, settings_model=NoSettings, capabilities=capabilities, create=create
    )


WEB = _stored_only(WEB_CHANNEL, Capabilities(stores_replies=True, always_on=True))
AGENT = _stored_only(
    AGENT_CHANNEL, Capabilities(stores_replies=True, always_on=True, peer_sessions=True)
)
BUILT_IN: dict[str, ChannelPlugin[NoSettings]] = {WEB.name: WEB, AGENT.name: AGENT}
