"""A strict, offline fake of Slack, for tests that run the real slack-bolt and slack_sdk.

Three parts, all matching the protocol facts in the shared platform reference (§1):

* **Signing** (:func:`sign`) and **event factories** (:func:`app_mention`, :func:`message`,
  :func:`bot_message`, :func:`message_changed`, :func:`message_deleted`,
  :func:`url_verification`): pure functions that build ``event_callback`` envelopes shaped
  exactly like the golden payloads under ``tests/fixtures/slack_*.json``.
* :class:`FakeSlack`: an aiohttp server on 127.0.0.1 and a free port serving the Web API at
  ``/api/{method}`` (point ``AsyncWebClient(base_url=fake.api_url)`` at it) and a Socket Mode
  WebSocket at ``/link``. It checks the bearer token of every call, answers with Slack's real
  error shapes (HTTP 200 ``{"ok": false, "error": ...}``, 429 + ``Retry-After``), keeps the
  messages of every channel so ``conversations.replies`` / ``conversations.history`` can find
  a delivery by its ``metadata``, and records every call. One workspace may hold several bots
  (Slack apps, :meth:`FakeSlack.add_bot`): each call acts as the bot whose token it carries,
  so agents that are bots in the same workspace can mention each other.
* **Live replies** (shared reference §1.1 and §2.1): ``chat.startStream`` /
  ``chat.appendStream`` / ``chat.stopStream`` with a state machine per ``(channel, ts)``
  (streaming -> stopped), ``chat.update`` (refused while streaming, text ≤ 4,000),
  ``chat.delete``, ``reactions.add`` / ``reactions.remove`` and
  ``assistant.threads.setStatus``; per-method token buckets (:meth:`FakeSlack.limit_rates`,
  off unless a test turns them on) answer 429 + ``Retry-After`` like Slack's tiers.
* **Bot uploads** (shared reference §3.2): ``files.getUploadURLExternal`` (``files:write``,
  ``filename`` and ``length`` > 0) hands out an ``upload_url`` on this fake bound to the file
  id and length; a POST of exactly that many bytes answers 200 (anything else, or a second
  POST, is refused with a non-200); ``files.completeUploadExternal`` shares uploaded files
  into a channel the bot is in (and a thread, by its parent ts) as a bot message with
  ``files`` and records the share (:attr:`FakeSlack.shares`, ``files.info`` ``shares``). Like
  Slack, nothing is idempotent: completing a file twice shares it twice.
* **The event pusher** (:meth:`FakeSlack.push_event`, :meth:`FakeSlack.deliver`): signs and
  posts events to the service the way Slack does, including Slack's redelivery with
  ``X-Slack-Retry-Num`` when the service is slow or fails.

Usage::

    async with FakeSlack(bot_token="xoxb-1", signing_secret="s3cret") as slack:
        slack.add_channel("C0CHAN0001", "general")
        client = AsyncWebClient(token="xoxb-1", base_url=slack.api_url, retry_handlers=[])
        await slack.deliver(service_url, app_mention(text="<@U0BOT00001> hi"))
        post = await slack.next_post(timeout=5)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import math
import mimetypes
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiDictProxy

from tests.fakes.base import FakePlatform, Fault, abort, compact

__all__ = [
    "DEFAULT_APP_ID",
    "DEFAULT_BOT_ID",
    "DEFAULT_BOT_USER_ID",
    "DEFAULT_CHANNEL",
    "DEFAULT_TEAM_ID",
    "DEFAULT_USER",
    "FILES_METHOD",
    "KNOWN_EMOJI",
    "LOGIN_PAGE_HTML",
    "MAX_MARKDOWN_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_UPDATE_CHARS",
    "TIERS",
    "UPLOAD_METHOD",
    "ApiCall",
    "FakeBot",
    "FakeSlack",
    "PushResult",
    "app_mention",
    "bot_message",
    "message",
    "message_changed",
    "message_deleted",
    "new_event_id",
    "new_ts",
    "sign",
    "url_verification",
]

DEFAULT_TEAM_ID = "T0TEAM0001"
DEFAULT_APP_ID = "A0APP00001"
DEFAULT_BOT_USER_ID = "U0BOT00001"
DEFAULT_BOT_ID = "B0BOT00001"
DEFAULT_CHANNEL = "C0CHAN0001"
DEFAULT_USER = "U0HUMAN001"
# The fault key of file downloads (``/files-pri/...``): ``fail_next(method=FILES_METHOD)``.
FILES_METHOD = "files-pri"
# The fault key of upload step 2 (the bytes POSTed to an ``upload_url``).
UPLOAD_METHOD = "upload-url"
# What Slack serves for a file URL fetched without a valid token with files:read: HTTP 200.
LOGIN_PAGE_HTML = (
    b"<!DOCTYPE html><html><head><title>Slack</title></head>"
    b'<body><form action="/signin">Sign in to your workspace</form></body></html>'
)
# The deprecated verification token Slack still puts in every envelope; never checked.
VERIFICATION_TOKEN = "XXYYZZ"
# chat.postMessage refuses longer text with msg_too_long.
MAX_TEXT_CHARS = 40_000
# chat.update refuses a longer text with msg_too_long.
MAX_UPDATE_CHARS = 4_000
# markdown_text of a stream call, and the markdown blocks of one message, at most.
MAX_MARKDOWN_CHARS = 12_000
MAX_BLOCKS = 50
TIERS: dict[str, tuple[int, float]] = {
    "chat.startStream": (20, 60.0),
    "chat.stopStream": (20, 60.0),
    "chat.appendStream": (100, 60.0),
    "chat.update": (50, 60.0),
    "chat.delete": (50, 60.0),
    "reactions.add": (50, 60.0),
    "reactions.remove": (20, 60.0),
}
"""Slack's tiers per method (calls per period, seconds): Tier 2 start/stop, Tier 4 append,
Tier 3 update/delete/reactions.add, Tier 2 reactions.remove."""
KNOWN_EMOJI = frozenset(
    {
        "eyes",
        "white_check_mark",
        "heavy_check_mark",
        "x",
        "warning",
        "hourglass_flowing_sand",
        "thinking_face",
        "robot_face",
        "+1",
        "thumbsup",
        "tada",
    }
)
"""The emoji names ``reactions.add`` knows; any other is ``invalid_name``."""
StreamState = Literal["streaming", "stopped"]

ChannelType = Literal["channel", "group", "im", "mpim"]
_CHANNEL_TYPES: tuple[str, ...] = ("channel", "group", "im", "mpim")


# --- signing -------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's request signature, over the exact body bytes: ``v0=<hex HMAC-SHA256>``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


# --- identifiers ---------------------------------------------------------------------------

_last_ts_micros = 0
_event_counter = itertools.count(1)
_EVENT_ID_PREFIX = secrets.token_hex(2).upper()


def new_ts() -> str:
    """A fresh message ts (``"<seconds>.<6 digits>"``), unique and increasing in this process.

    Based on the clock, as Slack's are, so it never collides with the fixtures' fixed values.
    """
    global _last_ts_micros
    _last_ts_micros = max(time.time_ns() // 1000, _last_ts_micros + 100)
    seconds, micros = divmod(_last_ts_micros, 1_000_000)
    return f"{seconds}.{micros:06d}"


def new_event_id() -> str:
    """A fresh ``event_id`` in Slack's shape (``Ev`` + 10 characters), unique in this process."""
    return f"Ev{_EVENT_ID_PREFIX}{next(_event_counter):06X}"


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, fraction = ts.partition(".")
    return int(seconds or 0), int((fraction + "000000")[:6] or 0)


# --- event factories -----------------------------------------------------------------------

_MENTION = re.compile(r"<@([UW][A-Z0-9]+)>")


def _rich_text_blocks(text: str, seed: str) -> list[dict[str, Any]]:
    """The ``rich_text`` block Slack derives from a typed message; mentions become user items."""
    elements: list[dict[str, Any]] = []
    position = 0
    for match in _MENTION.finditer(text):
        if match.start() > position:
            elements.append({"type": "text", "text": text[position : match.start()]})
        elements.append({"type": "user", "user_id": match.group(1)})
        position = match.end()
    if position < len(text):
        elements.append({"type": "text", "text": text[position:]})
    block_id = base64.b64encode(hashlib.sha1(seed.encode()).digest()).decode()[:5]
    return [
        {
            "type": "rich_text",
            "block_id": block_id,
            "elements": [{"type": "rich_text_section", "elements": elements}],
        }
    ]


def _event_context(event_type: str, team: str, api_app_id: str, channel: str) -> str:
    document = {"et": event_type, "tid": team, "aid": api_app_id, "cid": channel}
    raw = json.dumps(document, separators=(",", ":")).encode()
    return "4-" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _envelope(
    event: dict[str, Any],
    *,
    team: str,
    api_app_id: str,
    event_id: str | None,
    bot_user_id: str,
) -> dict[str, Any]:
    """The outer ``event_callback`` body, keys in the order Slack sends them."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team,
        "context_team_id": team,
        "context_enterprise_id": None,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or new_event_id(),
        "event_time": int(float(event["event_ts"])),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": _event_context(event["type"], team, api_app_id, event["channel"]),
    }


def _channel_type_for(channel: str, channel_type: str | None) -> ChannelType:
    if channel_type is None:
        return "im" if channel.startswith("D") else "channel"
    if channel_type not in _CHANNEL_TYPES:
        raise ValueError(f"channel_type must be one of {_CHANNEL_TYPES}, not {channel_type!r}")
    if (channel_type == "im") != channel.startswith("D"):
        raise ValueError(f"a DM channel id starts with D and only a DM does: {channel!r}")
    return cast(ChannelType, channel_type)


def _user_message(
    *, user: str, text: str, ts: str, team: str, channel: str, thread_ts: str | None
) -> dict[str, Any]:
    """The fields a human's message carries, in Slack's order (no event-only fields)."""
    inner: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": ts}
    if thread_ts is not None:
        inner["thread_ts"] = thread_ts
    inner["client_msg_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{channel}/{ts}"))
    inner["team"] = team
    inner["blocks"] = _rich_text_blocks(text, f"{channel}/{ts}")
    return inner


def app_mention(
    *,
    text: str | None = None,
    team: str = DEFAULT_TEAM_ID,
    channel: str = DEFAULT_CHANNEL,
    user: str = DEFAULT_USER,
    ts: str | None = None,
    thread_ts: str | None = None,
    parent_user_id: str | None = None,
    event_id: str | None = None,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
    api_app_id: str = DEFAULT_APP_ID,
) -> dict[str, Any]:
    """An ``app_mention`` envelope; it has no ``channel_type``, as Slack's has none.

    ``text`` defaults to ``"<@bot> hello"``; a text without the bot mention gets it prepended,
    since Slack sends ``app_mention`` only for messages that mention the bot. Inside a thread
    it carries ``thread_ts`` and ``parent_user_id`` (default: ``user``).
    """
    mention = f"<@{bot_user_id}>"
    if text is None:
        text = f"{mention} hello"
    elif mention not in text:
        text = f"{mention} {text}"
    ts = ts or new_ts()
    event: dict[str, Any] = {"type": "app_mention", "user": user, "text": text, "ts": ts}
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
        event["parent_user_id"] = parent_user_id or user
    body = _user_message(
        user=user, text=text, ts=ts, team=team, channel=channel, thread_ts=thread_ts
    )
    event["client_msg_id"] = body["client_msg_id"]
    event["team"] = team
    event["channel"] = channel
    event["event_ts"] = ts
    event["blocks"] = body["blocks"]
    return _envelope(
        event, team=team, api_app_id=api_app_id, event_id=event_id, bot_user_id=bot_user_id
    )


def message(
    *,
    text: str = "hello",
    team: str = DEFAULT_TEAM_ID,
    channel: str = DEFAULT_CHANNEL,
    user: str = DEFAULT_USER,
    channel_type: ChannelType | None = None,
    ts: str | None = None,
    thread_ts: str | None = None,
    parent_user_id: str | None = None,
    event_id: str | None = None,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
    api_app_id: str = DEFAULT_APP_ID,
    bot_id: str | None = None,
    files: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``message`` envelope from a human: channel, private channel, group DM, DM or thread.

    With ``files`` (objects from :meth:`FakeSlack.add_file`) it is a ``file_share`` message.

    ``channel_type`` defaults from the id (``D…`` is ``"im"``, anything else ``"channel"``);
    pass ``"group"`` / ``"mpim"`` for private channels and group DMs. With ``bot_id`` it is a
    :func:`bot_message` instead (``subtype: "bot_message"``, no ``user``).
    """
    kind = _channel_type_for(channel, channel_type)
    if bot_id is not None:
        return bot_message(
            text=text,
            team=team,
            channel=channel,
            channel_type=kind,
            ts=ts,
            thread_ts=thread_ts,
            event_id=event_id,
            bot_user_id=bot_user_id,
            api_app_id=api_app_id,
            bot_id=bot_id,
        )
    ts = ts or new_ts()
    event = _user_message(
        user=user, text=text, ts=ts, team=team, channel=channel, thread_ts=thread_ts
    )
    if thread_ts is not None and thread_ts != ts:
        event["parent_user_id"] = parent_user_id or user
    if files is not None:
        event["subtype"] = "file_share"
        event["files"] = files
        event["upload"] = False
    event["channel"] = channel
    event["event_ts"] = ts
    event["channel_type"] = kind
    return _envelope(
        event, team=team, api_app_id=api_app_id, event_id=event_id, bot_user_id=bot_user_id
    )


def bot_message(
    *,
    text: str = "beep",
    team: str = DEFAULT_TEAM_ID,
    channel: str = DEFAULT_CHANNEL,
    channel_type: ChannelType | None = None,
    ts: str | None = None,
    thread_ts: str | None = None,
    event_id: str | None = None,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
    api_app_id: str = DEFAULT_APP_ID,
    bot_id: str = "B0OTHER001",
    app_id: str = "A0OTHERAPP",
    username: str = "otherbot",
    user: str | None = None,
    subtype: str | None = "bot_message",
) -> dict[str, Any]:
    """A ``message`` envelope written by a bot, which the service must not answer.

    The default is another app's ``bot_message`` (as in ``slack_bot_message_to_ignore.json``).
    A bot posting with its bot token appears instead with ``user`` set to its bot user and no
    subtype: pass ``user=...`` and ``subtype=None`` (this fake's own bot: its
    ``bot_user_id`` and ``bot_id``).
    """
    kind = _channel_type_for(channel, channel_type)
    ts = ts or new_ts()
    event: dict[str, Any] = {"type": "message"}
    if subtype is not None:
        event["subtype"] = subtype
    if user is not None:
        event["user"] = user
    event["text"] = text
    event["ts"] = ts
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    event["bot_id"] = bot_id
    event["app_id"] = app_id
    event["username"] = username
    event["channel"] = channel
    event["event_ts"] = ts
    event["channel_type"] = kind
    return _envelope(
        event, team=team, api_app_id=api_app_id, event_id=event_id, bot_user_id=bot_user_id
    )


def message_changed(
    *,
    ts: str,
    text: str,
    previous_text: str,
    team: str = DEFAULT_TEAM_ID,
    channel: str = DEFAULT_CHANNEL,
    channel_type: ChannelType | None = None,
    user: str = DEFAULT_USER,
    thread_ts: str | None = None,
    edited_ts: str | None = None,
    event_id: str | None = None,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
    api_app_id: str = DEFAULT_APP_ID,
) -> dict[str, Any]:
    """A ``message_changed`` envelope: the message at ``ts`` now says ``text``.

    As Slack sends it: ``hidden: true``, the new ``message`` (with ``edited``) and the
    ``previous_message``; the event's own ``ts`` is the time of the edit.
    """
    kind = _channel_type_for(channel, channel_type)
    edited_ts = edited_ts or new_ts()
    current = _user_message(
        user=user, text=text, ts=ts, team=team, channel=channel, thread_ts=thread_ts
    )
    current["edited"] = {"user": user, "ts": edited_ts}
    previous = _user_message(
        user=user, text=previous_text, ts=ts, team=team, channel=channel, thread_ts=thread_ts
    )
    event: dict[str, Any] = {
        "type": "message",
        "subtype": "message_changed",
        "message": current,
        "previous_message": previous,
        "channel": channel,
        "hidden": True,
        "ts": edited_ts,
        "event_ts": edited_ts,
        "channel_type": kind,
    }
    return _envelope(
        event, team=team, api_app_id=api_app_id, event_id=event_id, bot_user_id=bot_user_id
    )


def message_deleted(
    *,
    ts: str,
    previous_text: str = "hello",
    team: str = DEFAULT_TEAM_ID,
    channel: str = DEFAULT_CHANNEL,
    channel_type: ChannelType | None = None,
    user: str = DEFAULT_USER,
    thread_ts: str | None = None,
    event_id: str | None = None,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
    api_app_id: str = DEFAULT_APP_ID,
) -> dict[str, Any]:
    """A ``message_deleted`` envelope for the message at ``ts`` (``deleted_ts``), hidden."""
    kind = _channel_type_for(channel, channel_type)
    now = new_ts()
    previous = _user_message(
        user=user, text=previous_text, ts=ts, team=team, channel=channel, thread_ts=thread_ts
    )
    event: dict[str, Any] = {
        "type": "message",
        "subtype": "message_deleted",
        "previous_message": previous,
        "channel": channel,
        "hidden": True,
        "deleted_ts": ts,
        "event_ts": now,
        "ts": now,
        "channel_type": kind,
    }
    return _envelope(
        event, team=team, api_app_id=api_app_id, event_id=event_id, bot_user_id=bot_user_id
    )


def url_verification(challenge: str | None = None) -> dict[str, Any]:
    """The handshake Slack sends when the Request URL is saved; answer with the challenge."""
    return {
        "token": VERIFICATION_TOKEN,
        "challenge": challenge or secrets.token_urlsafe(24),
        "type": "url_verification",
    }


# --- records -------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class ApiCall:
    """One Web API call as the fake received it, accepted or not.

    ``params`` merges the query string and the body (form or JSON object) as Slack does;
    ``json`` is the JSON body, if it was one. ``error`` is the Slack error answered, if any.
    """

    method: str
    verb: str
    path: str
    headers: CIMultiDict[str]
    query: dict[str, str]
    params: dict[str, Any]
    json: Any = None
    status: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PushResult:
    """What the service answered to one pushed event; ``status`` 0 when it never answered.

    ``error`` is Slack's retry reason for a failed attempt (``http_timeout``,
    ``connection_failed``, ``http_error``), None for a 2xx.
    """

    status: int
    body: str
    headers: CIMultiDict[str]
    elapsed: float
    retry_num: int | None
    request_body: bytes
    request_headers: dict[str, str]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeBot:
    """One Slack app's bot user in the workspace: whom its bot token authenticates as.

    ``signing_secret`` is the app's own: each app signs the events it is sent with its secret.
    """

    token: str
    user_id: str
    bot_id: str
    app_id: str
    name: str
    signing_secret: str

    def user_info(self, team_id: str) -> dict[str, Any]:
        """What ``users.info`` says about the bot user (as for any bot: ``is_bot``)."""
        return {
            "id": self.user_id,
            "team_id": team_id,
            "name": self.name,
            "deleted": False,
            "real_name": self.name,
            "is_bot": True,
            "profile": {
                "display_name": "",
                "display_name_normalized": "",
                "real_name": self.name,
                "real_name_normalized": self.name,
                "bot_id": self.bot_id,
                "api_app_id": self.app_id,
            },
        }


@dataclass(slots=True)
class _Channel:
    id: str
    name: str | None
    is_private: bool = False
    is_im: bool = False
    is_mpim: bool = False
    user: str | None = None

    def kind(self) -> ChannelType:
        """The ``channel_type`` of its message events."""
        if self.is_im:
            return "im"
        if self.is_mpim:
            return "mpim"
        return "group" if self.is_private else "channel"

    def info(self) -> dict[str, Any]:
        document: dict[str, Any] = {"id": self.id}
        if not self.is_im:
            document["name"] = self.name
        # A private channel made before March 2021 has a G id and is a legacy "group".
        legacy_group = self.is_private and self.id.startswith("G") and not self.is_mpim
        document.update(
            {
                "is_channel": not (self.is_im or self.is_mpim or legacy_group),
                "is_group": legacy_group,
                "is_im": self.is_im,
                "is_mpim": self.is_mpim,
                "is_private": self.is_private or self.is_im or self.is_mpim,
                "is_archived": False,
                "created": 1700000000,
            }
        )
        if self.is_im and self.user is not None:
            document["user"] = self.user
        return document


@dataclass(slots=True)
class _Bucket:
    """A token bucket: ``capacity`` calls at once, refilled at ``capacity / period`` a second."""

    capacity: int
    period: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0 when a call may go now (and takes its token), else the seconds until one may."""
        rate = self.capacity / self.period
        self.tokens = min(float(self.capacity), self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / rate


@dataclass(slots=True, kw_only=True)
class _Upload:
    """One bot upload: started (step 1), its bytes (step 2), its shares (step 3)."""

    file_id: str
    name: str
    length: int
    secret: str
    user: FakeBot
    data: bytes | None = None
    title: str | None = None
    shares: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def document(self, fake: FakeSlack) -> dict[str, Any]:
        """The file object ``files.info`` and a ``file_share`` message carry."""
        base = fake._local_url(path=f"/files-pri/{fake.team_id}-{self.file_id}")
        public = {c: s for c, s in self.shares.items() if fake._channels[c].kind() == "channel"}
        private = {c: s for c, s in self.shares.items() if c not in public}
        shares: dict[str, Any] = {}
        if public:
            shares["public"] = json.loads(json.dumps(public))
        if private:
            shares["private"] = json.loads(json.dumps(private))
        return {
            "id": self.file_id,
            "created": int(time.time()),
            "name": self.name,
            "title": self.title or self.name,
            "user": self.user.user_id,
            "size": self.length,
            "mimetype": mimetypes.guess_type(self.name)[0] or "application/octet-stream",
            "filetype": self.name.rsplit(".", 1)[-1] if "." in self.name else "binary",
            "mode": "hosted",
            "is_external": False,
            "url_private": f"{base}/{self.name}",
            "url_private_download": f"{base}/download/{self.name}",
            "channels": sorted(public),
            "groups": sorted(c for c in private if not c.startswith("D")),
            "ims": sorted(c for c in private if c.startswith("D")),
            "shares": shares,
        }


class _ApiError(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


_Handler = Callable[[dict[str, Any]], dict[str, Any]]

_CALLER: ContextVar[FakeBot | None] = ContextVar("fake_slack_caller", default=None)
"""The bot whose token made the Web API call being served: each request is its own task, so
concurrent calls of different bots never see each other's. A context variable rather than a
handler argument, so subclasses that override a handler (``bench/load.py``) keep working."""


def _truthy(value: Any) -> bool:
    return value is True or value in ("true", "1", 1)


def _int_param(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _json_param(value: Any, error: str) -> Any:
    """Slack takes structured arguments (blocks, metadata) as objects or as JSON strings."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise _ApiError(error) from None
    return value


def _markdown_chunks(params: dict[str, Any]) -> str | None:
    """The text a stream call adds: ``markdown_text`` and/or ``markdown_text`` chunks (what
    slack_sdk's helper sends); None when the call carries none."""
    texts: list[str] = []
    markdown = params.get("markdown_text")
    if markdown is not None:
        if not isinstance(markdown, str):
            raise _ApiError("invalid_arguments")
        texts.append(markdown)
    chunks = _json_param(params.get("chunks"), "invalid_chunks")
    if chunks is not None:
        if not isinstance(chunks, list):
            raise _ApiError("invalid_chunks")
        for chunk in chunks:
            if not isinstance(chunk, dict) or not isinstance(chunk.get("type"), str):
                raise _ApiError("invalid_chunks")
            if chunk["type"] == "markdown_text":
                if not isinstance(chunk.get("text"), str):
                    raise _ApiError("invalid_chunks")
                texts.append(chunk["text"])
    if any(len(text) > MAX_MARKDOWN_CHARS for text in texts):
        raise _ApiError("msg_too_long")
    return "".join(texts) if texts else None


def _checked_blocks(value: Any) -> list[dict[str, Any]] | None:
    """Blocks as Slack checks them: a list of typed objects, at most 50, ``markdown`` blocks
    with text of at most 12,000 characters in all."""
    blocks = _json_param(value, "invalid_blocks")
    if blocks is None:
        return None
    if not isinstance(blocks, list) or not all(
        isinstance(block, dict) and isinstance(block.get("type"), str) for block in blocks
    ):
        raise _ApiError("invalid_blocks")
    if len(blocks) > MAX_BLOCKS:
        raise _ApiError("msg_blocks_too_many")
    markdown = [block for block in blocks if block["type"] == "markdown"]
    if not all(isinstance(block.get("text"), str) and block["text"] for block in markdown):
        raise _ApiError("invalid_blocks")
    if sum(len(block["text"]) for block in markdown) > MAX_MARKDOWN_CHARS:
        raise _ApiError("msg_blocks_too_long")
    return blocks


def _checked_metadata(value: Any) -> dict[str, Any] | None:
    metadata = _json_param(value, "invalid_metadata_format")
    if metadata is not None and not (
        isinstance(metadata, dict)
        and isinstance(metadata.get("event_type"), str)
        and isinstance(metadata.get("event_payload"), dict)
    ):
        raise _ApiError("invalid_metadata_format")
    if metadata is None:
        return None
    return {"event_type": metadata["event_type"], "event_payload": metadata["event_payload"]}


def _same(given: str, secret: str) -> bool:
    return hmac.compare_digest(given.encode(), secret.encode())


# --- the fake ------------------------------------------------------------------------------


class FakeSlack(FakePlatform[dict[str, Any]]):
    """Slack's Web API, Socket Mode and event delivery, on 127.0.0.1 and a free port.

    Strict on purpose: every call needs ``Authorization: Bearer`` with the right kind of token,
    channels must be registered (:meth:`add_channel`; ``D…`` ids are DMs and always exist;
    a channel an event was pushed from exists), users too (:meth:`add_user`). Everything is
    recorded in :attr:`calls`; each ``chat.postMessage`` also lands in :attr:`posts` and in
    the queue read by :meth:`next_post`.

    The constructor's bot (``bot_token``, ``bot_user_id``, ``bot_id``, ``app_id``) is the first
    of :attr:`bots`; :meth:`add_bot` adds more apps to the workspace. Socket Mode
    (``app_token``) belongs to the first app only.

    Failures are injected per Web API method (``method=``, default ``chat.postMessage``) with
    the verbs of :class:`~tests.fakes.base.FakePlatform`.
    """

    _FAULT_METHOD = "chat.postMessage"
    _FAULT_KINDS = frozenset({"rate_limit", "fail", "error", "delay", "drop"})

    def __init__(
        self,
        *,
        bot_token: str,
        signing_secret: str,
        app_token: str | None = None,
        bot_user_id: str = DEFAULT_BOT_USER_ID,
        bot_id: str = DEFAULT_BOT_ID,
        team_id: str = DEFAULT_TEAM_ID,
        app_id: str = DEFAULT_APP_ID,
    ) -> None:
        super().__init__()
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.app_token = app_token
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.team_id = team_id
        self.app_id = app_id
        # Read by Bolt's authorization into ``bot_scopes``.
        self.scopes = (
            "app_mentions:read,channels:history,groups:history,im:history,chat:write,"
            "files:read,files:write"
        )

        self.calls: list[ApiCall] = []
        self.file_requests: list[ApiCall] = []
        """Every request for a file URL (``/files-pri/...``), with its headers, answered or not."""
        self._files: dict[str, tuple[dict[str, Any], bytes, bool]] = {}
        self.posts: list[dict[str, Any]] = []
        self.pushes: list[PushResult] = []
        self.socket_sent: list[dict[str, Any]] = []
        self.socket_received: list[dict[str, Any]] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.socket_connections = 0

        self._channels: dict[str, _Channel] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._history: dict[str, list[dict[str, Any]]] = {}
        self._more_bots: list[FakeBot] = []
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self.streams: dict[tuple[str, str], StreamState] = {}
        """The state of every streamed message, by ``(channel, ts)``."""
        self.reactions: set[tuple[str, str, str, str]] = set()
        """Reactions present now: ``(channel, ts, name, user)``."""
        self.statuses: list[dict[str, Any]] = []
        """Every assistant thread status set: ``{"channel_id", "thread_ts", "status"}``."""
        self._buckets: dict[str, _Bucket] = {}
        self.uploads: dict[str, _Upload] = {}
        """Every upload a bot started, by file id."""
        self.upload_requests: list[ApiCall] = []
        """Every POST to an upload URL (step 2), with its headers, answered or not."""
        self.shares: list[dict[str, Any]] = []
        """Every share ``files.completeUploadExternal`` made: ``{"file_id", "channel",
        "thread_ts", "ts", "title"}`` (``ts`` of the file message)."""
        self._absent: set[str] = set()
        self._held_answers: dict[str, list[float]] = {}
        self._methods: dict[str, _Handler] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.startStream": self._chat_start_stream,
            "chat.appendStream": self._chat_append_stream,
            "chat.stopStream": self._chat_stop_stream,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "assistant.threads.setStatus": self._assistant_threads_set_status,
            "conversations.info": self._conversations_info,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "users.info": self._users_info,
            "apps.connections.open": self._apps_connections_open,
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "files.completeUploadExternal": self._files_complete_upload_external,
            "files.info": self._files_info,
        }

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The ``base_url`` for ``AsyncWebClient``: ``http://127.0.0.1:PORT/api/``."""
        return self._local_url(path="/api/")

    @property
    def socket_url(self) -> str:
        """Where Socket Mode connects, without the one-time ticket."""
        return self._local_url("ws", "/link")

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/{method}", self._api, allow_head=False)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/upload/v1/{secret}", self._upload_bytes)
        app.router.add_get("/link", self._link)
        app.router.add_get("/link/", self._link)
        app.router.add_get("/files-pri/{team_file}/{name}", self._file, allow_head=False)
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._file, allow_head=False)

    async def _close_connections(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)

    # --- workspace -------------------------------------------------------------------------

    def add_channel(
        self,
        id: str,
        name: str | None = None,
        *,
        is_private: bool = False,
        is_im: bool = False,
        is_mpim: bool = False,
        user: str | None = None,
    ) -> None:
        """Make a conversation exist. A ``D…`` id is a DM: it has no name but a ``user``."""
        if is_im and not id.startswith("D"):
            raise ValueError(f"a DM channel id starts with D: {id!r}")
        is_im = id.startswith("D")
        self._channels[id] = _Channel(
            id, None if is_im else (name or id.lower()), is_private, is_im, is_mpim, user
        )
        self._history.setdefault(id, [])

    def add_bot(
        self,
        *,
        bot_token: str,
        bot_user_id: str,
        bot_id: str,
        app_id: str,
        name: str = "bot",
        signing_secret: str | None = None,
    ) -> FakeBot:
        """Install another app in the workspace: its bot token is accepted from now on and
        acts as this bot. ``signing_secret`` defaults to the fake's (pass it to
        :meth:`push_event` as ``secret`` when the app has its own)."""
        for known in self.bots:
            clashes = {
                "bot_token": known.token == bot_token,
                "bot_user_id": known.user_id == bot_user_id,
                "bot_id": known.bot_id == bot_id,
                "app_id": known.app_id == app_id,
            }
            for field_name, clash in clashes.items():
                if clash:
                    raise ValueError(f"{field_name} is already {known.name!r}'s")
        if bot_token == self.app_token:
            raise ValueError("bot_token is the app-level token")
        bot = FakeBot(
            token=bot_token,
            user_id=bot_user_id,
            bot_id=bot_id,
            app_id=app_id,
            name=name,
            signing_secret=signing_secret if signing_secret is not None else self.signing_secret,
        )
        self._more_bots.append(bot)
        return bot

    @property
    def bots(self) -> list[FakeBot]:
        """Every bot of the workspace, the constructor's first (built from its attributes, so
        a test that changes ``bot_user_id`` and the like still sees its change)."""
        first = FakeBot(
            token=self.bot_token,
            user_id=self.bot_user_id,
            bot_id=self.bot_id,
            app_id=self.app_id,
            name="bridge",
            signing_secret=self.signing_secret,
        )
        return [first, *self._more_bots]

    def bot(self, key: str) -> FakeBot:
        """The bot with this token, bot user id, bot id or app id; ``KeyError`` if none."""
        for bot in self.bots:
            if key in (bot.token, bot.user_id, bot.bot_id, bot.app_id):
                return bot
        raise KeyError(key)

    def add_user(
        self, id: str, name: str, display_name: str = "", *, real_name: str | None = None
    ) -> None:
        """Make a user exist for ``users.info``."""
        real = real_name if real_name is not None else name.title()
        self._users[id] = {
            "id": id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real,
            "is_bot": False,
            "profile": {
                "display_name": display_name,
                "display_name_normalized": display_name,
                "real_name": real,
                "real_name_normalized": real,
            },
        }

    def add_message(
        self,
        channel: str,
        *,
        text: str,
        user: str = DEFAULT_USER,
        ts: str | None = None,
        thread_ts: str | None = None,
    ) -> dict[str, Any]:
        """Put a human's message in a channel's history, as if typed in Slack."""
        self._channel(channel)
        ts = ts or new_ts()
        stored = _user_message(
            user=user, text=text, ts=ts, team=self.team_id, channel=channel, thread_ts=thread_ts
        )
        self._store(channel, stored)
        return stored

    def add_file(
        self,
        *,
        name: str,
        data: bytes,
        mimetype: str = "application/octet-stream",
        user: str = DEFAULT_USER,
        file_id: str | None = None,
        chunked: bool = False,
    ) -> dict[str, Any]:
        """Upload a file as ``user`` did: the file object a ``file_share`` message carries
        (its URLs on this fake's loopback address instead of ``files.slack.com``). A
        ``chunked`` file is served without ``Content-Length``, in 16 KiB pieces."""
        file_id = file_id or f"F{secrets.token_hex(5).upper()}"
        base = self._local_url(path=f"/files-pri/{self.team_id}-{file_id}")
        document: dict[str, Any] = {
            "id": file_id,
            "created": int(time.time()),
            "timestamp": int(time.time()),
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1] if "." in name else "binary",
            "user": user,
            "size": len(data),
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": False,
            "url_private": f"{base}/{name}",
            "url_private_download": f"{base}/download/{name}",
            "permalink": f"https://fake-team.slack.com/files/{user}/{file_id}/{name}",
        }
        self._files[file_id] = (document, data, chunked)
        return dict(document)

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Every message of a channel, threads included, oldest first (copies)."""
        return [dict(item) for item in self._sorted(channel)]

    def _channel(self, channel_id: Any) -> _Channel:
        if not isinstance(channel_id, str) or not channel_id:
            raise _ApiError("channel_not_found")
        known = self._channels.get(channel_id)
        if known is None and channel_id.startswith("D"):
            self.add_channel(channel_id, is_im=True)
            known = self._channels[channel_id]
        if known is None:
            raise _ApiError("channel_not_found")
        return known

    # --- recording helpers -----------------------------------------------------------------

    def calls_to(self, method: str) -> list[ApiCall]:
        """The recorded calls of one Web API method, in order."""
        return [call for call in self.calls if call.method == method]

    def _describe_post(self, post: dict[str, Any]) -> str:
        return f"unexpected chat.postMessage: {post}"

    # --- scripting -------------------------------------------------------------------------

    def limit_rates(self, limits: Mapping[str, tuple[int, float]] | None = None) -> None:
        """Throttle methods as Slack's tiers do: ``method -> (calls, per seconds)``, a token
        bucket each (default :data:`TIERS`); a call past its bucket gets 429 + Retry-After.
        Off until called (tests that do not test rate limits are not slowed)."""
        now = time.monotonic()
        for method, (capacity, period) in (TIERS if limits is None else limits).items():
            self._buckets[method] = _Bucket(capacity, period, float(capacity), now)

    def reactions_on(self, channel: str, ts: str) -> set[str]:
        """The emoji names on one message now."""
        return {name for c, t, name, _user in self.reactions if (c, t) == (channel, ts)}

    def bot_leaves(self, channel: str) -> None:
        """The bot is no longer a member of ``channel``: sharing into it is ``not_in_channel``."""
        self._absent.add(channel)

    def expire_upload(self, file_id: str) -> None:
        """Slack discards an upload left uncompleted: the id is ``file_not_found`` from now on."""
        self.uploads.pop(file_id, None)
        self._files.pop(file_id, None)

    def hold_answer_next(self, n: int = 1, *, method: str, seconds: float = 3600.0) -> None:
        """The next ``n`` calls of ``method`` take effect at once, but their answers are held
        back ``seconds`` (cut short when the fake stops): a process killed meanwhile never
        learns that its call landed."""
        self._held_answers.setdefault(method, []).extend([seconds] * n)

    def shares_of(self, file_id: str) -> list[dict[str, Any]]:
        return [share for share in self.shares if share["file_id"] == file_id]

    def accept_then_drop_next(self, n: int = 1, *, method: str = "chat.postMessage") -> None:
        """The next ``n`` calls take effect (a post lands in the channel) but get no answer:
        :meth:`drop_next`, as when the network fails after Slack accepted a message."""
        self.drop_next(n, method=method)

    # --- the Web API -----------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        call = ApiCall(
            method=method,
            verb=request.method,
            path=request.path,
            headers=CIMultiDict(request.headers),
            query=dict(request.query),
            params=dict(request.query),
        )
        self.calls.append(call)
        fault: Fault | None = None
        try:
            await self._read_body(request, call)
            handler = self._methods.get(method)
            if handler is None:
                raise _ApiError("unknown_method")
            _CALLER.set(self._check_auth(request, method))
            fault = self._next_fault(method)
            if fault is not None and fault.kind != "drop":
                early = await self._apply(fault, call)
                if early is not None:
                    return early
            bucket = self._buckets.get(method)
            wait = bucket.take(time.monotonic()) if bucket is not None else 0.0
            if wait > 0:
                throttled = Fault("rate_limit", retry_after=float(math.ceil(wait)))
                return cast(web.Response, await self._apply(throttled, call))
            document = handler(call.params)
        except _ApiError as refused:
            call.error = refused.error
            call.status = 200
            extra = {"req_method": method} if refused.error == "unknown_method" else {}
            return web.json_response({"ok": False, "error": refused.error, **extra})
        if fault is not None and fault.kind == "drop":
            call.status = 0
            call.error = "dropped"
            return abort(request)
        call.status = 200
        held = self._held_answers.get(method)
        if held:
            self._notify()
            await self._pause(held.pop(0))
        headers = {"x-oauth-scopes": self.scopes} if method == "auth.test" else None
        return web.json_response({"ok": True, **document}, headers=headers)

    async def _read_body(self, request: web.Request, call: ApiCall) -> None:
        if request.method != "POST" or not request.body_exists:
            return
        if request.content_type == "application/json":
            raw = await request.read()
            try:
                data = json.loads(raw)
            except ValueError:
                raise _ApiError("invalid_json") from None
            if not isinstance(data, dict):
                raise _ApiError("invalid_json")
            call.json = data
            call.params.update(data)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form: MultiDictProxy[Any] = await request.post()
            call.params.update({key: value for key, value in form.items()})
        else:
            raise _ApiError("invalid_form_data")

    def _check_auth(self, request: web.Request, method: str) -> FakeBot:
        """The bot the call acts as: the one whose bot token it carries (the first bot for
        Socket Mode's app token, which only the first app has)."""
        header = request.headers.get("Authorization", "")
        if not header:
            raise _ApiError("not_authed")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            raise _ApiError("invalid_auth")
        bots = self.bots
        app_level = method == "apps.connections.open"
        if app_level and self.app_token is not None and _same(token, self.app_token):
            return bots[0]
        if not app_level:
            for bot in bots:
                if _same(token, bot.token):
                    return bot
        if token == self.app_token or any(token == bot.token for bot in bots):
            raise _ApiError("not_allowed_token_type")
        raise _ApiError("invalid_auth")

    def _caller(self) -> FakeBot:
        """The bot the Web API call being served acts as (the first bot outside a call)."""
        return _CALLER.get() or self.bots[0]

    async def _apply(self, fault: Fault, call: ApiCall) -> web.Response | None:
        if fault.kind == "delay":
            await self._pause(fault.seconds)
            return None
        if fault.kind == "rate_limit":
            call.status, call.error = 429, "ratelimited"
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": f"{fault.retry_after or 1:g}"},
            )
        if fault.kind == "error":
            call.status, call.error = 200, fault.error
            return web.json_response({"ok": False, "error": fault.error})
        status = fault.status or 500
        call.status, call.error = status, f"http {status}"
        return web.Response(status=status, body=fault.body, content_type=fault.content_type)

    # --- methods ---------------------------------------------------------------------------

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        bot = self._caller()
        return {
            "url": "https://fake-team.slack.com/",
            "team": "Fake Team",
            "user": f"{bot.name}-bot",
            "team_id": self.team_id,
            "user_id": bot.user_id,
            "bot_id": bot.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params.get("channel"))
        text = params.get("text")
        if text is not None and not isinstance(text, str):
            text = str(text)
        blocks = _checked_blocks(params.get("blocks"))
        attachments = _json_param(params.get("attachments"), "invalid_attachments")
        if params.get("markdown_text") and (text or blocks):
            raise _ApiError("markdown_text_conflict")
        if not text and not blocks and not attachments and not params.get("markdown_text"):
            raise _ApiError("no_text")
        if text is not None and len(text) > MAX_TEXT_CHARS:
            raise _ApiError("msg_too_long")
        metadata = _checked_metadata(params.get("metadata"))
        thread_ts, thread_known = self._thread_of(channel.id, params.get("thread_ts"))
        bot = self._caller()
        stored = self._bot_message(bot, text or "", thread_ts)
        ts = stored["ts"]
        if blocks:
            stored["blocks"] = blocks
        if attachments:
            stored["attachments"] = attachments
        if thread_ts is not None:
            stored["thread_ts"] = thread_ts
            if _truthy(params.get("reply_broadcast")):
                stored["subtype"] = "thread_broadcast"
        if metadata is not None:
            stored["metadata"] = metadata
        self._store(channel.id, stored)
        post = {
            "channel": channel.id,
            "ts": ts,
            "text": text,
            "thread_ts": thread_ts,
            "thread_known": thread_known,
            "blocks": blocks,
            "attachments": attachments,
            "metadata": stored.get("metadata"),
            "bot_id": bot.bot_id,
            "user": bot.user_id,
            "app_id": bot.app_id,
            "token": bot.token,
            "params": dict(params),
        }
        self.posts.append(post)
        self._post_queue.put_nowait(post)
        self._notify()
        return {"channel": channel.id, "ts": ts, "message": dict(stored)}

    def _thread_of(self, channel: str, thread_ts: Any) -> tuple[str | None, bool | None]:
        """The thread a message posted with ``thread_ts`` joins (a reply's ts means its
        thread) and whether that thread's message is known; (None, None) for no thread."""
        if not thread_ts:
            return None, None
        thread = str(thread_ts)
        parent = self._find(channel, thread)
        if parent is not None and parent.get("thread_ts") not in (None, parent["ts"]):
            thread = str(parent["thread_ts"])
        return thread, parent is not None

    def _bot_message(self, bot: FakeBot, text: str, thread_ts: str | None) -> dict[str, Any]:
        """A new message of ``bot``, as history shows it."""
        stored: dict[str, Any] = {
            "user": bot.user_id,
            "type": "message",
            "ts": new_ts(),
            "bot_id": bot.bot_id,
            "app_id": bot.app_id,
            "text": text,
            "team": self.team_id,
            "bot_profile": {
                "id": bot.bot_id,
                "app_id": bot.app_id,
                "name": bot.name,
                "team_id": self.team_id,
                "deleted": False,
            },
        }
        if thread_ts is not None:
            stored["thread_ts"] = thread_ts
        return stored

    def _own_message(
        self, params: dict[str, Any], *, not_owned: str
    ) -> tuple[_Channel, dict[str, Any]]:
        """The caller's message at ``params["ts"]``: ``message_not_found`` if there is none,
        ``not_owned`` if another app (or a human) wrote it."""
        channel = self._channel(params.get("channel"))
        found = self._find(channel.id, str(params.get("ts") or ""))
        if found is None:
            raise _ApiError("message_not_found")
        if found.get("bot_id") != self._caller().bot_id:
            raise _ApiError(not_owned)
        return channel, found

    def _chat_start_stream(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params.get("channel"))
        if not params.get("thread_ts"):
            raise _ApiError("invalid_arguments")  # streams are replies to a user's message
        # Slack asks for both even in DMs (the reference's community note): always required.
        team, user = params.get("recipient_team_id"), params.get("recipient_user_id")
        if not team:
            raise _ApiError("missing_recipient_team_id")
        if not user:
            raise _ApiError("missing_recipient_user_id")
        if team != self.team_id:
            raise _ApiError("team_not_found")
        bot_users = {bot.user_id for bot in self.bots}
        if user not in self._users and user != channel.user and user not in bot_users:
            raise _ApiError("user_not_found")
        text = _markdown_chunks(params) or ""
        thread_ts, known = self._thread_of(channel.id, params.get("thread_ts"))
        if not known:
            raise _ApiError("message_not_found")
        stored = self._bot_message(self._caller(), text, thread_ts)
        self._store(channel.id, stored)
        self.streams[(channel.id, stored["ts"])] = "streaming"
        self._notify()
        return {"channel": channel.id, "ts": stored["ts"]}

    def _streaming(self, params: dict[str, Any]) -> tuple[_Channel, dict[str, Any]]:
        channel, found = self._own_message(params, not_owned="message_not_owned_by_app")
        if self.streams.get((channel.id, found["ts"])) != "streaming":
            raise _ApiError("message_not_in_streaming_state")
        return channel, found

    def _chat_append_stream(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, found = self._streaming(params)
        text = _markdown_chunks(params)
        if not text:
            raise _ApiError("no_text")
        found["text"] = found.get("text", "") + text
        self._notify()
        return {"channel": channel.id, "ts": found["ts"]}

    def _chat_stop_stream(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, found = self._streaming(params)
        text = _markdown_chunks(params)
        blocks = _checked_blocks(params.get("blocks"))
        metadata = _checked_metadata(params.get("metadata"))
        found["text"] = found.get("text", "") + (text or "")
        if blocks:
            found["blocks"] = blocks
        if metadata is not None:
            found["metadata"] = metadata
        self.streams[(channel.id, found["ts"])] = "stopped"
        self._notify()
        return {"channel": channel.id, "ts": found["ts"], "message": dict(found)}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, found = self._own_message(params, not_owned="cant_update_message")
        if self.streams.get((channel.id, found["ts"])) == "streaming":
            raise _ApiError("streaming_state_conflict")
        text = params.get("text")
        if text is not None and not isinstance(text, str):
            text = str(text)
        blocks = _checked_blocks(params.get("blocks"))
        markdown = params.get("markdown_text")
        if markdown and (text or blocks):
            raise _ApiError("markdown_text_conflict")
        if not text and not blocks and not markdown:
            raise _ApiError("no_text")
        if text is not None and len(text) > MAX_UPDATE_CHARS:
            raise _ApiError("msg_too_long")
        if isinstance(markdown, str) and len(markdown) > MAX_MARKDOWN_CHARS:
            raise _ApiError("msg_too_long")
        metadata = _checked_metadata(params.get("metadata"))
        found["text"] = text or (markdown if isinstance(markdown, str) else "") or ""
        if blocks:
            found["blocks"] = blocks
        else:
            found.pop("blocks", None)
        if metadata is not None:
            found["metadata"] = metadata
        found["edited"] = {"user": self._caller().user_id, "ts": new_ts()}
        self._notify()
        return {"channel": channel.id, "ts": found["ts"], "text": found["text"]}

    def _chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, found = self._own_message(params, not_owned="cant_delete_message")
        history = self._history.get(channel.id, [])
        self._history[channel.id] = [item for item in history if item is not found]
        self.streams.pop((channel.id, found["ts"]), None)
        self._notify()
        return {"channel": channel.id, "ts": found["ts"]}

    def _reaction(self, params: dict[str, Any]) -> tuple[str, str, str, str]:
        for key in ("channel", "timestamp", "name"):
            if not params.get(key):
                raise _ApiError("no_item_specified" if key != "name" else "invalid_name")
        channel = self._channel(params.get("channel"))
        ts, name = str(params["timestamp"]), str(params["name"])
        if self._find(channel.id, ts) is None:
            raise _ApiError("message_not_found")
        if name not in KNOWN_EMOJI:
            raise _ApiError("invalid_name")
        return channel.id, ts, name, self._caller().user_id

    def _reactions_add(self, params: dict[str, Any]) -> dict[str, Any]:
        key = self._reaction(params)
        if key in self.reactions:
            raise _ApiError("already_reacted")
        self.reactions.add(key)
        self._refresh_reactions(key[0], key[1])
        return {}

    def _reactions_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        key = self._reaction(params)
        if key not in self.reactions:
            raise _ApiError("no_reaction")
        self.reactions.discard(key)
        self._refresh_reactions(key[0], key[1])
        return {}

    def _refresh_reactions(self, channel: str, ts: str) -> None:
        """The message's ``reactions`` field, as history shows it."""
        found = self._find(channel, ts)
        if found is not None:
            by_name: dict[str, list[str]] = {}
            for c, t, name, user in sorted(self.reactions):
                if (c, t) == (channel, ts):
                    by_name.setdefault(name, []).append(user)
            reactions = [
                {"name": name, "users": users, "count": len(users)}
                for name, users in by_name.items()
            ]
            if reactions:
                found["reactions"] = reactions
            else:
                found.pop("reactions", None)
        self._notify()

    def _assistant_threads_set_status(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params.get("channel_id"))
        thread_ts = str(params.get("thread_ts") or "")
        if not thread_ts or self._find(channel.id, thread_ts) is None:
            raise _ApiError("invalid_thread_ts")
        status = params.get("status")
        if not isinstance(status, str):
            raise _ApiError("invalid_arguments")
        self.statuses.append({"channel_id": channel.id, "thread_ts": thread_ts, "status": status})
        self._notify()
        return {}

    def _conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"channel": self._channel(params.get("channel")).info()}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        wanted = str(params.get("user", ""))
        user = self._users.get(wanted)
        if user is None:
            bot_user = next((b for b in self.bots if b.user_id == wanted), None)
            user = bot_user.user_info(self.team_id) if bot_user is not None else None
        if user is None:
            raise _ApiError("user_not_found")
        return {"user": json.loads(json.dumps(user))}

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params.get("channel"))
        ts = str(params.get("ts") or "")
        if not ts:
            raise _ApiError("thread_not_found")
        found = self._find(channel.id, ts)
        if found is not None and found.get("thread_ts") not in (None, found["ts"]):
            ts = str(found["thread_ts"])
        thread = [
            item
            for item in self._sorted(channel.id)
            if item["ts"] == ts or item.get("thread_ts") == ts
        ]
        if not thread:
            raise _ApiError("thread_not_found")
        thread = self._window(thread, params, newest_first=False)
        return self._page(thread, params, default_limit=1000)

    def _conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params.get("channel"))
        top = [
            item
            for item in self._sorted(channel.id)
            if item.get("thread_ts") in (None, item["ts"])
            or item.get("subtype") == "thread_broadcast"
        ]
        top = self._window(top, params, newest_first=True)
        return self._page(top, params, default_limit=100)

    def _apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        ticket = secrets.token_hex(16)
        self._tickets.add(ticket)
        return {"url": f"{self.socket_url}?ticket={ticket}&app_id={self.app_id}"}

    # --- bot uploads (external upload flow) --------------------------------------------------

    def _require_scope(self, scope: str) -> None:
        if scope not in self.scopes.split(","):
            raise _ApiError("missing_scope")

    def _files_get_upload_url_external(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require_scope("files:write")
        filename = params.get("filename")
        length = _int_param(params.get("length"), 0)
        if not isinstance(filename, str) or not filename or length <= 0:
            raise _ApiError("missing_argument")
        file_id = f"F{secrets.token_hex(5).upper()}"
        secret = secrets.token_urlsafe(16)
        self.uploads[file_id] = _Upload(
            file_id=file_id, name=filename, length=length, secret=secret, user=self._caller()
        )
        self._notify()
        url = self._local_url(path=f"/upload/v1/{secret}")
        return {"upload_url": url, "file_id": file_id}

    async def _upload_bytes(self, request: web.Request) -> web.StreamResponse:
        """Step 2: the raw bytes of one upload; 200 only for exactly the declared length."""
        call = _raw_call(request, UPLOAD_METHOD)
        self.upload_requests.append(call)
        self._notify()
        fault = self._next_fault(UPLOAD_METHOD)
        if fault is not None and fault.kind != "drop":
            early = await self._apply(fault, call)
            if early is not None:
                return early
        try:
            data = await request.read()
        except ConnectionResetError:  # the client is gone (killed while its upload was held)
            call.status, call.error = 0, "client gone"
            return web.Response(status=400)
        secret = request.match_info["secret"]
        upload = next((u for u in self.uploads.values() if u.secret == secret), None)
        if upload is None:
            call.status, call.error = 404, "unknown upload"
            return web.Response(status=404, text="Not Found")
        if upload.data is not None:
            call.status, call.error = 400, "already uploaded"
            return web.Response(status=400, text="already uploaded")
        if len(data) != upload.length:
            call.status, call.error = 400, "length mismatch"
            return web.Response(status=400, text="length mismatch")
        upload.data = data
        self._files[upload.file_id] = (upload.document(self), data, False)
        self._notify()
        if fault is not None:  # drop: stored, but the client never hears so
            call.status, call.error = 0, "dropped"
            return abort(request)
        call.status = 200
        return web.Response(status=200, text=f"OK - {len(data)}")

    def _files_complete_upload_external(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require_scope("files:write")
        files = _json_param(params.get("files"), "invalid_arguments")
        if not isinstance(files, list) or not files:
            raise _ApiError("invalid_arguments")
        chosen: list[tuple[_Upload, str]] = []
        for item in files:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise _ApiError("invalid_arguments")
            upload = self.uploads.get(item["id"])
            if upload is None or upload.data is None:
                raise _ApiError("file_not_found")
            title = item.get("title")
            chosen.append((upload, title if isinstance(title, str) and title else upload.name))
        channel_id = params.get("channel_id")
        if not channel_id:
            return {"files": [upload.document(self) for upload, _ in chosen]}  # private
        channel = self._channel(channel_id)
        if channel.id in self._absent:
            raise _ApiError("not_in_channel")
        thread_ts = str(params.get("thread_ts") or "") or None
        if thread_ts is not None:
            parent = self._find(channel.id, thread_ts)
            if parent is None or parent.get("thread_ts") not in (None, parent["ts"]):
                raise _ApiError("invalid_thread_ts")  # must be the thread's parent
        bot = self._caller()
        comment = params.get("initial_comment")
        stored = self._bot_message(bot, comment if isinstance(comment, str) else "", thread_ts)
        stored["subtype"] = "file_share"
        stored["upload"] = True
        documents = []
        for upload, title in chosen:
            upload.title = title
            share = {"ts": stored["ts"], "channel_name": channel.name or channel.id}
            if thread_ts is not None:
                share["thread_ts"] = thread_ts
            upload.shares.setdefault(channel.id, []).append(share)
            self.shares.append(
                {
                    "file_id": upload.file_id,
                    "channel": channel.id,
                    "thread_ts": thread_ts,
                    "ts": stored["ts"],
                    "title": title,
                    "private": channel.kind() != "channel",
                }
            )
            document = upload.document(self)
            self._files[upload.file_id] = (document, upload.data or b"", False)
            documents.append(document)
        stored["files"] = documents
        self._store(channel.id, stored)
        self._notify()
        return {"files": documents}

    def _files_info(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require_scope("files:read")
        upload = self.uploads.get(str(params.get("file") or ""))
        if upload is None or upload.data is None:
            raise _ApiError("file_not_found")
        return {"file": upload.document(self), "comments": [], "response_metadata": {}}

    # --- the message store -----------------------------------------------------------------

    def _store(self, channel: str, stored: dict[str, Any]) -> None:
        history = self._history.setdefault(channel, [])
        if any(item["ts"] == stored["ts"] for item in history):
            return
        history.append(stored)
        thread_ts = stored.get("thread_ts")
        if thread_ts is not None and thread_ts != stored["ts"]:
            parent = self._find(channel, thread_ts)
            if parent is not None:
                parent["thread_ts"] = parent["ts"]
                parent["reply_count"] = int(parent.get("reply_count", 0)) + 1
                users = parent.setdefault("reply_users", [])
                author = stored.get("user") or stored.get("bot_id")
                if author is not None and author not in users:
                    users.append(author)
                parent["reply_users_count"] = len(users)
                parent["latest_reply"] = max(
                    stored["ts"], parent.get("latest_reply", stored["ts"]), key=_ts_key
                )

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        for item in self._history.get(channel, []):
            if item["ts"] == ts:
                return item
        return None

    def _sorted(self, channel: str) -> list[dict[str, Any]]:
        return sorted(self._history.get(channel, []), key=lambda item: _ts_key(item["ts"]))

    def _window(
        self, items: list[dict[str, Any]], params: dict[str, Any], *, newest_first: bool
    ) -> list[dict[str, Any]]:
        inclusive = _truthy(params.get("inclusive"))
        oldest, latest = params.get("oldest"), params.get("latest")

        def inside(item: dict[str, Any]) -> bool:
            key = _ts_key(item["ts"])
            if oldest and (
                key < _ts_key(str(oldest)) or (key == _ts_key(str(oldest)) and not inclusive)
            ):
                return False
            return not (
                latest
                and (key > _ts_key(str(latest)) or (key == _ts_key(str(latest)) and not inclusive))
            )

        chosen = [item for item in items if inside(item)]
        return list(reversed(chosen)) if newest_first else chosen

    def _page(
        self, items: list[dict[str, Any]], params: dict[str, Any], *, default_limit: int
    ) -> dict[str, Any]:
        limit = max(1, min(_int_param(params.get("limit"), default_limit), 1000))
        cursor = str(params.get("cursor") or "")
        start = 0
        if cursor:
            try:
                start = int(base64.b64decode(cursor).decode().removeprefix("offset:"))
            except ValueError:
                raise _ApiError("invalid_cursor") from None
        page = items[start : start + limit]
        more = start + limit < len(items)
        next_cursor = base64.b64encode(f"offset:{start + limit}".encode()).decode() if more else ""
        with_metadata = _truthy(params.get("include_all_metadata"))
        messages = []
        for item in page:
            copy = json.loads(json.dumps(item))
            if not with_metadata:
                copy.pop("metadata", None)
            messages.append(copy)
        return {
            "messages": messages,
            "has_more": more,
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _remember_event(self, body: Mapping[str, Any]) -> None:
        """What a pushed event says happened also happened in the fake's Slack."""
        event = body.get("event")
        if body.get("type") != "event_callback" or not isinstance(event, dict):
            return
        channel = event.get("channel")
        if event.get("type") not in ("message", "app_mention") or not isinstance(channel, str):
            return
        if channel not in self._channels:
            kind = event.get("channel_type")
            if channel.startswith("D"):
                self.add_channel(channel, is_im=True, user=event.get("user"))
            else:
                self.add_channel(
                    channel, is_private=kind in ("group", "mpim"), is_mpim=kind == "mpim"
                )
        subtype = event.get("subtype")
        if subtype == "message_changed":
            changed = event.get("message") or {}
            stored = self._find(channel, str(changed.get("ts")))
            if stored is not None:
                stored["text"] = changed.get("text", stored.get("text"))
                stored["edited"] = changed.get("edited")
            return
        if subtype == "message_deleted":
            deleted = str(event.get("deleted_ts"))
            history = self._history.get(channel, [])
            self._history[channel] = [item for item in history if item["ts"] != deleted]
            return
        if subtype not in (None, "bot_message", "file_share", "thread_broadcast"):
            return
        keep = ("type", "subtype", "user", "bot_id", "app_id", "username", "text", "ts")
        stored = {key: event[key] for key in keep if key in event}
        stored["type"] = "message"
        for key in ("thread_ts", "parent_user_id", "client_msg_id", "team", "blocks"):
            if key in event:
                stored[key] = event[key]
        self._store(channel, stored)

    # --- Socket Mode -----------------------------------------------------------------------

    async def _file(self, request: web.Request) -> web.StreamResponse:
        """A file's content, only for a bot token of this workspace with ``files:read``;
        anything else gets Slack's HTML login page (HTTP 200)."""
        call = _raw_call(request, FILES_METHOD)
        self.file_requests.append(call)
        self._notify()
        fault = self._next_fault(FILES_METHOD)
        if fault is not None:
            if fault.kind == "drop":
                call.status, call.error = 0, "dropped"
                return abort(request)
            early = await self._apply(fault, call)
            if early is not None:
                return early
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        authed = scheme == "Bearer" and any(_same(token, bot.token) for bot in self.bots)
        if not authed or "files:read" not in self.scopes.split(","):
            call.status, call.error = 200, "login_page"
            return web.Response(body=LOGIN_PAGE_HTML, content_type="text/html", charset="utf-8")
        team, _, file_id = request.match_info["team_file"].partition("-")
        found = self._files.get(file_id)
        if team != self.team_id or found is None or found[0]["name"] != request.match_info["name"]:
            call.status, call.error = 404, "file_not_found"
            return web.Response(status=404, body=b"Not Found", content_type="text/plain")
        document, data, chunked = found
        call.status = 200
        if not chunked:
            return web.Response(body=data, content_type=document["mimetype"])
        response = web.StreamResponse(headers={"Content-Type": document["mimetype"]})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(data), 16 * 1024):
            await response.write(data[start : start + 16 * 1024])
        await response.write_eof()
        return response

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True)  # answers the SDK's "sdk-ping-pong" pings
        await ws.prepare(request)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {
                    "host": "applink-fake-1",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )
        self._sockets.append(ws)
        self.socket_connections += 1
        self._notify()
        try:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(frame.data)
                except ValueError:
                    data = {"unparsed": frame.data}
                self.socket_received.append(data)
                if isinstance(data, dict) and isinstance(data.get("envelope_id"), str):
                    self.acks[data["envelope_id"]] = data
                self._notify()
        finally:
            self._sockets.remove(ws)
            self._notify()
        return ws

    def _open_socket(self) -> web.WebSocketResponse:
        for ws in reversed(self._sockets):
            if not ws.closed:
                return ws
        raise RuntimeError("no Socket Mode client is connected")

    async def wait_socket_connected(
        self,
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        connections: int = 1,
    ) -> None:
        """Wait until ``connections`` sockets were opened in total and one is open now."""

        def ready() -> bool:
            return self.socket_connections >= connections and any(
                not ws.closed for ws in self._sockets
            )

        await self.wait_until(ready, timeout)

    async def push_socket_event(
        self, body: dict[str, Any], *, retry_attempt: int = 0, retry_reason: str = ""
    ) -> str:
        """Send an ``events_api`` envelope to the connected client; returns its envelope id."""
        ws = self._open_socket()
        self._remember_event(body)
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "payload": body,
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason or ("timeout" if retry_attempt else ""),
        }
        self.socket_sent.append(envelope)
        await ws.send_str(json.dumps(envelope))
        return envelope_id

    async def wait_ack(
        self,
        envelope_id: str,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """The client's acknowledgement ``{"envelope_id": ..., ["payload"]}``."""
        await self.wait_until(lambda: envelope_id in self.acks, timeout)
        return self.acks[envelope_id]

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the client to reconnect, as Slack does every few hours."""
        message = {
            "type": "disconnect",
            "reason": reason,
            "debug_info": {"host": "applink-fake-1"},
        }
        self.socket_sent.append(message)
        await self._open_socket().send_str(json.dumps(message))

    # --- the event pusher ------------------------------------------------------------------

    def event_for_post(
        self,
        post: Mapping[str, Any],
        *,
        to: str,
        event_type: Literal["app_mention", "message"] = "app_mention",
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """The envelope Slack sends app ``to`` (any key :meth:`bot` takes) about a message a
        bot posted (an item of :attr:`posts`): how agent B hears agent A's ``<@B>``.

        Shaped like Slack's event for a bot-token post: ``user`` is the posting bot's user,
        with its ``bot_id``, ``app_id`` and ``bot_profile`` and no subtype.
        """
        receiver = self.bot(to)
        channel = self._channel(post.get("channel"))
        stored = self._find(channel.id, str(post.get("ts")))
        if stored is None:
            raise KeyError(f"no message {post.get('ts')!r} in {channel.id}")
        event: dict[str, Any] = {"type": event_type}
        for key in ("user", "bot_id", "app_id", "text", "ts", "thread_ts", "team", "bot_profile"):
            if key in stored:
                event[key] = json.loads(json.dumps(stored[key]))
        if stored.get("thread_ts") in (None, stored["ts"]):
            event.pop("thread_ts", None)
        event["channel"] = channel.id
        event["event_ts"] = stored["ts"]
        if event_type == "message":
            event["channel_type"] = channel.kind()
        return _envelope(
            event,
            team=self.team_id,
            api_app_id=receiver.app_id,
            event_id=event_id,
            bot_user_id=receiver.user_id,
        )

    async def push_event(
        self,
        url: str,
        body: dict[str, Any],
        *,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timestamp: int | None = None,
        secret: str | None = None,
        raw_signature: str | None = None,
        deadline: float | None = None,
    ) -> PushResult:
        """POST one signed event to the service, as Slack does; returns what it answered.

        The body is serialized once and those exact bytes are signed (with ``secret`` instead
        of the signing secret, as for another app's events or a forger's, or replaced by
        ``raw_signature``, or at a stale ``timestamp``).
        Network errors and ``TimeoutError`` (after ``deadline`` seconds) propagate.
        """
        self._remember_event(body)
        raw = compact(body)
        stamp = str(timestamp if timestamp is not None else int(time.time()))
        signature = (
            raw_signature
            if raw_signature is not None
            else sign(secret if secret is not None else self.signing_secret, stamp, raw)
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": signature,
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        if self._http is None:
            self._http = aiohttp.ClientSession()
        started = time.monotonic()
        async with self._http.post(
            url, data=raw, headers=headers, timeout=aiohttp.ClientTimeout(total=deadline)
        ) as response:
            text = await response.text()
            result = PushResult(
                status=response.status,
                body=text,
                headers=CIMultiDict(response.headers),
                elapsed=time.monotonic() - started,
                retry_num=retry_num,
                request_body=raw,
                request_headers=headers,
                error=None if 200 <= response.status < 300 else "http_error",
            )
        self.pushes.append(result)
        return result

    async def deliver(
        self,
        url: str,
        body: dict[str, Any],
        *,
        deadline: float = 3.0,
        max_retries: int = 3,
        secret: str | None = None,
    ) -> list[PushResult]:
        """Deliver an event like Slack: resend it until a 2xx comes within ``deadline``.

        Retries carry ``X-Slack-Retry-Num`` 1..``max_retries`` and the reason of the previous
        failure; they go out at once (Slack waits up to minutes). A response with
        ``X-Slack-No-Retry: 1`` stops the redelivery, as it does at Slack. ``secret``: the
        receiving app's signing secret when it is not the fake's (:meth:`add_bot`).
        """
        results: list[PushResult] = []
        reason = "http_timeout"
        for attempt in range(max_retries + 1):
            retry_num = attempt or None
            started = time.monotonic()
            try:
                result = await self.push_event(
                    url,
                    body,
                    retry_num=retry_num,
                    retry_reason=reason,
                    deadline=deadline,
                    secret=secret,
                )
            except (TimeoutError, aiohttp.ClientError) as failure:
                reason = (
                    "http_timeout" if isinstance(failure, TimeoutError) else "connection_failed"
                )
                result = PushResult(
                    status=0,
                    body="",
                    headers=CIMultiDict(),
                    elapsed=time.monotonic() - started,
                    retry_num=retry_num,
                    request_body=compact(body),
                    request_headers={},
                    error=reason,
                )
                self.pushes.append(result)
            results.append(result)
            if result.ok or result.headers.get("X-Slack-No-Retry") == "1":
                break
            if result.status:
                reason = "http_error"
        return results


def _raw_call(request: web.Request, method: str) -> ApiCall:
    """A request outside the Web API (file bytes in and out), recorded like an API call."""
    return ApiCall(
        method=method,
        verb=request.method,
        path=request.path,
        headers=CIMultiDict(request.headers),
        query=dict(request.query),
        params={},
    )
