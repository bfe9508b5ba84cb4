"""The Discord channel: a supervised discord.py gateway client per agent, for guild channels,
threads and DMs, with exactly-once replies.

Loaded through the ``bridge.channels`` entry point only when an agent has ``[agents.discord]``.
"""

from __future__ import annotations

from bridge.ports import Capabilities, ChannelPlugin
from channels.discord.adapter import DiscordChannel
from channels.discord.outbound import PART_LIMIT
from channels.discord.settings import DiscordChannelSettings

plugin = ChannelPlugin(
    name="discord",
    settings_model=DiscordChannelSettings,
    capabilities=Capabilities(
        shared_rooms=True,
        threads=True,
        max_reply_chars=PART_LIMIT,
        streaming=True,
        sends_files=True,
    ),
    create=DiscordChannel,
)
