"""Feishu ``im.message.receive_v1`` events as InboundMessages (pure: no I/O).

``content`` is a JSON string whose shape depends on ``message_type``; ``@_user_N``
placeholders stand for the mentions, whose names and open_ids come alongside.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from bridge.ports.contract import PostAddress
from bridge.ports.errors import CannotPost
from bridge.ports.events import MAX_ID_LENGTH, Attachment, InboundMessage, Sender
from channels.feishu.resources import ResourceType, resource_source

CHANNEL = "feishu"
GROUP_CHAT_TYPES = frozenset({"group", "topic_group"})


@dataclass(frozen=True, slots=True)
class Ignored:
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Mention:
    key: str
    open_id: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FeishuMessage:
    message_id: str
    chat_id: str
    chat_type: str
    thread_id: str | None
    sender_open_id: str
    message_type: str
    content: Mapping[str, Any]
    mentions: tuple[Mention, ...]

    @property
    def is_group(self) -> bool:
        return self.chat_type in GROUP_CHAT_TYPES


class MalformedEvent(ValueError):
    """A verified event that does not have the shape Feishu documents."""


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"{name} missing")
    return value


def is_storable(value: Any) -> TypeGuard[str]:
    """An id or name the database keeps as it is: at most 255 printable characters (no NUL,
    which PostgreSQL refuses, and no lone surrogate, which no database can encode)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable()


def _id(value: Any, name: str) -> str:
    text = _text(value, name)
    if not is_storable(text):
        raise MalformedEvent(f"{name} malformed")
    return text


_MILLISECONDS = re.compile(r"[0-9]{1,14}")  # up to the year 5138: no overflow


def created_at(header: Mapping[str, Any], *, now: datetime, max_ahead: timedelta) -> datetime:
    """When Feishu says the event happened: ``header.create_time`` (unix milliseconds, a string
    or a number). It orders membership changes, so one that is missing, is no time, or lies
    further than ``max_ahead`` in the future (it would outrank every real change) is refused."""
    value = header.get("create_time")
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or _MILLISECONDS.fullmatch(text) is None:
        raise MalformedEvent("header.create_time missing or malformed")
    moment = datetime.fromtimestamp(int(text) / 1000, UTC)
    if moment > now + max_ahead:
        raise MalformedEvent("header.create_time lies in the future")
    return moment


def read_message(event: Mapping[str, Any]) -> FeishuMessage | Ignored:
    sender = event.get("sender")
    message = event.get("message")
    if not isinstance(sender, dict) or not isinstance(message, dict):
        raise MalformedEvent("event.sender or event.message missing")
    if sender.get("sender_type") != "user":
        return Ignored(f"sender_type {sender.get('sender_type')!r}")
    sender_id = sender.get("sender_id")
    if not isinstance(sender_id, dict):
        raise MalformedEvent("sender.sender_id missing")
    try:
        content = json.loads(_text(message.get("content"), "message.content"))
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        raise MalformedEvent("message.content is not JSON") from None
    listed = message.get("mentions")
    mentions = tuple(
        Mention(
            key=str(m.get("key") or ""),
            open_id=str(m["id"].get("open_id") or "") if isinstance(m.get("id"), dict) else "",
            name=str(m.get("name") or ""),
        )
        for m in (listed if isinstance(listed, list) else ())
        if isinstance(m, dict)
    )
    thread_id = message.get("thread_id")
    return FeishuMessage(
        message_id=_id(message.get("message_id"), "message.message_id"),
        chat_id=_id(message.get("chat_id"), "message.chat_id"),
        chat_type=str(message.get("chat_type", "")),
        thread_id=_id(thread_id, "message.thread_id")
        if isinstance(thread_id, str) and thread_id
        else None,
        sender_open_id=_id(sender_id.get("open_id"), "sender.sender_id.open_id"),
        message_type=str(message.get("message_type", "")),
        content=content if isinstance(content, dict) else {},
        mentions=mentions,
    )


def _with_names(text: str, mentions: tuple[Mention, ...], bot_open_id: str) -> str:
    """``@_user_1 hi @_user_2`` -> ``hi @Bob``: the bot's own mention goes, others get names."""
    for mention in sorted(mentions, key=lambda m: len(m.key), reverse=True):
        if not mention.key:
            continue
        if mention.open_id == bot_open_id:
            text = text.replace(mention.key + " ", "").replace(mention.key, "")
        else:
            text = text.replace(mention.key, f"@{mention.name}")
    return text.strip()


def _post_body(content: Mapping[str, Any]) -> Mapping[str, Any]:
    """A post is ``{title, content}``, or the same wrapped in a locale (``{"zh_cn": {...}}``)."""
    if "content" in content:
        return content
    for value in content.values():
        if isinstance(value, dict) and "content" in value:
            return value
    return {}


# Built at import (it reads the system's type list), never lazily inside the event loop.
_TYPES = mimetypes.MimeTypes()
# Feishu's voice messages are Opus and its videos MP4, whatever the name says.
_MESSAGE_TYPE_MIME = {"audio": "audio/opus", "media": "video/mp4"}


def _resource(
    message_id: str, key: Any, kind: ResourceType, *, name: Any = None, mime: str | None = None
) -> Attachment | None:
    """A pending attachment the adapter can fetch later, or None without a usable key. The
    type is a real one or None (Feishu says it only when the file is fetched)."""
    if not is_storable(key):
        return None
    label = name if is_storable(name) else key
    guessed = mime or (_TYPES.guess_type(label)[0] if label != key else None)
    return Attachment(name=label, mime_type=guessed, source=resource_source(message_id, key, kind))


def _flatten_post(
    content: Mapping[str, Any], mentions: tuple[Mention, ...], bot_open_id: str, message_id: str
) -> tuple[str, list[Attachment]]:
    post = _post_body(content)
    lines: list[str] = [str(post["title"])] if post.get("title") else []
    attachments: list[Attachment] = []
    by_key = {m.key: m for m in mentions}
    paragraphs = post.get("content")
    for paragraph in paragraphs if isinstance(paragraphs, list) else ():
        words: list[str] = []
        for element in paragraph if isinstance(paragraph, list) else ():
            tag = element.get("tag") if isinstance(element, dict) else None
            if tag in ("text", "md"):
                words.append(str(element.get("text", "")))
            elif tag == "a":
                label, href = str(element.get("text") or ""), str(element.get("href") or "")
                words.append(f"{label} ({href})" if label and href and label != href else href)
            elif tag == "at":
                user = str(element.get("user_id", ""))
                mention = by_key.get(user)
                open_id = mention.open_id if mention else user
                if open_id != bot_open_id:
                    name = element.get("user_name") or (mention.name if mention else user)
                    words.append(f"@{name}")
            elif tag == "emotion":
                words.append(f":{element.get('emoji_type', '')}:")
            elif tag in ("img", "media"):
                found = (
                    _resource(message_id, element.get("image_key"), "image")
                    if tag == "img"
                    else _resource(message_id, element.get("file_key"), "file", mime="video/mp4")
                )
                if found is not None:
                    attachments.append(found)
        line = "".join(words).strip()
        if line:
            lines.append(line)
    return "\n".join(lines), attachments


def message_text(message: FeishuMessage, bot_open_id: str) -> tuple[str, list[Attachment]] | None:
    """The text and attachments, or None for a message type the bridge does not handle."""
    content = message.content
    if message.message_type == "text":
        return _with_names(str(content.get("text", "")), message.mentions, bot_open_id), []
    if message.message_type == "post":
        return _flatten_post(content, message.mentions, bot_open_id, message.message_id)
    if message.message_type == "image":
        found = _resource(message.message_id, content.get("image_key"), "image")
        return "", [found] if found is not None else []
    if message.message_type in ("file", "audio", "media"):
        found = _resource(
            message.message_id,
            content.get("file_key"),
            "file",
            name=content.get("file_name"),
            mime=_MESSAGE_TYPE_MIME.get(message.message_type),
        )
        return "", [found] if found is not None else []
    return None


def conversation_id(chat_id: str, thread_id: str | None = None) -> str:
    return f"{CHANNEL}:{chat_id}:{thread_id}" if thread_id else f"{CHANNEL}:{chat_id}"


def post_address(
    *, external_conv_id: str, thread: str | None, last_target: Mapping[str, str] | None
) -> PostAddress:
    """Where an agent posts first: ``feishu:{chat_id}`` gets a new message in the chat (sent
    by ``chat_id``). Feishu posts into a thread only as a reply in it, so a thread
    (``feishu:{chat_id}:{thread_id}``, or ``thread``) needs a message the bot saw there."""
    parts = external_conv_id.split(":")
    if len(parts) not in (2, 3) or parts[0] != CHANNEL or not all(map(is_storable, parts[1:])):
        raise CannotPost("a Feishu conversation id is feishu:{chat_id}[:{thread_id}]")
    chat_id, embedded = parts[1], (parts[2] if len(parts) == 3 else None)
    if embedded and thread and embedded != thread:
        raise CannotPost("the conversation id and thread name two different threads")
    thread = embedded or thread or None
    if thread is None:
        return PostAddress(external_conv_id=external_conv_id, reply_target={"chat_id": chat_id})
    under = (last_target or {}).get("message_id")
    if not under:
        raise CannotPost("Feishu posts in a thread only as a reply: the bot has no message there")
    return PostAddress(
        external_conv_id=conversation_id(chat_id, thread),
        reply_target={"message_id": under, "in_thread": "1"},
        is_group=True,
        parent_conv_id=conversation_id(chat_id),
    )


def to_inbound(
    message: FeishuMessage,
    *,
    agent_slug: str,
    bot_open_id: str,
    require_mention: bool,
    sender_name: str | None,
    group_name: str | None,
) -> InboundMessage | Ignored:
    read = message_text(message, bot_open_id)
    if read is None:
        return Ignored(f"message_type {message.message_type!r}")
    text, attachments = read
    if not text and not attachments:
        return Ignored("no text")
    mentioned = any(m.open_id == bot_open_id for m in message.mentions)
    addressed = not message.is_group or mentioned or not require_mention
    if not addressed and not message.thread_id:
        return Ignored("not mentioned")
    in_thread = message.thread_id is not None
    return InboundMessage(
        channel=CHANNEL,
        agent_slug=agent_slug,
        external_conv_id=conversation_id(message.chat_id, message.thread_id),
        parent_conv_id=conversation_id(message.chat_id) if in_thread else None,
        external_message_id=message.message_id,
        sender=Sender(external_id=message.sender_open_id, display_name=sender_name),
        text=text,
        attachments=tuple(attachments),
        is_group=message.is_group,
        group_name=group_name if message.is_group else None,
        reply_target={"message_id": message.message_id, "in_thread": "1" if in_thread else ""},
        # A topic thread the agent is already in needs no mention.
        only_if_engaged=not addressed,
    )
