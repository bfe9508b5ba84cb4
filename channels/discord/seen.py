"""A discord.py message read into a :class:`~channels.discord.inbound.SeenMessage`: the one
place that knows discord.py's message objects on the way in."""

from __future__ import annotations

from typing import Any

import discord

from channels.discord.inbound import SeenMessage, attachment


def seen(message: discord.Message, bot: discord.ClientUser) -> SeenMessage:
    channel = message.channel
    guild = message.guild
    attachments = tuple(
        attachment(
            attachment_id=str(a.id),
            filename=a.filename,
            content_type=a.content_type,
            size=a.size,
            url=a.url,
            channel_id=str(channel.id),
            message_id=str(message.id),
        )
        for a in message.attachments
    )
    common: dict[str, Any] = {
        "message_id": str(message.id),
        "channel_id": str(channel.id),
        "author_id": str(message.author.id),
        "author_name": message.author.display_name,
        "author_is_bot": message.author.bot,
        "content": message.content,
        "mentions_bot": any(user.id == bot.id for user in message.mentions)
        or f"<@{bot.id}>" in message.content
        or f"<@!{bot.id}>" in message.content,
        "attachments": attachments,
    }
    known_guild_id = guild.id if guild is not None else getattr(channel, "guild_id", None)
    if isinstance(channel, discord.DMChannel) or known_guild_id is None:
        return SeenMessage(kind="dm", **common)
    guild_id = str(known_guild_id)
    guild_name = guild.name if guild is not None else None
    if isinstance(channel, discord.Thread):
        parent = channel.parent
        return SeenMessage(
            kind="thread",
            guild_id=guild_id,
            guild_name=guild_name,
            channel_name=channel.name,
            parent_channel_id=str(channel.parent_id),
            parent_channel_name=getattr(parent, "name", None),
            **common,
        )
    return SeenMessage(
        kind="text",
        guild_id=guild_id,
        guild_name=guild_name,
        channel_name=getattr(channel, "name", None),
        **common,
    )
