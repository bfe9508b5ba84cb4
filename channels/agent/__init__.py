"""The agent channel: where one agent's direct asks to another arrive and are answered.

Its sessions are ``agent:{from}`` (or ``agent:{from}:{conversation}``) sessions of the asked
agent. The asking side (the API's ``?wait=``, the ``ask_agent`` tool) reads the stored reply
from the database, so sending is a no-op.
"""

from __future__ import annotations

from bridge.events import AGENT_CHANNEL
from channels.base import ChannelContext
from channels.stored import NoSettings, StoredOnlyChannel


class AgentPlugin:
    name = AGENT_CHANNEL
    settings_model = NoSettings

    def create(self, context: ChannelContext) -> StoredOnlyChannel:
        return StoredOnlyChannel(name=AGENT_CHANNEL)


plugin = AgentPlugin()
