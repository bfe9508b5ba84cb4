"""The Slack channel: slack-bolt Events API (HTTP) or Socket Mode, threads, exactly-once replies.

Loaded through the ``bridge.channels`` entry point only when an agent has ``[agents.slack]``.
"""

from __future__ import annotations

from channels.base import ChannelContext
from channels.slack.adapter import SlackChannel
from channels.slack.settings import SlackChannelSettings


class SlackPlugin:
    name = "slack"
    settings_model = SlackChannelSettings

    def create(self, context: ChannelContext) -> SlackChannel:
        assert isinstance(context.settings, SlackChannelSettings)
        return SlackChannel(
            agent=context.agent,
            settings=context.settings,
            ingest=context.ingest,
            edit=context.edit,
            web_app=context.web_app,
        )


plugin = SlackPlugin()
