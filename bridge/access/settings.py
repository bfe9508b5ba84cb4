"""Who may talk to an agent (``[agents.access]``) and how much (``[agents.limits]``).

The names are part of the configuration contract (README, "Access and limits"). An identity is
``{channel}:{external user id}``, ``web:{token user}`` for web users.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

IDENTITY_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}:\S.{0,254}$")
"""``channel:external id``: a channel name, a colon, a non-empty id."""

DmPolicy = Literal["open", "allowlist", "pairing", "off"]
GroupPolicy = Literal["open", "allowlist", "off"]


def _identities(entries: list[str]) -> list[str]:
    cleaned = [entry.strip() for entry in entries]
    for entry in cleaned:
        if not IDENTITY_PATTERN.match(entry):
            raise ValueError(
                f"{entry!r} is not an identity like 'slack:U0123ABCD' (channel:user id)"
            )
    return cleaned


class AccessSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dm: DmPolicy = "open"
    """Direct conversations: everyone, ``allow`` (and approved pairings), pairing, nobody."""
    groups: GroupPolicy = "open"
    """Group conversations (channels, servers, group chats)."""
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    """Always refused, whatever else says; also applies to other agents' hand-offs."""
    conversations: list[str] = Field(default_factory=list)
    """When not empty, only these conversations (an ``external_conv_id`` or a prefix of it
    ending at a ``:``, so ``slack:T1:C1`` covers its threads but not ``slack:T1:C10``)."""
    denied_text: str = ""
    """When set, sent at most once a day to a refused user in a direct conversation."""

    @field_validator("allow", "deny")
    @classmethod
    def _check_identities(cls, entries: list[str]) -> list[str]:
        return _identities(entries)

    @field_validator("conversations")
    @classmethod
    def _check_conversations(cls, entries: list[str]) -> list[str]:
        cleaned = [entry.strip() for entry in entries]
        for entry in cleaned:
            if not entry or ":" not in entry or entry.endswith(":"):
                raise ValueError(
                    f"{entry!r} is not a conversation id like 'slack:T1:C1' or 'discord:G1'"
                )
        return cleaned

    @property
    def is_open(self) -> bool:
        """Nothing to check: the common case costs nothing on the message path."""
        return (
            self.dm == "open" and self.groups == "open" and not self.deny and not self.conversations
        )


class LimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_messages_per_hour: int = Field(default=0, ge=0)
    """Messages one user may send the agent in any hour (all conversations); 0: no limit."""
    conversation_messages_per_minute: int = Field(default=0, ge=0)
    """Messages one conversation may send the agent in any minute; 0: no limit."""
    user_tokens_per_day: int = Field(default=0, ge=0)
    """Model tokens (input and output) answering one user may cost per UTC day; 0: no limit."""
    limited_text: str = (
        "You are sending messages faster than I can answer. Try again a little later."
    )

    @property
    def any(self) -> bool:
        return bool(
            self.user_messages_per_hour
            or self.conversation_messages_per_minute
            or self.user_tokens_per_day
        )
