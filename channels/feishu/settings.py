"""``[agents.feishu]``: one Feishu (or Lark) app per agent."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class FeishuChannelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app_id: str = Field(min_length=1)
    app_secret: SecretStr
    verification_token: SecretStr
    encrypt_key: SecretStr | None = None
    """When set, events arrive encrypted (AES-256-CBC) and signed; both are checked."""
    replay_window_seconds: int = Field(default=300, ge=1, le=86_400)
    """A signed event whose ``X-Lark-Request-Timestamp`` is further than this from now, in
    either direction, is refused (401): a captured request cannot be replayed later."""
    base_url: str = "https://open.feishu.cn"
    """``https://open.larksuite.com`` for Lark."""
    require_mention: bool = True
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    lookup_timeout_seconds: float = Field(default=1.5, gt=0)
    """Longest wait for a user's or chat's name before a message is stored without it."""
    names_cache_hours: float = Field(default=24.0, gt=0)
    streaming: Literal["card", "off"] = "card"
    """``card``: a reply appears while it is written, in a CardKit streaming card (one per
    part) that the final delivery finishes with the exact text; ``off``: each part is posted
    once, finished, as a Markdown post."""
    status_reactions: bool = True
    """Mark the message being answered with ``OnIt``, then ``DONE`` (answered) or
    ``CrossMark`` (failed)."""
