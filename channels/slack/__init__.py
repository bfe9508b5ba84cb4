"""The Slack channel: slack-bolt Events API (HTTP) or Socket Mode, threads, exactly-once replies.

Loaded through the ``bridge.channels`` entry point only when an agent has ``[agents.slack]``.
"""

from __future__ import annotations

from bridge.ports import Capabilities, ChannelPlugin
from channels.slack.adapter import SlackChannel
from channels.slack.outbound import PART_LIMIT
from channels.slack.settings import SlackChannelSettings

plugin = ChannelPlugin(
    name="slack",
    settings_model=SlackChannelSettings,
    capabilities=Capabilities(
        shared_rooms=True,
        threads=True,
        max_reply_chars=PART_LIMIT,
        webhook=True,
        streaming=True,
        sends_files=True,
    ),
    create=SlackChannel,
)
