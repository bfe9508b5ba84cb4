"""The body of ``POST /api/v1/agents/{agent}/send``: an agent posts first."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.ports.events import MAX_ID_LENGTH, storable_text

MAX_ID = 2**63 - 1


class SendFile(BaseModel):
    """A file posted with the message, its content in base64."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=1000, description="Cleaned to a safe file name.")
    content_type: str | None = Field(
        default=None, max_length=255, description="`type/subtype`; else octet-stream."
    )
    data_base64: str = Field(description="The content, base64; at most `files.max_bytes`.")


class AgentSend(BaseModel):
    """Either ``session_id`` or ``channel`` with ``external_conv_id`` (and ``thread``)."""

    model_config = ConfigDict(extra="forbid")

    session_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="A session of the agent, visible to the caller."
    )
    channel: str | None = Field(
        default=None, min_length=1, max_length=32, description="slack, discord, feishu, web …"
    )
    external_conv_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="The conversation as the channel names it (`slack:{team}:{channel}`,"
        " `discord:{guild}:{channel}`, `feishu:{chat_id}`, `web:{uuid}` …): its session is found"
        " or created.",
    )
    thread: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="Post in this thread of the conversation (Slack: the root message's ts;"
        " Discord: the thread's channel id).",
    )
    text: str = Field(min_length=1, description="At most `web.max_text_bytes` UTF-8 bytes.")
    attachments: list[SendFile] | None = Field(
        default=None,
        description="Files sent with the text, in order (at most `files.max_files_per_message`,"
        " each at most `files.max_bytes`): uploaded natively where the channel can, else listed"
        " in the text.",
    )
    client_message_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Makes a retried request idempotent: the same id for the same agent and"
        " session stores one message (the retry answers 200 with it).",
    )

    _clean = field_validator("channel", "external_conv_id", "thread", "text", "client_message_id")(
        lambda value: None if value is None else storable_text(value)
    )

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        by_conversation = self.channel is not None or self.external_conv_id is not None
        if (self.session_id is None) == (not by_conversation):
            raise ValueError("give session_id, or channel and external_conv_id")
        if by_conversation and (self.channel is None or self.external_conv_id is None):
            raise ValueError("give both channel and external_conv_id")
        if self.thread is not None and self.session_id is not None:
            raise ValueError("thread goes with channel and external_conv_id")
        return self
