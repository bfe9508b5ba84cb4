"""``[agents.slack]``: one Slack app per agent."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

Streaming = Literal["native", "update", "off"]


class SlackChannelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bot_token: SecretStr
    """The bot token (``xoxb-…``)."""
    signing_secret: SecretStr | None = None
    """Verifies HTTP events; required unless ``app_token`` selects Socket Mode."""
    app_token: SecretStr | None = None
    """An app-level token (``xapp-…``): connect over Socket Mode instead of HTTP events."""
    api_base_url: str = "https://slack.com/api/"
    require_mention: bool = True
    thread_replies: bool = True
    names_cache_hours: float = Field(default=24.0, gt=0)
    """How long user and channel names from ``users.info`` / ``conversations.info`` are kept."""
    lookup_timeout_seconds: float = Field(default=1.5, gt=0)
    """Longest wait for those names before a message is stored without them."""
    streaming: Streaming = "native"
    """How a reply shows while it is written: ``native`` streams it (``chat.startStream``, in
    the thread of the message it answers), ``update`` posts it and edits it as it grows,
    ``off`` posts the finished reply only."""
    status_reactions: bool = True
    """React to the message being answered: 👀 while on it, then ✅ (answered) or ❌ (failed)."""

    @model_validator(mode="after")
    def _signing_secret_for_http(self) -> SlackChannelSettings:
        if self.app_token is None and self.signing_secret is None:
            raise ValueError("signing_secret is required for HTTP events (or set app_token)")
        return self
