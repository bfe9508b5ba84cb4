"""The Feishu/Lark channel: the encrypted event webhook, p2p and group chats, topic threads,
and replies through the Open API with the project's own aiohttp client.

Loaded through the ``bridge.channels`` entry point only when an agent has ``[agents.feishu]``.
"""

from __future__ import annotations

from channels.base import ChannelContext
from channels.feishu.adapter import FeishuChannel
from channels.feishu.settings import FeishuChannelSettings


class FeishuPlugin:
    name = "feishu"
    settings_model = FeishuChannelSettings

    def create(self, context: ChannelContext) -> FeishuChannel:
        assert isinstance(context.settings, FeishuChannelSettings)
        return FeishuChannel(
            agent=context.agent,
            settings=context.settings,
            ingest=context.ingest,
            conversation=context.conversation,
            web_app=context.web_app,
        )


plugin = FeishuPlugin()
