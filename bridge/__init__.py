"""Chat bridge: AI agents meet people in web chat, Slack, Discord and Feishu/Lark."""

__version__ = "0.1.0"
