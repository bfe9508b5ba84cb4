"""The Feishu/Lark channel: the encrypted event webhook, p2p and group chats, topic threads,
and replies through the Open API with the project's own aiohttp client: streamed in CardKit
cards while they are written, Markdown posts otherwise, with status reactions, and a reply's
files uploaded and posted as image or file messages, exactly once.

Loaded through the ``bridge.channels`` entry point only when an agent has ``[agents.feishu]``.
"""

from __future__ import annotations

from bridge.ports import Capabilities, ChannelPlugin
from channels.feishu.adapter import FeishuChannel
from channels.feishu.outbound import PART_LIMIT
from channels.feishu.settings import FeishuChannelSettings

plugin = ChannelPlugin(
    name="feishu",
    settings_model=FeishuChannelSettings,
    capabilities=Capabilities(
        shared_rooms=True,
        threads=True,
        max_reply_chars=PART_LIMIT,
        webhook=True,
        streaming=True,
        sends_files=True,
    ),
    create=FeishuChannel,
)
