"""Bodies of the admin routes for access (pairing approvals) and usage. Like ``models``, they
are the contract: handlers validate with them and the OpenAPI document is built from them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""An agent's slug, as the ``{to}`` path parameter documents it."""

GroupBy = Literal["user", "conversation"]


class _Strict(BaseModel):
    """Unknown fields are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ApproveCode(_Strict):
    code: str = Field(
        min_length=1,
        max_length=16,
        pattern=r"^[A-Za-z0-9]+$",
        description="The pairing code the person got in a DM (case does not matter).",
    )


class Approved(_Strict):
    agent: str = Field(description="The slug of the agent the identity may now talk to.")
    identity: str = Field(description="`{channel}:{user id}`, e.g. `slack:U0123ABCD`.")


class GrantOut(_Strict):
    identity: str
    approved_at: datetime


class GrantList(_Strict):
    items: list[GrantOut] = Field(description="Oldest approval first.")


class UsageQuery(_Strict):
    agent: str | None = Field(
        default=None, pattern=SLUG_PATTERN, description="One agent's slug; all agents if absent."
    )
    since: AwareDatetime | None = Field(
        default=None,
        description="ISO 8601 with an offset (`2026-05-01T00:00:00Z`); 24 hours ago if absent."
        " Refusals are counted per hour: those of the hour `since` falls in all count.",
    )
    group_by: GroupBy = "user"

    @field_validator("since")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("the moment is out of range") from None


class _Figures(_Strict):
    agent: str
    answered: int = Field(description="User messages answered.")
    failed: int = Field(description="User messages the agent failed to answer.")
    limited: int = Field(description="User messages stopped by a rate limit or token budget.")
    refused: int = Field(description="Messages refused by the access policy (never stored).")
    input_tokens: int = Field(description="Model tokens the answers read (as backends report).")
    output_tokens: int = Field(description="Model tokens the answers wrote.")


class UserUsage(_Figures):
    user: str = Field(description="The identity, `{channel}:{user id}` (`web:{name}`).")


class ConversationUsage(_Figures):
    conversation: str = Field(description="The session's `external_conv_id`.")


class UsageReport(_Strict):
    agent: str | None
    since: datetime
    group_by: GroupBy
    items: list[UserUsage] | list[ConversationUsage] = Field(
        description="One row per user or conversation (and agent), sorted by it."
    )
