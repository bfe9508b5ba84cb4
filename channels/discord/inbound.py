"""A Discord message, already read off discord.py's objects, as an InboundMessage or a reason
to ignore it. Pure: no I/O, no discord.py types, so every rule is tested directly."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from bridge.ports.contract import PostAddress
from bridge.ports.errors import CannotPost
from bridge.ports.events import Attachment, InboundMessage, Sender

CHANNEL = "discord"

ChannelKind = Literal["dm", "text", "thread"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SeenMessage:
    message_id: str
    channel_id: str
    kind: ChannelKind
    author_id: str
    author_name: str
    author_is_bot: bool
    content: str
    mentions_bot: bool
    guild_id: str | None = None
    guild_name: str | None = None
    channel_name: str | None = None
    parent_channel_id: str | None = None
    parent_channel_name: str | None = None
    attachments: tuple[Attachment, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Ignored:
    reason: str


def attachment(
    *,
    attachment_id: str,
    filename: str,
    content_type: str | None,
    size: int,
    url: str,
    channel_id: str,
    message_id: str,
) -> Attachment:
    """A Discord attachment, to be fetched later (``pending``). ``source`` keeps what
    :mod:`channels.discord.files` needs: the signed CDN link (it expires), the declared size (to
    refuse a file too large without fetching it) and the ids that name the message again."""
    return Attachment(
        name=filename,
        mime_type=content_type,
        size=size,
        url=url,
        source={
            "attachment_id": attachment_id,
            "url": url,
            "size": size,
            "channel_id": channel_id,
            "message_id": message_id,
        },
    )


def without_bot_mention(content: str, bot_id: str) -> str:
    return re.sub(rf"<@!?{re.escape(bot_id)}>", "", content).strip()


def group_name(channel_name: str | None, guild_name: str | None) -> str | None:
    if channel_name is None:
        return None
    return f"#{channel_name} in {guild_name}" if guild_name else f"#{channel_name}"


def classify(
    seen: SeenMessage, *, agent_slug: str, bot_id: str, require_mention: bool
) -> InboundMessage | Ignored:
    if seen.author_id == bot_id:
        return Ignored("own message")
    if seen.author_is_bot:
        return Ignored("bot author")
    text = without_bot_mention(seen.content, bot_id)
    if not text and not seen.attachments:
        return Ignored("no text")

    def message(conversation: str, **group: object) -> InboundMessage:
        return InboundMessage(
            channel=CHANNEL,
            agent_slug=agent_slug,
            external_conv_id=conversation,
            external_message_id=seen.message_id,
            sender=Sender(external_id=seen.author_id, display_name=seen.author_name),
            text=text,
            attachments=seen.attachments,
            reply_target={
                "channel_id": seen.channel_id,
                "message_id": seen.message_id,
                "guild_id": seen.guild_id or "",
            },
            **group,  # type: ignore[arg-type]
        )

    if seen.kind == "dm" or seen.guild_id is None:
        return message(f"{CHANNEL}:dm:{seen.author_id}")
    addressed = seen.mentions_bot or not require_mention
    if seen.kind == "thread" and seen.parent_channel_id is not None:
        # A thread is its own session under its channel's; once the agent is in it, follow-ups
        # need no mention (checked in the database at ingest).
        return message(
            f"{CHANNEL}:{seen.guild_id}:{seen.channel_id}",
            parent_conv_id=f"{CHANNEL}:{seen.guild_id}:{seen.parent_channel_id}",
            is_group=True,
            group_name=group_name(seen.parent_channel_name, seen.guild_name),
            title=seen.channel_name,
            only_if_engaged=not addressed,
        )
    if not addressed:
        return Ignored("not mentioned")
    return message(
        f"{CHANNEL}:{seen.guild_id}:{seen.channel_id}",
        is_group=True,
        group_name=group_name(seen.channel_name, seen.guild_name),
    )


def _snowflake(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= 20


def post_address(
    *, external_conv_id: str, thread: str | None, last_target: Mapping[str, str] | None
) -> PostAddress:
    """Where an agent posts first: ``discord:{guild}:{channel}``, or a thread (``thread``: its
    channel id) under it; ``discord:dm:{user}`` only once the person has written to the bot,
    because a DM is posted to by its own channel id, which only a message in it tells."""
    parts = external_conv_id.split(":")
    if len(parts) != 3 or parts[0] != CHANNEL or not _snowflake(parts[2]):
        raise CannotPost(
            "a Discord conversation id is discord:{guild}:{channel} or discord:dm:{user}"
        )
    guild, channel = parts[1], parts[2]
    if guild == "dm":
        dm_channel = (last_target or {}).get("channel_id")
        if thread or not dm_channel:
            raise CannotPost("the bot can post to a Discord DM only after the person wrote there")
        return PostAddress(
            external_conv_id=external_conv_id,
            reply_target={"channel_id": dm_channel, "guild_id": ""},
        )
    if not _snowflake(guild) or (thread is not None and not _snowflake(thread)):
        raise CannotPost("Discord guild, channel and thread ids are numbers (snowflakes)")
    if thread:
        return PostAddress(
            external_conv_id=f"{CHANNEL}:{guild}:{thread}",
            reply_target={"channel_id": thread, "guild_id": guild},
            is_group=True,
            parent_conv_id=external_conv_id,
        )
    return PostAddress(
        external_conv_id=external_conv_id,
        reply_target={"channel_id": channel, "guild_id": guild},
        is_group=True,
    )
