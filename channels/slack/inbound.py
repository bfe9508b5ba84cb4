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

from bridge.ports.contract import PostAddress
from bridge.ports.errors import CannotPost
from bridge.ports.events import Attachment, InboundMessage, MessageEdit, Sender

CHANNEL = "slack"
ANSWERED_SUBTYPES = {None, "file_share"}
USER_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")
TS = re.compile(r"^[0-9]{1,20}\.[0-9]{1,10}$")
SLACK_ID = re.compile(r"^[A-Z0-9]{1,40}$")


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


def post_address(
    *, external_conv_id: str, thread: str | None, team: str, thread_replies: bool
) -> PostAddress:
    """Where an agent posts first: ``slack:{team}:{channel}`` (a ``D…`` channel is a DM), in
    a thread when ``thread`` (a message ts) is given or the id ends in one. The conversation is
    named as :func:`place_of` names it, so the people's answers land in the same session."""
    parts = external_conv_id.split(":")
    if len(parts) not in (3, 4) or parts[0] != CHANNEL:
        raise CannotPost("a Slack conversation id is slack:{team}:{channel}[:{thread_ts}]")
    if parts[1] != team:
        raise CannotPost(f"the bot is in Slack team {team}, not {parts[1]!r}")
    channel = parts[2]
    if not _is_id(channel):
        raise CannotPost(f"{channel!r} is not a Slack channel id")
    embedded = parts[3] if len(parts) == 4 else None
    if embedded and thread and embedded != thread:
        raise CannotPost("the conversation id and thread name two different threads")
    root = embedded or thread or None
    if root is not None and not _is_ts(root):
        raise CannotPost(f"thread {root!r} is not a Slack message ts (1700000000.000100)")
    dm = channel.startswith("D")
    if root is None:
        where = Place(
            conversation=f"{CHANNEL}:{team}:{channel}", parent=None, reply_thread_ts=None, is_dm=dm
        )
    else:
        where = place_of(
            team=team,
            channel=channel,
            ts=root,
            thread_ts=root,
            dm=dm,
            thread_replies=thread_replies,
        )
    return PostAddress(
        external_conv_id=where.conversation,
        reply_target={"channel": channel, "thread_ts": where.reply_thread_ts or ""},
        is_group=not dm,
        parent_conv_id=where.parent,
    )


def strip_mention(text: str, bot_user_id: str) -> str:
    cleaned = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip()


def _is_ts(value: Any) -> bool:
    return isinstance(value, str) and TS.match(value) is not None


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and SLACK_ID.match(value) is not None


def _malformed(event: dict[str, Any]) -> str | None:
    """Why a message event cannot be taken at its word. Slack never sends these; a forger with
    the secret, or a bug, might. Checked before anything is read from the event."""
    if not _is_id(event.get("user")):
        return "user is malformed"
    if not _is_id(event.get("channel")) or not _is_ts(event.get("ts")):
        return "channel or ts is malformed"
    if event.get("thread_ts") is not None and not _is_ts(event["thread_ts"]):
        return "thread_ts is malformed"
    if not isinstance(event.get("text"), str | None):
        return "text is not text"
    files = event.get("files")
    if files is not None and not (
        isinstance(files, list) and all(isinstance(f, dict) for f in files)
    ):
        return "files is malformed"
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _attachment(f: dict[str, Any]) -> Attachment:
    """One file: ``pending`` with what the fetch needs in ``source`` (the file id and
    ``url_private_download``; the fetch checks the host). A Slack Connect file that says
    ``file_access: check_file_info`` is a partial object: refused (no ``files.info`` call)."""
    name = str(f.get("name") or f.get("title") or f.get("id") or "file")
    mime_type = _text(f.get("mimetype"))
    size = f.get("size") if isinstance(f.get("size"), int) else None
    url = _text(f.get("url_private"))
    if f.get("file_access") == "check_file_info":
        return Attachment(
            name=name,
            mime_type=mime_type,
            size=size,
            url=url,
            state="refused",
            reason="a Slack Connect file shared as a partial object (check_file_info): not fetched",
        )
    source = {"file_id": _text(f.get("id")), "url": _text(f.get("url_private_download")) or url}
    return Attachment(
        name=name,
        mime_type=mime_type,
        size=size,
        url=url,
        source={key: value for key, value in source.items() if value is not None},
    )


def _attachments(event: dict[str, Any]) -> tuple[Attachment, ...]:
    return tuple(_attachment(f) for f in event.get("files") or [])


def classify(
    *, event_type: str, event: dict[str, Any], team: str, bot: BotIdentity, rules: Rules
) -> InboundMessage | MessageEdit | Ignored:
    """What an ``app_mention`` or ``message`` event means for this agent."""
    subtype = event.get("subtype")
    if not isinstance(subtype, str | None):
        return Ignored(reason="malformed event: subtype is not text")
    if event_type == "message" and subtype in ("message_changed", "message_deleted"):
        return _edit(event=event, team=team, bot=bot, rules=rules)
    if subtype not in ANSWERED_SUBTYPES:
        return Ignored(reason=f"subtype {subtype}")
    if event.get("bot_id") or event.get("user") == bot.user_id or not event.get("user"):
        return Ignored(reason="bot message")
    problem = _malformed(event)
    if problem:
        return Ignored(reason=f"malformed event: {problem}")
    channel, ts, user = str(event["channel"]), str(event["ts"]), str(event["user"])
    text: str = event.get("text") or ""
    dm = event_type == "message" and is_dm(event)
    thread_ts = event.get("thread_ts")
    mentioned = event_type == "app_mention" or f"<@{bot.user_id}" in text
    follow_up = False
    if not dm and not mentioned and rules.require_mention:
        if not (rules.thread_replies and thread_ts and thread_ts != ts):
            return Ignored(reason="no mention")
        follow_up = True
    attachments = _attachments(event)
    cleaned = strip_mention(text, bot.user_id)
    if not cleaned and not attachments:
        return Ignored(reason="empty message")
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
        sender=Sender(external_id=user),
        text=cleaned,
        is_group=not dm,
        parent_conv_id=where.parent,
        mentions=tuple(USER_MENTION.findall(text)),
        attachments=attachments,
        # message_ts: a reply is never older, so an in-doubt lookup starts there.
        reply_target={
            "channel": channel,
            "thread_ts": where.reply_thread_ts or "",
            "message_ts": ts,
            # Whom a native stream is for (``recipient_user_id``).
            "user": user,
        },
        only_if_engaged=follow_up,
    )


def _edit(
    *, event: dict[str, Any], team: str, bot: BotIdentity, rules: Rules
) -> MessageEdit | Ignored:
    deleted = event.get("subtype") == "message_deleted"
    message = event.get("previous_message" if deleted else "message") or {}
    if not isinstance(message, dict):
        return Ignored(reason="malformed edit")
    if message.get("bot_id") or message.get("user") == bot.user_id:
        return Ignored(reason="edit of a bot message")
    ts = event.get("deleted_ts") if deleted else message.get("ts")
    channel, thread_ts, text = event.get("channel"), message.get("thread_ts"), message.get("text")
    if (
        not isinstance(ts, str)
        or not _is_ts(ts)
        or not isinstance(channel, str)
        or not _is_id(channel)
        or (thread_ts is not None and not _is_ts(thread_ts))
        or not isinstance(text, str | None)
    ):
        return Ignored(reason="malformed edit")
    where = place_of(
        team=team,
        channel=channel,
        ts=ts,
        thread_ts=thread_ts,
        dm=is_dm(event),
        thread_replies=rules.thread_replies,
    )
    return MessageEdit(
        channel=CHANNEL,
        agent_slug=rules.agent_slug,
        external_conv_id=where.conversation,
        external_message_id=ts,
        text=None if deleted else strip_mention(text or "", bot.user_id),
    )
