"""The API's request and response bodies. They are the contract: handlers validate with them
and the OpenAPI document is generated from them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.ports.events import storable_text

DeliveryState = Literal["pending", "delivered", "failed"]


class _Strict(BaseModel):
    """Unknown fields are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


def _clean(value: str | None) -> str | None:
    return None if value is None else storable_text(value)


class ErrorDetail(_Strict):
    code: str
    message: str


class ErrorBody(_Strict):
    error: ErrorDetail


class Me(_Strict):
    name: str
    is_admin: bool
    participant_id: int
    workspace: str | None = Field(
        description="The slug of the token's workspace; null for the operator (sees them all)."
    )


class DevLogin(_Strict):
    token: str
    user: str


class AgentOut(_Strict):
    slug: str
    name: str
    backend: str
    peers: list[str] = Field(description="The agents this one may address.")


class AgentList(_Strict):
    items: list[AgentOut]


class ParticipantOut(_Strict):
    id: int
    kind: str
    channel: str
    display_name: str | None


class SessionOut(_Strict):
    id: int
    agent: str
    title: str | None
    source_channel: str
    external_conv_id: str
    is_group: bool
    group_name: str | None
    participant: ParticipantOut | None
    peer_agent: str | None
    parent_session: int | None
    message_count: int
    created_at: datetime
    last_message_at: datetime
    deleted_at: datetime | None


class SessionPage(_Strict):
    items: list[SessionOut]
    next_cursor: str | None


class AttachmentOut(_Strict):
    id: int
    name: str
    content_type: str | None
    size: int | None = Field(description="In bytes; for a refused file, what was sent.")
    sha256: str | None
    state: Literal["pending", "stored", "refused", "failed"] = Field(
        description="stored: `url` downloads it; refused or failed: metadata only (`reason`);"
        " pending: a platform's file still being fetched."
    )
    reason: str | None
    url: str = Field(description="`GET` it with the token: the file, for whoever sees the session.")


class MessageOut(_Strict):
    id: int
    session_id: int
    role: str
    content: str
    sender: ParticipantOut | None
    state: str
    delivery: DeliveryState | None = Field(
        description="For replies: pending until the channel has it, then delivered or failed."
    )
    error: str | None
    attempts: int
    reply_to: int | None
    chain_origin: int = Field(
        description="The human message (or direct ask) whose agent-to-agent chain this is in."
    )
    chain_hops: int = Field(description="Agent-to-agent messages in the chain up to this one.")
    created_at: datetime
    edited_at: datetime | None
    deleted_at: datetime | None
    purged_at: datetime | None = Field(
        default=None,
        description="When retention deleted the content (kept as a tombstone: content empty).",
    )
    attachments: list[AttachmentOut] = Field(default_factory=list, description="In order.")


class MessagePage(_Strict):
    items: list[MessageOut] = Field(description="Oldest first within the page.")
    next_cursor: str | None = Field(description="Pass as `before` for the page of older messages.")


class CreateSession(_Strict):
    agent: str = Field(min_length=1, max_length=64)
    title: str | None = Field(default=None, max_length=255)

    _clean_title = field_validator("title")(_clean)


class UpdateSession(_Strict):
    title: str | None = Field(max_length=255)

    _clean_title = field_validator("title")(_clean)


class PostMessage(_Strict):
    text: str = Field(min_length=1, description="At most `web.max_text_bytes` UTF-8 bytes.")
    client_message_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Makes a retried POST idempotent: the same id in a session is stored once.",
    )

    _clean_text = field_validator("text", "client_message_id")(_clean)


class AskAgent(_Strict):
    from_agent: str = Field(min_length=1, max_length=64, description="The asking agent's slug.")
    text: str = Field(min_length=1, description="At most `web.max_text_bytes` UTF-8 bytes.")
    conversation: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="Keeps separate threads between the same two agents"
        " (`agent:{from}:{conversation}`); without it the pair shares `agent:{from}`.",
    )
    client_message_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Makes a retried ask idempotent: the same id in a conversation is stored once.",
    )

    _clean_text = field_validator("text", "client_message_id")(_clean)


class AskQuery(_Strict):
    wait: float | None = Field(
        default=None,
        ge=0,
        description="Seconds to wait for the answer (at most `a2a.max_wait_seconds`): 200 with"
        " the answer, or 202 with the ask if it is not ready in time.",
    )


class SessionQuery(_Strict):
    agent: str | None = Field(default=None, max_length=64)
    channel: str | None = Field(default=None, max_length=32)
    is_group: bool | None = None
    q: str | None = Field(default=None, max_length=200, description="Searches title and group.")
    include_deleted: bool = False
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=200)

    _clean_q = field_validator("agent", "channel", "q")(_clean)


class MessageQuery(_Strict):
    limit: int = Field(default=50, ge=1, le=200)
    before: str | None = Field(default=None, max_length=200)


class LiveEvent(_Strict):
    """A frame the server pushes on ``/api/v1/ws`` (documentation; built as plain dicts)."""

    type: Literal["message.created", "message.updated", "session.updated"]
    id: int = Field(description="The event id; send the highest seen in `resume`.")
    session_id: int
    message: MessageOut | None = None
    session: SessionOut | None = None
