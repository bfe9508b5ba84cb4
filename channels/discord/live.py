"""Discord replies while they are written, their final delivery, and status reactions.

Discord has no native stream: a live reply posts its first part with the first text (the
same ``nonce`` the final delivery uses for that part, so a retry or a crash never posts it
twice), edits it as the text grows, and continues in a new message at 2,000 characters, split
exactly as the final reply is (part ``i`` of the live view is part ``i`` of the final). The final
delivery edits every live part to its exact text, posts the parts that have no live message,
and deletes live messages beyond the final part count. Status: 👀 on the user's message while
the agent works, then ✅ (answered) or ❌ (failed); best effort.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence

import discord

from bridge.infra.logs import log_event
from bridge.ports.errors import DeliveryError
from bridge.ports.events import Reply, ReplyOutcome
from bridge.ports.live import Draft
from channels.discord.outbound import delivery_error, part_nonce, reply_parts, with_mentions

logger = logging.getLogger(__name__)

EDIT_INTERVAL_SECONDS = 1.0
"""The least time between two updates of a live reply. Discord does not publish its edit
limits; PATCH buckets are observed at about one edit per second per channel (and creates and
edits are said to share about five per five seconds per channel), so one update a second keeps
a reply inside them and leaves room for other replies in the channel. discord.py still waits
out any 429 it meets (and Discord's rate-limit headers) before retrying."""
WORKING = "\N{EYES}"
DONE: Mapping[ReplyOutcome, str] = {
    "answered": "\N{WHITE HEAVY CHECK MARK}",
    "failed": "\N{CROSS MARK}",
}
FRESH_NONCE_SUFFIX = ":mentions"
"""Final parts posted anew (their text mentions peer bots, whom an edit does not notify) carry
nonces of their own: a live part's nonce would return the live message."""

ChannelOf = Callable[[], discord.PartialMessageable]


def reference_to(target: Mapping[str, str]) -> discord.MessageReference | None:
    """The reply's reference to the message it answers (part 0 only); never fails the post if
    that message is gone."""
    if not target.get("message_id"):
        return None
    guild_id = target.get("guild_id")
    return discord.MessageReference(
        message_id=int(target["message_id"]),
        channel_id=int(target["channel_id"]),
        guild_id=int(guild_id) if guild_id else None,
        fail_if_not_exists=False,
    )


async def post_part(
    channel: discord.PartialMessageable,
    text: str,
    *,
    nonce: str,
    reference: discord.MessageReference | None,
) -> discord.Message:
    """Post one part with ``nonce`` (``enforce_nonce``): a repeat returns the message an
    earlier attempt created, whose text is then brought to ``text``."""
    sent = await channel.send(
        text,
        reference=reference,  # type: ignore[arg-type]
        nonce=nonce,
        # Users (so the mentioned agents' bots) are notified; the person replied to is not
        # pinged by the reply itself.
        allowed_mentions=discord.AllowedMentions(replied_user=False),
    )
    if sent.content != text:
        sent = await sent.edit(content=text)
    return sent


class DiscordLiveReply:
    """One reply shown while it is written (see :mod:`bridge.ports.live`)."""

    interval_seconds = EDIT_INTERVAL_SECONDS

    def __init__(
        self,
        *,
        channel_of: ChannelOf,
        draft: Draft,
        streaming: bool,
        on_text: Callable[[], None],
    ) -> None:
        """``channel_of`` gives the channel (or raises DeliveryError while not connected);
        ``on_text`` runs once the reply shows text (it stops the typing indicator)."""
        self._channel_of = channel_of
        self._draft = draft
        self._streaming = streaming
        self._on_text = on_text
        self._ids = list(draft.started)
        # What each started part shows; None: unknown (an earlier process started it).
        self._shown: list[str | None] = [None] * len(self._ids)

    async def show(self, text: str) -> Sequence[str]:
        if not self._streaming:
            return ()
        channel = self._channel_of()
        started = len(self._ids)
        try:
            for index, part in enumerate(reply_parts(text)):
                if index < len(self._ids):
                    if self._shown[index] != part:
                        message = channel.get_partial_message(int(self._ids[index]))
                        await message.edit(content=part)
                        self._shown[index] = part
                    continue
                sent = await post_part(
                    channel,
                    part,
                    nonce=part_nonce(self._draft.delivery_key, index),
                    reference=reference_to(self._draft.reply_target) if index == 0 else None,
                )
                self._ids.append(str(sent.id))
                self._shown.append(part)
        except Exception as error:
            if len(self._ids) == started:
                raise delivery_error(error) from error
            # A part was started: its id must be recorded; the next text retries the rest.
        if self._ids:
            self._on_text()
        return tuple(self._ids)

    async def close(self) -> None:
        return None


async def deliver(channel: discord.PartialMessageable, reply: Reply) -> list[str]:
    """The final delivery of ``reply``: idempotent, so a retry (in doubt or not) ends with the
    same single set of messages. Returns their ids in part order."""
    rendered = with_mentions(reply.text, reply.mentions)
    parts = reply_parts(reply.text, reply.mentions)
    live = list(reply.live_ids)
    key = reply.delivery_key
    if live and rendered != reply.text:
        # Discord notifies a mentioned user (a peer agent's bot) only when a message is
        # created: post the final parts anew, then remove the live ones.
        key, live_kept = f"{key}{FRESH_NONCE_SUFFIX}", live
        live = []
    else:
        live_kept = []
    ids: list[str] = []
    try:
        for index, part in enumerate(parts):
            if index < len(live):
                message = channel.get_partial_message(int(live[index]))
                try:
                    await message.edit(content=part)
                    ids.append(live[index])
                    continue
                except discord.NotFound:
                    pass  # removed meanwhile: post the part again
            sent = await post_part(
                channel,
                part,
                nonce=part_nonce(key, index),
                reference=reference_to(reply.reply_target) if index == 0 else None,
            )
            ids.append(str(sent.id))
        for extra in [*live[len(parts) :], *live_kept]:
            with contextlib.suppress(discord.NotFound):
                await channel.get_partial_message(int(extra)).delete()
    except Exception as error:
        failure = delivery_error(error)
        if ids:  # some parts are out: the retry's nonces and edits keep them from doubling
            failure.in_doubt = True
        raise failure from error
    return ids


async def react(
    channel: discord.PartialMessageable,
    target: Mapping[str, str],
    *,
    own: discord.abc.Snowflake | None,
    add: str | None,
    remove: str | None = None,
    agent: str,
) -> None:
    """Swap the bot's (``own``) status reaction on the message ``target`` names; best effort:
    a failure is logged, never raised (but cancellation)."""
    if not target.get("message_id"):
        return
    message = channel.get_partial_message(int(target["message_id"]))
    try:
        if remove is not None and own is not None:
            await message.remove_reaction(remove, own)
        if add is not None:
            await message.add_reaction(add)
    except (discord.DiscordException, OSError, TimeoutError, DeliveryError) as error:
        log_event(
            logger,
            "discord.reaction_failed",
            level=logging.WARNING,
            agent=agent,
            message=target["message_id"],
            error=f"{type(error).__name__}: {error}",
        )
