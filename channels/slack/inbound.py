"""Slack event -> what the core should do with it. Pure: no I/O, no SDK types.

Conversation ids (documented in the README):
- a DM: ``slack:{team}:{channel}``;
- a channel with ``thread_replies``: the thread is the session,
  ``slack:{team}:{channel}:{root_ts}``, whose parent is the channel's session
  ``slack:{team}:{channel}``;
- a channel without ``thread_replies``: ``slack:{team}:{channel}``.
The external message id is the message's ``ts`` (unique within a channel), so the same message
seen as ``app_mention`` and as ``message``, or redelivered, is stored once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bridge.events import Attachment, InboundMessage, MessageEdit, Sender

CHANNEL = "slack"
ANSWERED_SUBTYPES = {None, "file_share"}
USER_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")


@dataclass(frozen=True, slots=True, kw_only=True)
class BotIdentity:
    user_id: str
    bot_id: str
    team_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    agent_slug: str
    require_mention: bool
    thread_replies: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Ignored:
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Place:
    conversation: str
    parent: str | None
    reply_thread_ts: str | None
    is_dm: bool


def is_dm(event: dict[str, Any]) -> bool:
    return event.get("channel_type") == "im" or str(event.get("channel", "")).startswith("D")


def place_of(
    *, team: str, channel: str, ts: str, thread_ts: str | None, dm: bool, thread_replies: bool
) -> Place:
    base = f"slack:{team}:{channel}"
    if dm:
        return Place(conversation=base, parent=None, reply_thread_ts=thread_ts, is_dm=True)
    if thread_replies:
        root = thread_ts or ts
        return Place(conversation=f"{base}:{root}", parent=base, reply_thread_ts=root, is_dm=False)
    return Place(conversation=base, parent=None, reply_thread_ts=thread_ts, is_dm=False)


def strip_mention(text: str, bot_user_id: str) -> str:
    cleaned = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip()


def _attachments(event: dict[str, Any]) -> tuple[Attachment, ...]:
    return tuple(
        Attachment(
            name=str(f.get("name") or f.get("title") or f.get("id") or "file"),
            mime_type=f.get("mimetype"),
            size=f.get("size"),
            url=f.get("url_private"),
        )
        for f in event.get("files") or []
    )


def classify(
    *, event_type: str, event: dict[str, Any], team: str, bot: BotIdentity, rules: Rules
) -> InboundMessage | MessageEdit | Ignored:
    """What an ``app_mention`` or ``message`` event means for this agent."""
    subtype = event.get("subtype")
    if event_type == "message" and subtype in ("message_changed", "message_deleted"):
        return _edit(event=event, team=team, bot=bot, rules=rules)
    if subtype not in ANSWERED_SUBTYPES:
        return Ignored(reason=f"subtype {subtype}")
    user = event.get("user")
    if event.get("bot_id") or not user or user == bot.user_id:
        return Ignored(reason="bot message")
    channel, ts = str(event.get("channel", "")), str(event.get("ts", ""))
    if not channel or not ts:
        return Ignored(reason="no channel or ts")
    text = str(event.get("text") or "")
    dm = event_type == "message" and is_dm(event)
    thread_ts = event.get("thread_ts")
    mentioned = event_type == "app_mention" or f"<@{bot.user_id}" in text
    follow_up = False
    if not dm and not mentioned and rules.require_mention:
        if not (rules.thread_replies and thread_ts and thread_ts != ts):
            return Ignored(reason="no mention")
        follow_up = True
    where = place_of(
        team=team,
        channel=channel,
        ts=ts,
        thread_ts=thread_ts,
        dm=dm,
        thread_replies=rules.thread_replies,
    )
    return InboundMessage(
        channel=CHANNEL,
        agent_slug=rules.agent_slug,
        external_conv_id=where.conversation,
        external_message_id=ts,
        sender=Sender(external_id=str(user)),
        text=strip_mention(text, bot.user_id),
        is_group=not dm,
        parent_conv_id=where.parent,
        mentions=tuple(USER_MENTION.findall(text)),
        attachments=_attachments(event),
        reply_target={"channel": channel, "thread_ts": where.reply_thread_ts or ""},
        only_if_engaged=follow_up,
    )


def _edit(
    *, event: dict[str, Any], team: str, bot: BotIdentity, rules: Rules
) -> MessageEdit | Ignored:
    deleted = event.get("subtype") == "message_deleted"
    message = event.get("previous_message" if deleted else "message") or {}
    if message.get("bot_id") or message.get("user") == bot.user_id:
        return Ignored(reason="edit of a bot message")
    ts = str(event.get("deleted_ts") if deleted else message.get("ts") or "")
    channel = str(event.get("channel", ""))
    if not ts or not channel:
        return Ignored(reason="edit without ts")
    where = place_of(
        team=team,
        channel=channel,
        ts=ts,
        thread_ts=message.get("thread_ts"),
        dm=is_dm(event),
        thread_replies=rules.thread_replies,
    )
    return MessageEdit(
        channel=CHANNEL,
        agent_slug=rules.agent_slug,
        external_conv_id=where.conversation,
        external_message_id=ts,
        text=None if deleted else strip_mention(str(message.get("text") or ""), bot.user_id),
    )
