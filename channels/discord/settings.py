"""``[agents.discord]``: one Discord bot per agent."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

DEFAULT_API_BASE_URL = "https://discord.com/api/v10"
DEFAULT_GATEWAY_URL = "wss://gateway.discord.gg/"


class DiscordChannelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bot_token: SecretStr
    require_mention: bool = True
    """In guild channels, answer only when mentioned (DMs always; threads once engaged)."""
    api_base_url: str = DEFAULT_API_BASE_URL
    gateway_url: str = DEFAULT_GATEWAY_URL
    shard_ids: list[int] | None = None
    """The shards this process runs; the others run elsewhere (needs ``shard_count``)."""
    shard_count: int | None = Field(default=None, ge=1, le=10_000)
    restart_max_seconds: float = Field(default=60.0, gt=0)
    """Longest wait between restarts of a crashed or disconnected client."""
    streaming: Literal["edit", "off"] = "edit"
    """``edit``: post the reply with its first text and edit it as the agent writes (about
    once a second, a new message every 2,000 characters); ``off``: post it once, when done."""
    status_reactions: bool = True
    """React on the user's message: 👀 while the agent works, then ✅ answered or ❌ failed."""

    @model_validator(mode="after")
    def _shards_fit(self) -> DiscordChannelSettings:
        if self.shard_ids is not None:
            if self.shard_count is None:
                raise ValueError("shard_ids needs shard_count")
            if not self.shard_ids or len(set(self.shard_ids)) != len(self.shard_ids):
                raise ValueError("shard_ids must be distinct and not empty")
            if any(not 0 <= shard < self.shard_count for shard in self.shard_ids):
                raise ValueError(f"shard_ids must lie in 0..{self.shard_count - 1}")
        return self
