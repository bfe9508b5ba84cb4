"""The Discord channel: a supervised discord.py gateway client per agent, for guild channels,
threads and DMs, with exactly-once replies.

Loaded through the ``bridge.channels`` entry point only when an agent has ``[agents.discord]``.
"""

from __future__ import annotations

from channels.base import ChannelContext
from channels.discord.adapter import DiscordChannel
from channels.discord.settings import DiscordChannelSettings


class DiscordPlugin:
    name = "discord"
    settings_model = DiscordChannelSettings

    def create(self, context: ChannelContext) -> DiscordChannel:
        assert isinstance(context.settings, DiscordChannelSettings)
        return DiscordChannel(
            agent=context.agent,
            settings=context.settings,
            ingest=context.ingest,
            edit=context.edit,
        )


plugin = DiscordPlugin()
