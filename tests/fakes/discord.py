"""A strict, offline fake of Discord (REST API v10 and the gateway), for the real discord.py.

One aiohttp server on 127.0.0.1 and a free port serves both halves, matching the shared
platform reference (§2, §4):

* **REST** under ``/api/v10`` (patch ``discord.http.Route.BASE`` to
  :attr:`FakeDiscord.api_base_url`).
  Every call needs ``Authorization: Bot <token>``; every answer is JSON with the bare
  ``Content-Type: application/json`` discord.py insists on; errors use Discord's shapes
  (``{"message", "code"[, "errors"]}``). Every request is recorded in
  :attr:`FakeDiscord.requests`; every created message lands in :attr:`FakeDiscord.posts` and
  the queue read by :meth:`FakeDiscord.next_post`. Sends honour ``nonce`` +
  ``enforce_nonce`` like Discord: a repeat within five minutes returns the original message.
* **The gateway** at ``/`` (patch ``DiscordWebSocket.DEFAULT_GATEWAY`` to
  ``yarl.URL(fake.gateway_url)``): HELLO, heartbeat ACKs, IDENTIFY → READY → one GUILD_CREATE
  per guild of the shard, RESUME with replay of every dispatch after the client's ``seq``,
  INVALID_SESSION, RECONNECT, Discord's close codes (4004 bad token, 4014 disallowed
  intents, ...), the MESSAGE_CONTENT and GUILD_MESSAGES / DIRECT_MESSAGES intents, sharding
  by ``(guild_id >> 22) % shard_count``. Frames are plain text (discord.py accepts them even
  though it asks for zlib-stream), or real zlib-stream with ``zlib_stream=True``.

Several bots (as when each agent is its own bot in one guild): :meth:`FakeDiscord.add_bot`
adds one with its own token and user. REST acts as the bot whose token a call carries (its
posts are authored by it; :attr:`DiscordRequest.bot_id` records which), IDENTIFY and RESUME
take any known token and READY's ``user`` is that bot, every bot is in every guild and gets
its GUILD_CREATE, and a message in a guild channel (a user's, or one a bot posted over REST)
is dispatched to every bot's session of the shard that owns the guild.

Dispatches are kept per session with their ``s``, so a RESUME replays exactly what Discord
would; :meth:`FakeDiscord.replay_on_next_resume` rewinds further, to deliver an event the
client already processed a second time (at-least-once delivery, as after a crash).

Usage::

    async with FakeDiscord() as fake:
        monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base_url)
        monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
        task = asyncio.create_task(client.start(fake.token))
        await fake.wait_identified()
        await fake.send_message(channel_id=DEFAULT_CHANNEL_ID, content="hi", mentions_bot=True)
        post = await fake.next_post()
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hmac
import itertools
import json
import mimetypes
import re
import secrets
import time
import unicodedata
import urllib.parse
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.base import (
    FakePlatform,
    Fault,
    HttpRecord,
    abort,
    json_response,
    parse_json,
    serve_on_loopback,
)

__all__ = [
    "API_VERSION",
    "CDN_METHOD",
    "CREATE_METHOD",
    "DEFAULT_APPLICATION_ID",
    "DEFAULT_BOT_ID",
    "DEFAULT_BOT_NAME",
    "DEFAULT_CHANNEL_ID",
    "DEFAULT_GUILD_ID",
    "DEFAULT_OWNER_ID",
    "DEFAULT_THREAD_ID",
    "DEFAULT_TOKEN",
    "DEFAULT_USER_ID",
    "DEFAULT_USER_NAME",
    "EDIT_METHOD",
    "INTENT_DIRECT_MESSAGES",
    "INTENT_GUILDS",
    "INTENT_GUILD_MEMBERS",
    "INTENT_GUILD_MESSAGES",
    "INTENT_GUILD_PRESENCES",
    "INTENT_MESSAGE_CONTENT",
    "MAX_CONTENT_CHARS",
    "MAX_DISTINCT_REACTIONS",
    "DiscordRequest",
    "FakeBot",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeUser",
    "GatewayConnection",
    "GatewaySession",
    "IdentifyRecord",
    "ResumeRecord",
    "UploadedFile",
    "new_snowflake",
    "shard_for",
]

API_VERSION = 10
DEFAULT_TOKEN = "fake-bot-token"
# The ids of the golden payload ``tests/fixtures/discord_message_create_guild_mention.json``.
DEFAULT_BOT_ID = "1100000000000000001"
DEFAULT_BOT_NAME = "testbot"
DEFAULT_APPLICATION_ID = DEFAULT_BOT_ID  # a bot's user id is its application id
DEFAULT_OWNER_ID = "1200000000000000001"
DEFAULT_USER_ID = "1200000000000000002"
DEFAULT_USER_NAME = "alice"
DEFAULT_GUILD_ID = "1300000000000000001"
DEFAULT_CHANNEL_ID = "1300000000000000002"
DEFAULT_THREAD_ID = "1300000000000000003"

MAX_CONTENT_CHARS = 2000
NONCE_WINDOW_SECONDS = 300.0
MAX_NONCE_CHARS = 25
MAX_DISTINCT_REACTIONS = 20
DEFAULT_EDIT_RATE_LIMIT = (5, 5.0)
"""Edits per channel bucket and window (seconds). Discord publishes no number; this is the
folklore "5 per 5 s per channel" (reference §1.2), configurable per fake."""
CREATE_METHOD = "POST /channels/{id}/messages"
EDIT_METHOD = "PATCH /channels/{id}/messages/{id}"
CDN_METHOD = "GET /attachments/{channel}/{id}/{name}"
"""``method=`` for the injection verbs: message creations (the default), edits or CDN
downloads of attachments (``fail_next(1, 500, method=CDN_METHOD)``)."""
CDN_LINK_SECONDS = 24 * 3600
DEFAULT_FILE_LIMIT = 10 * 1024 * 1024
"""Per file, for bots outside boosted guilds (40005 above it)."""
PREMIUM_FILE_LIMITS = {
    0: DEFAULT_FILE_LIMIT,
    1: DEFAULT_FILE_LIMIT,
    2: 50 * 1024**2,
    3: 100 * 1024**2,
}
"""Per file by the guild's boost tier, as discord.py's ``Guild.filesize_limit``."""
MAX_ATTACHMENTS = 10
"""Files per message (30015 above it)."""
MAX_REQUEST_BYTES = 25 * 1024 * 1024
"""All files of one message together, unless one allowed file alone is larger (40005)."""
_SERVER_MAX_BODY = 256 * 1024 * 1024
_FILE_PART = re.compile(r"files\[(\d+)\]")
"""How long a signed attachment link stays valid (Discord's are about a day)."""

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15

# Application flags that say a privileged intent is enabled in the Developer Portal (the
# "_LIMITED" variants, as for an app in fewer than 100 guilds).
_APP_FLAG_PRESENCE_LIMITED = 1 << 13
_APP_FLAG_MEMBERS_LIMITED = 1 << 15
_APP_FLAG_MESSAGE_CONTENT_LIMITED = 1 << 19

# What @everyone may do in a new server, so ``channel.permissions_for(guild.me)`` is sensible.
_EVERYONE_PERMISSIONS = (
    (1 << 0)  # CREATE_INSTANT_INVITE
    | (1 << 6)  # ADD_REACTIONS
    | (1 << 10)  # VIEW_CHANNEL
    | (1 << 11)  # SEND_MESSAGES
    | (1 << 14)  # EMBED_LINKS
    | (1 << 15)  # ATTACH_FILES
    | (1 << 16)  # READ_MESSAGE_HISTORY
    | (1 << 18)  # USE_EXTERNAL_EMOJIS
    | (1 << 20)  # CONNECT
    | (1 << 21)  # SPEAK
    | (1 << 26)  # CHANGE_NICKNAME
    | (1 << 35)  # CREATE_PUBLIC_THREADS
    | (1 << 38)  # SEND_MESSAGES_IN_THREADS
)
_BOT_ROLE_PERMISSIONS = _EVERYONE_PERMISSIONS | (1 << 13)  # + MANAGE_MESSAGES

_CREATE_BUCKET = "f4kebucket0messages"
_EDIT_BUCKET = "f4kebucket1edits"
_THREAD_TYPES = (10, 11, 12)
_TEXT_LIKE_TYPES = (0, 1, 2, 3, 5, 10, 11, 12, 13)  # channels that take messages
_DM_TYPE = 1
_JSON = "application/json"

_CLOSE_REASONS = {
    4000: "Unknown error.",
    4001: "Unknown opcode.",
    4002: "Decode error.",
    4003: "Not authenticated.",
    4004: "Authentication failed.",
    4005: "Already authenticated.",
    4007: "Invalid seq.",
    4008: "Rate limited.",
    4009: "Session timed out.",
    4010: "Invalid shard.",
    4011: "Sharding required.",
    4012: "Invalid API version.",
    4013: "Invalid intent(s).",
    4014: "Disallowed intent(s).",
}
# Closes after which Discord forgets the session, so a RESUME gets INVALID_SESSION.
_SESSION_ENDING_CLOSES = (4007, 4009)


# --- identifiers ---------------------------------------------------------------------------

_DISCORD_EPOCH_MS = 1_420_070_400_000
_increment = itertools.count()
_last_snowflake = 0


def new_snowflake() -> str:
    """A fresh snowflake id from the clock, increasing in this process, as Discord mints them.

    Ordering by id is ordering by creation, which message history relies on.
    """
    global _last_snowflake
    millis = int(time.time() * 1000) - _DISCORD_EPOCH_MS
    value = (millis << 22) | (1 << 17) | (next(_increment) & 0xFFF)
    _last_snowflake = max(value, _last_snowflake + 1)
    return str(_last_snowflake)


def shard_for(guild_id: str | int, shard_count: int) -> int:
    """The shard that receives a guild's events: Discord's ``(guild_id >> 22) % shard_count``."""
    return (int(guild_id) >> 22) % shard_count


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


# --- the world -----------------------------------------------------------------------------


@dataclass(slots=True)
class FakeChannel:
    """A guild channel (``type`` 0 text, 2 voice, 4 category, 5 news, 15 forum) or a thread
    (10 news thread, 11 public, 12 private; ``parent_id`` required)."""

    id: str
    name: str
    type: int = 0
    parent_id: str | None = None
    topic: str | None = None


@dataclass(slots=True)
class FakeGuild:
    """A guild the bot is in: its channels and its active threads."""

    id: str
    name: str
    channels: list[FakeChannel] = field(default_factory=list)
    threads: list[FakeChannel] = field(default_factory=list)
    owner_id: str = DEFAULT_OWNER_ID
    member_count: int = 2
    premium_tier: int = 0
    """Boosts raise the file size limit (:data:`PREMIUM_FILE_LIMITS`)."""


@dataclass(slots=True)
class FakeUser:
    """A Discord user the fake knows: authors, DM recipients, mentioned users."""

    id: str
    name: str
    global_name: str | None = None
    bot: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The public user object, as in message authors and mentions."""
        document: dict[str, Any] = {
            "id": self.id,
            "username": self.name,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "public_flags": 0,
        }
        if self.bot:
            document["bot"] = True
        return document


@dataclass(slots=True, kw_only=True)
class FakeBot:
    """A bot account: its token authenticates REST calls and gateway sessions as ``user``.

    A fake can hold several (:meth:`FakeDiscord.add_bot`), as when each agent of a bridge is
    its own Discord bot in the same guild; every bot is in every guild.
    """

    token: str
    user: FakeUser
    application_id: str

    @property
    def id(self) -> str:
        return self.user.id

    @property
    def name(self) -> str:
        return self.user.name


@dataclass(slots=True)
class _KnownChannel:
    """A channel as the fake routes it: in a guild (channel or thread) or a DM.

    A DM is between ``recipient_id`` (a user) and ``bot_id`` (one of the bots); only that bot
    may use it and only its sessions receive its events."""

    id: str
    type: int
    guild_id: str | None = None
    channel: FakeChannel | None = None
    position: int = 0
    recipient_id: str | None = None
    bot_id: str | None = None


# --- recording -----------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class CdnFile:
    """An attachment's bytes as the CDN serves them; ``chunked``: without Content-Length."""

    channel_id: str
    filename: str
    data: bytes
    content_type: str | None
    chunked: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadedFile:
    """One ``files[n]`` part of a multipart request, as it arrived."""

    index: int
    filename: str
    content_type: str | None
    data: bytes


@dataclass(slots=True, kw_only=True)
class DiscordRequest(HttpRecord):
    """One REST request as the fake received it (see :class:`~tests.fakes.base.HttpRecord`).

    ``response`` is the JSON body the fake answered, if any, ``error`` Discord's error
    message when it refused; ``bot_id`` is the bot whose token authenticated it (None when
    none did); ``files`` the files a multipart request uploaded (its ``json`` is then the
    ``payload_json`` part).
    """

    response: Any = None
    bot_id: str | None = None
    files: list[UploadedFile] = field(default_factory=list)


@dataclass(eq=False, kw_only=True)
class GatewayConnection:
    """One websocket to the gateway, in the order clients opened them; ``bot_id`` once an
    IDENTIFY or RESUME said which bot it is."""

    number: int
    query: dict[str, str]
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    bot_id: str | None = None
    shard: tuple[int, int] | None = None
    session_id: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: int = 0
    closed: bool = False
    close_code: int | None = None
    compressor: Any = None  # a zlib compressobj when speaking zlib-stream


@dataclass(eq=False, kw_only=True)
class GatewaySession:
    """A gateway session of one bot: what a RESUME continues. Keeps every dispatch with its
    ``s``."""

    id: str
    bot_id: str
    shard_id: int
    shard_count: int
    intents: int
    seq: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    connection: GatewayConnection | None = None
    replay_from: int | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def owns(self, guild_id: str | None) -> bool:
        """Whether this session receives the guild's events; DMs go to shard 0."""
        if guild_id is None:
            return self.shard_id == 0
        return shard_for(guild_id, self.shard_count) == self.shard_id

    @property
    def message_content(self) -> bool:
        return bool(self.intents & INTENT_MESSAGE_CONTENT)


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentifyRecord:
    """An accepted IDENTIFY: READY and the GUILD_CREATEs have been sent."""

    bot_id: str
    shard_id: int
    shard_count: int
    intents: int
    session_id: str
    connection: int
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeRecord:
    """A RESUME; ``accepted`` False when the session was unknown (answered with op 9)."""

    bot_id: str
    shard_id: int | None
    session_id: str | None
    seq: int | None
    accepted: bool
    replayed: int
    connection: int


class _DiscordError(Exception):
    """A refusal in Discord's shape: ``{"message", "code"[, "errors"]}`` with an HTTP status."""

    def __init__(
        self, status: int, message: str, code: int = 0, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message, "code": code}
        if errors is not None:
            self.body["errors"] = errors


def _form_error(field_name: str, code: str, message: str) -> _DiscordError:
    """Discord's 400 "Invalid Form Body" (50035) for one field."""
    errors = {field_name: {"_errors": [{"code": code, "message": message}]}}
    return _DiscordError(400, "Invalid Form Body", 50035, errors)


def _unknown_channel() -> _DiscordError:
    return _DiscordError(404, "Unknown Channel", 10003)


def _unknown_message() -> _DiscordError:
    return _DiscordError(404, "Unknown Message", 10008)


def _json_response(
    document: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer with the bare ``Content-Type: application/json`` discord.py requires.

    ``web.json_response`` would add ``; charset=utf-8``, after which discord.py treats the
    body as text and login fails.
    """
    return json_response(document, status, headers, charset=False)


def _int_param(query: dict[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise _form_error(name, "NUMBER_TYPE_COERCE", f'Value "{raw}" is not snowflake.') from None


_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


# --- the fake ------------------------------------------------------------------------------


class FakeDiscord(FakePlatform[dict[str, Any]]):
    """Discord's REST API and gateway on 127.0.0.1 and a free port; see the module docstring.

    Privileged intents: ``message_content_allowed`` (default True, as the bridge needs it),
    ``members_allowed`` and ``presences_allowed`` (default False, as for a new application).
    An IDENTIFY asking for one that is not allowed is closed with 4014. They hold for every
    bot.

    Several bots: the constructor's is the first (:attr:`bot`, :attr:`token`); more come
    with :meth:`add_bot`. A REST call acts as the bot whose token it carries, an IDENTIFY or
    RESUME opens or continues a session of that bot, and every bot is in every guild. The
    gateway helpers (``session``, ``wait_identified``, ``close_gateway``, ...) take
    ``bot_id``, which defaults to the first bot.

    Message creations fail as scripted with :meth:`fail_next_posts` or the verbs of
    :class:`~tests.fakes.base.FakePlatform` (``rate_limit_next``, ``fail_next``).
    """

    _FAULT_METHOD = CREATE_METHOD
    _FAULT_KINDS = frozenset({"rate_limit", "fail", "delay", "drop"})

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        bot_id: str = DEFAULT_BOT_ID,
        bot_name: str = DEFAULT_BOT_NAME,
        application_id: str = DEFAULT_APPLICATION_ID,
        message_content_allowed: bool = True,
        members_allowed: bool = False,
        presences_allowed: bool = False,
        heartbeat_interval_ms: int = 41250,
        guilds: Sequence[FakeGuild] | None = None,
        users: Sequence[FakeUser] | None = None,
        recommended_shards: int = 1,
        echo_own_messages: bool = True,
        zlib_stream: bool = False,
        edit_rate_limit: tuple[int, float] | None = DEFAULT_EDIT_RATE_LIMIT,
    ) -> None:
        super().__init__()
        self.bots: list[FakeBot] = [
            FakeBot(
                token=token,
                user=FakeUser(str(bot_id), bot_name, bot=True),
                application_id=str(application_id),
            )
        ]
        self.message_content_allowed = message_content_allowed
        self.members_allowed = members_allowed
        self.presences_allowed = presences_allowed
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.recommended_shards = recommended_shards
        # Discord sends the bot its own messages over the gateway too (bot-loop guards); other
        # bots get them whatever this says.
        self.echo_own_messages = echo_own_messages
        self.zlib_stream = zlib_stream
        # Scriptable at any time: stop answering heartbeats (a "zombie" connection).
        self.ack_heartbeats = True
        self.post_delay_seconds = 0.0
        # Per-file limit in force whatever the guild's tier says (as when a boost just ended
        # and a client's cache still has the higher one); None: by the tier.
        self.file_limit_override: int | None = None
        # Channels where the bot lacks ATTACH_FILES: an upload there is 403 (50013).
        self.attach_files_denied: set[str] = set()
        self._held_answers: deque[float] = deque()
        # (edits, seconds) per channel bucket, or None for no limit; scriptable at any time.
        self.edit_rate_limit = edit_rate_limit
        # Custom emoji a reaction may use as ``name:id``: id -> name.
        self.custom_emojis: dict[str, str] = {}

        self.guilds: list[FakeGuild] = list(guilds) if guilds is not None else [_default_guild()]
        self.users: dict[str, FakeUser] = {self.bot.id: self.bot}
        owner = FakeUser(DEFAULT_OWNER_ID, "owner", "Owner")
        for user in [owner, *(users if users is not None else [_default_user()])]:
            self.users[user.id] = user

        self.requests: list[DiscordRequest] = []
        self.posts: list[dict[str, Any]] = []
        self.typing: list[str] = []
        self.edits: list[dict[str, Any]] = []
        # (channel id, message id) -> emoji -> ids of the users who reacted with it
        self.reactions: dict[tuple[str, str], dict[str, list[str]]] = {}
        self.reaction_log: list[tuple[str, str, str, str]] = []
        self.nonce_hits: list[dict[str, Any]] = []
        # Downloads from the CDN (no token needed, none expected); attachment id -> file.
        self.cdn_requests: list[HttpRecord] = []
        self.cdn_files: dict[str, CdnFile] = {}
        self._cdn_key = secrets.token_bytes(16)
        self.connections: list[GatewayConnection] = []
        self.sessions: dict[str, GatewaySession] = {}
        self.identifies: list[IdentifyRecord] = []
        self.resumes: list[ResumeRecord] = []
        self.heartbeats = 0
        self.identified = asyncio.Event()
        self.session_start_total = 1000

        self._current: dict[tuple[str, int], GatewaySession] = {}  # (bot id, shard id)
        self._channels: dict[str, _KnownChannel] = {}
        self._dm_by_user: dict[tuple[str, str], str] = {}  # (bot id, user id) -> channel
        self._messages: dict[str, dict[str, dict[str, Any]]] = {}
        # (author bot id, channel id, nonce) -> (when, message id)
        self._nonces: dict[tuple[str, str, str], tuple[float, str]] = {}
        self._edit_times: dict[str, deque[float]] = {}  # channel id -> recent edits
        self._bot_role_ids: dict[tuple[str, str], str] = {}  # (bot id, guild id) -> role
        self._joined_at = _now_iso()
        self._verify_key = secrets.token_hex(32)
        self._index_guilds()
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = [
            ("GET", re.compile(r"/users/@me"), self._get_me),
            ("GET", re.compile(r"/users/(\d+)"), self._get_user),
            ("POST", re.compile(r"/users/@me/channels"), self._create_dm),
            ("GET", re.compile(r"/oauth2/applications/@me"), self._get_application),
            ("GET", re.compile(r"/gateway"), self._get_gateway),
            ("GET", re.compile(r"/gateway/bot"), self._get_gateway_bot),
            ("GET", re.compile(r"/channels/(\d+)"), self._get_channel),
            ("POST", re.compile(r"/channels/(\d+)/messages"), self._create_message),
            ("GET", re.compile(r"/channels/(\d+)/messages"), self._list_messages),
            ("GET", re.compile(r"/channels/(\d+)/messages/(\d+)"), self._get_message),
            ("PATCH", re.compile(r"/channels/(\d+)/messages/(\d+)"), self._edit_message),
            ("DELETE", re.compile(r"/channels/(\d+)/messages/(\d+)"), self._delete_message),
            ("POST", re.compile(r"/channels/(\d+)/typing"), self._trigger_typing),
            (
                "PUT",
                re.compile(r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me"),
                self._add_reaction,
            ),
            (
                "DELETE",
                re.compile(r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me"),
                self._remove_reaction,
            ),
        ]

    def _index_guilds(self) -> None:
        for guild in self.guilds:
            self._bot_role_ids[(self.bot.id, guild.id)] = new_snowflake()  # its managed role
            for position, channel in enumerate(guild.channels):
                if channel.type in _THREAD_TYPES:
                    raise ValueError(f"thread {channel.id} belongs in FakeGuild.threads")
                self._channels[channel.id] = _KnownChannel(
                    channel.id, channel.type, guild.id, channel, position
                )
            for thread in guild.threads:
                parent = self._channels.get(thread.parent_id or "")
                if thread.type not in _THREAD_TYPES:
                    raise ValueError(f"thread {thread.id} needs type 10, 11 or 12")
                if parent is None or parent.guild_id != guild.id:
                    raise ValueError(f"thread {thread.id} needs a parent channel in its guild")
                self._channels[thread.id] = _KnownChannel(thread.id, thread.type, guild.id, thread)

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self._local_url()

    @property
    def api_base_url(self) -> str:
        """What ``discord.http.Route.BASE`` must be: ``http://127.0.0.1:PORT/api/v10``."""
        return f"{self.url}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        """What ``DiscordWebSocket.DEFAULT_GATEWAY`` must be: ``ws://127.0.0.1:PORT/``."""
        return self._local_url("ws", "/")

    async def start(self) -> None:
        # aiohttp refuses bodies over 1 MiB by default; Discord takes uploads far larger.
        app = web.Application(client_max_size=_SERVER_MAX_BODY)
        self._add_routes(app)
        self._runner, self._port = await serve_on_loopback(app)

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._gateway)
        app.router.add_get("/attachments/{channel}/{id}/{name}", self._cdn)
        app.router.add_route("*", "/{tail:.*}", self._rest)

    async def _close_connections(self) -> None:
        """Close open gateway connections (1001)."""
        for conn in self.connections:
            if not conn.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.ws.close(code=1001), 1.0)
                if conn.transport is not None:
                    conn.transport.abort()

    # --- bots ------------------------------------------------------------------------------

    @property
    def bot(self) -> FakeUser:
        """The first bot's user: the one the constructor made."""
        return self.bots[0].user

    @property
    def token(self) -> str:
        """The first bot's token; assign to rotate it (the old one is refused from then on)."""
        return self.bots[0].token

    @token.setter
    def token(self, value: str) -> None:
        self.bots[0].token = value

    @property
    def application_id(self) -> str:
        return self.bots[0].application_id

    def add_bot(
        self,
        *,
        token: str,
        user_id: int | str,
        name: str,
        application_id: int | str | None = None,
    ) -> FakeBot:
        """Another bot in every guild, with its own token (e.g. a second agent's bot).

        Its REST calls act as it, its gateway sessions get every guild's events, and it can
        be mentioned as ``<@user_id>``. ``application_id`` defaults to the user id, as for
        any bot.
        """
        user_id = str(user_id)
        if any(b.token == token for b in self.bots):
            raise ValueError("another bot has this token")
        if user_id in self.users:
            raise ValueError(f"user {user_id} exists already")
        added = FakeBot(
            token=token,
            user=FakeUser(user_id, name, bot=True),
            application_id=str(application_id) if application_id is not None else user_id,
        )
        self.bots.append(added)
        self.users[user_id] = added.user
        for guild in self.guilds:
            self._bot_role_ids[(user_id, guild.id)] = new_snowflake()
        return added

    def bot_by_id(self, bot_id: int | str | None = None) -> FakeBot:
        """A known bot by user id; None is the first bot."""
        if bot_id is None:
            return self.bots[0]
        found = next((b for b in self.bots if b.id == str(bot_id)), None)
        if found is None:
            raise ValueError(f"unknown bot {bot_id}; add_bot() first")
        return found

    def _bot_by_token(self, token: object) -> FakeBot | None:
        if not isinstance(token, str):
            return None
        found = None
        for candidate in self.bots:  # compare with every one: no early exit on a match
            if hmac.compare_digest(token.encode(), candidate.token.encode()):
                found = candidate
        return found

    def _acting(self, record: DiscordRequest) -> FakeBot:
        """The bot a routed (so authenticated) REST request acts as."""
        return self.bot_by_id(record.bot_id)

    # --- the world -------------------------------------------------------------------------

    def add_user(self, user_id: str, name: str, *, global_name: str | None = None) -> FakeUser:
        """Make a (human) user known, e.g. as a DM recipient."""
        user = FakeUser(str(user_id), name, global_name)
        self.users[user.id] = user
        return user

    def create_dm_channel(
        self, user_id: str, *, channel_id: str | None = None, bot_id: int | str | None = None
    ) -> str:
        """The DM channel between a bot (default the first) and a known user (made once,
        like Discord's)."""
        user_id = str(user_id)
        bot = self.bot_by_id(bot_id)
        if user_id not in self.users:
            raise ValueError(f"unknown user {user_id}; add_user() first")
        existing = self._dm_by_user.get((bot.id, user_id))
        if existing is not None:
            return existing
        channel_id = str(channel_id) if channel_id is not None else new_snowflake()
        if channel_id in self._channels:
            raise ValueError(f"channel {channel_id} already exists")
        self._channels[channel_id] = _KnownChannel(
            channel_id, _DM_TYPE, recipient_id=user_id, bot_id=bot.id
        )
        self._dm_by_user[(bot.id, user_id)] = channel_id
        return channel_id

    def messages(self, channel_id: str) -> list[dict[str, Any]]:
        """Every message the fake knows in a channel, oldest first (copies, gateway shape)."""
        stored = self._messages.get(str(channel_id), {})
        return [copy.deepcopy(m) for m in sorted(stored.values(), key=lambda m: int(m["id"]))]

    def guild_create_payload(
        self, guild_id: str, *, bot_id: int | str | None = None
    ) -> dict[str, Any]:
        """The full GUILD_CREATE ``d`` the gateway sends a bot (default the first) for a
        guild."""
        guild = self._guild(guild_id)
        if guild is None:
            raise ValueError(f"unknown guild {guild_id}")
        return self._guild_object(guild, self.bot_by_id(bot_id))

    # --- recording helpers -----------------------------------------------------------------

    def requests_to(self, method: str, path_pattern: str) -> list[DiscordRequest]:
        """Recorded requests whose method matches and whose path fully matches the regex."""
        pattern = re.compile(path_pattern)
        return [r for r in self.requests if r.method == method and pattern.fullmatch(r.path)]

    def posts_by(self, bot_id: int | str | None = None) -> list[dict[str, Any]]:
        """The messages one bot (default the first) created through REST, oldest first."""
        author = self.bot_by_id(bot_id).id
        return [p for p in self.posts if p["author"]["id"] == author]

    def _describe_post(self, post: dict[str, Any]) -> str:
        return f"unexpected message created: {post}"

    def identify_count(
        self, shard_id: int | None = None, *, bot_id: int | str | None = None
    ) -> int:
        """Accepted IDENTIFYs of a bot (default the first), of one shard or all."""
        bot = self.bot_by_id(bot_id).id
        return sum(
            1
            for r in self.identifies
            if r.bot_id == bot and (shard_id is None or r.shard_id == shard_id)
        )

    def resume_count(self, shard_id: int | None = None, *, bot_id: int | str | None = None) -> int:
        """Accepted RESUMEs of a bot (default the first), of one shard or all."""
        bot = self.bot_by_id(bot_id).id
        return sum(
            1
            for r in self.resumes
            if r.accepted and r.bot_id == bot and (shard_id is None or r.shard_id == shard_id)
        )

    def session(self, shard_id: int = 0, *, bot_id: int | str | None = None) -> GatewaySession:
        """The newest identified session of a bot's (default the first's) shard."""
        bot = self.bot_by_id(bot_id)
        try:
            return self._current[(bot.id, shard_id)]
        except KeyError:
            raise RuntimeError(f"shard {shard_id} of bot {bot.id} has not identified") from None

    def dispatched(
        self, shard_id: int = 0, event: str | None = None, *, bot_id: int | str | None = None
    ) -> list[dict[str, Any]]:
        """The dispatches (``{"op": 0, "t", "s", "d"}``) of a shard's current session."""
        log = self.session(shard_id, bot_id=bot_id).log
        return [p for p in log if event is None or p["t"] == event]

    def last_seq(self, shard_id: int = 0, *, bot_id: int | str | None = None) -> int:
        """The ``s`` of the last dispatch of a shard's current session."""
        return self.session(shard_id, bot_id=bot_id).seq

    async def wait_identified(
        self,
        shard_id: int = 0,
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        count: int = 1,
        bot_id: int | str | None = None,
    ) -> GatewaySession:
        """Wait for ``count`` IDENTIFYs of a bot's (default the first's) shard (READY and
        GUILD_CREATEs sent)."""
        await self.wait_until(
            lambda: self.identify_count(shard_id, bot_id=bot_id) >= count, timeout
        )
        return self.session(shard_id, bot_id=bot_id)

    async def wait_resumed(
        self,
        shard_id: int = 0,
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        count: int = 1,
        bot_id: int | str | None = None,
    ) -> None:
        """Wait for ``count`` accepted RESUMEs of a bot's (default the first's) shard (replay
        and RESUMED sent)."""
        await self.wait_until(lambda: self.resume_count(shard_id, bot_id=bot_id) >= count, timeout)

    # --- REST faults -----------------------------------------------------------------------

    def fail_next_posts(
        self, count: int = 1, status: int = 429, retry_after: float = 0.3, global_: bool = False
    ) -> None:
        """The next ``count`` message creations fail with ``status`` and create nothing.

        429 comes as Discord sends it (``Via``, ``Retry-After``, ``X-RateLimit-*``, JSON body
        with ``retry_after``), which discord.py waits out and retries; 5xx as a JSON error,
        which discord.py retries after 1, 3, 5... seconds; other 4xx as plain errors.
        """
        if status == 429:
            self.rate_limit_next(count, retry_after=retry_after, global_=global_)
        else:
            self.fail_next(count, status)

    def hold_next_upload_answer(self, seconds: float) -> None:
        """The next message creation that uploads files takes effect at once but is answered
        ``seconds`` late (cut short by stop): a client that dies meanwhile never learns it
        landed."""
        self._held_answers.append(seconds)

    def file_limit(self, channel_id: str) -> int:
        """The largest file a message in ``channel_id`` may carry."""
        if self.file_limit_override is not None:
            return self.file_limit_override
        known = self._channels.get(channel_id)
        guild = self._guild(known.guild_id) if known is not None else None
        tier = guild.premium_tier if guild is not None else 0
        return PREMIUM_FILE_LIMITS.get(tier, DEFAULT_FILE_LIMIT)

    def uploads(self) -> list[DiscordRequest]:
        """Every multipart message creation that carried files, in order."""
        return [r for r in self.requests_to("POST", r"/api/v10/channels/\d+/messages") if r.files]

    # --- the CDN ---------------------------------------------------------------------------

    def add_attachment(
        self,
        *,
        channel_id: str = DEFAULT_CHANNEL_ID,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        size: int | None = None,
        chunked: bool = False,
        link_seconds: float = CDN_LINK_SECONDS,
    ) -> dict[str, Any]:
        """An attachment object (``id, filename, content_type?, size, url, proxy_url``) whose
        signed ``url`` the CDN route serves ``data`` at until ``link_seconds`` pass. ``size``
        is what the object declares (default the real size); ``content_type`` None leaves it
        out, as Discord may. Pass it to :meth:`send_message` in ``attachments``."""
        attachment_id = new_snowflake()
        self.cdn_files[attachment_id] = CdnFile(
            channel_id=channel_id,
            filename=filename,
            data=data,
            content_type=content_type,
            chunked=chunked,
        )
        path = f"/attachments/{channel_id}/{attachment_id}/{urllib.parse.quote(filename)}"
        issued = int(time.time())
        expires = int(issued + link_seconds)
        signature = self._cdn_signature(path, expires, issued)
        url = f"{self.url}{path}?ex={expires:x}&is={issued:x}&hm={signature}"
        document: dict[str, Any] = {
            "id": attachment_id,
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": url,
            "proxy_url": url,
        }
        if content_type is not None:
            document["content_type"] = content_type
        return document

    def remove_attachment(self, attachment_id: str) -> None:
        """The file is gone: the CDN answers 404."""
        del self.cdn_files[attachment_id]

    def _cdn_signature(self, path: str, expires: int, issued: int) -> str:
        message = f"{urllib.parse.unquote(path)}|{expires:x}|{issued:x}".encode()
        return hmac.new(self._cdn_key, message, "sha256").hexdigest()

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        """``GET /attachments/{channel}/{id}/{name}?ex=&is=&hm=``: no token (discord.py sends
        none); a link whose signature is wrong or whose time is past is 404, as on Discord."""
        record = await HttpRecord.read(request)
        self.cdn_requests.append(record)
        self._notify()
        response = await self._cdn_answer(request)
        record.status = response.status
        return response

    async def _cdn_answer(self, request: web.Request) -> web.StreamResponse:
        fault = self._next_fault(CDN_METHOD)
        if fault is not None and fault.kind == "fail":
            return web.Response(status=fault.status or 500, body=fault.body)
        if fault is not None and fault.kind == "delay":
            await self._pause(fault.seconds)
        elif fault is not None and fault.kind == "drop":
            return abort(request)
        info = request.match_info
        found = self.cdn_files.get(info["id"])
        if found is not None and (found.channel_id, found.filename) != (
            info["channel"],
            info["name"],
        ):
            found = None
        path = request.path
        try:
            expires, issued = int(request.query["ex"], 16), int(request.query["is"], 16)
            signed = hmac.compare_digest(
                request.query["hm"], self._cdn_signature(path, expires, issued)
            )
        except (KeyError, ValueError):
            signed = False
        if found is None or not signed or expires < time.time():
            return web.Response(status=404, text="This content is no longer available.")
        headers = {"Content-Type": found.content_type or "application/octet-stream"}
        if not found.chunked:
            return web.Response(body=found.data, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(found.data), 4096):
            await response.write(found.data[start : start + 4096])
        await response.write_eof()
        return response

    # --- the REST API ----------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        record = await DiscordRequest.read(request)
        self.requests.append(record)
        self._notify()
        try:
            response = await self._route(request, record)
        except _DiscordError as refused:
            record.error = str(refused.body["message"])
            response = _json_response(refused.body, refused.status)
        record.status = response.status
        if isinstance(response, web.Response) and response.content_type == _JSON:
            assert isinstance(response.body, bytes)
            record.response = json.loads(response.body)
        return response

    async def _route(self, request: web.Request, record: DiscordRequest) -> web.StreamResponse:
        prefix = f"/api/v{API_VERSION}"
        path = request.path
        if path.startswith(prefix):
            tail = path[len(prefix) :].rstrip("/") or "/"
            path_known = False
            for method, pattern, handler in self._routes:
                match = pattern.fullmatch(tail)
                if match is None:
                    continue
                path_known = True
                if method == request.method:
                    record.bot_id = self._check_auth(request).id
                    result: web.StreamResponse = await handler(request, record, *match.groups())
                    return result
            if path_known:
                raise _DiscordError(405, "405: Method Not Allowed", 0)
        raise _DiscordError(404, "404: Not Found", 0)

    def _check_auth(self, request: web.Request) -> FakeBot:
        """The bot whose token the request carries; any other is Discord's 401."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        bot = self._bot_by_token(token) if scheme == "Bot" else None
        if bot is None:
            raise _DiscordError(401, "401: Unauthorized", 0)
        return bot

    async def _read_payload(
        self, request: web.Request, record: DiscordRequest
    ) -> tuple[dict[str, Any], list[UploadedFile]]:
        """The JSON object of a body (or multipart ``payload_json``) and any uploaded files."""
        if request.content_type == "multipart/form-data":
            return await self._read_multipart(request, record)
        if not record.body:
            return {}, []
        if not isinstance(record.json, dict):
            raise _DiscordError(400, "The request body contains invalid JSON.", 50109)
        return record.json, []

    async def _read_multipart(
        self, request: web.Request, record: DiscordRequest
    ) -> tuple[dict[str, Any], list[UploadedFile]]:
        """``payload_json`` (a JSON object) + ``files[n]`` (each with a filename), as
        discord.py uploads attachments; anything else is Discord's 400."""
        # The body was read for the record already: replay it into a fresh stream.
        stream = aiohttp.StreamReader(request.protocol, max(2**16, len(record.body)))
        stream.feed_data(record.body)
        stream.feed_eof()
        reader = aiohttp.MultipartReader(request.headers, stream)
        payload: dict[str, Any] | None = None
        files: list[UploadedFile] = []
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, aiohttp.BodyPartReader):
                raise _DiscordError(400, "Nested multipart bodies are not supported.", 50109)
            data = bytes(await part.read())
            found = _FILE_PART.fullmatch(part.name or "")
            if part.name == "payload_json":
                if payload is not None:
                    raise _form_error("payload_json", "DUPLICATE", "Sent twice.")
                parsed = parse_json(data)
                if not isinstance(parsed, dict):
                    raise _DiscordError(400, "The request body contains invalid JSON.", 50109)
                payload = parsed
            elif found is not None:
                index = int(found.group(1))
                if not part.filename:
                    raise _form_error(part.name or "files", "BASE_TYPE_REQUIRED", "No filename.")
                if any(f.index == index for f in files):
                    raise _form_error(part.name or "files", "DUPLICATE", "Sent twice.")
                files.append(
                    UploadedFile(
                        index=index,
                        filename=part.filename,
                        content_type=part.headers.get("Content-Type"),
                        data=data,
                    )
                )
            else:
                # discord.py escapes nothing (quote_fields=False): "files%5B0%5D" lands here.
                raise _form_error(part.name or "", "UNKNOWN_FIELD", "Unknown multipart field.")
        if payload is None:
            raise _form_error("payload_json", "BASE_TYPE_REQUIRED", "This field is required")
        record.json = payload
        record.files = files
        return payload, files

    def _check_uploads(
        self, channel_id: str, payload: dict[str, Any], files: list[UploadedFile]
    ) -> None:
        """``attachments`` must name every uploaded file by its ``n`` (and nothing else); the
        count, each file's size and the total within Discord's limits; ATTACH_FILES held."""
        if not files:
            return
        if channel_id in self.attach_files_denied:
            raise _DiscordError(403, "Missing Permissions", 50013)
        listed = payload.get("attachments")
        if not isinstance(listed, list):
            raise _form_error("attachments", "BASE_TYPE_REQUIRED", "This field is required")
        ids: list[int] = []
        for entry in listed:
            raw = entry.get("id") if isinstance(entry, dict) else None
            try:
                ids.append(int(raw))
            except (TypeError, ValueError):
                raise _form_error("attachments", "ATTACHMENT_ID", "Invalid id.") from None
        if sorted(ids) != sorted(f.index for f in files):
            raise _form_error(
                "attachments", "ATTACHMENT_NOT_FOUND", "Attachment ids must match files[n]."
            )
        for entry in listed:
            name = entry.get("filename")
            upload = next(f for f in files if f.index == int(entry["id"]))
            if name is not None and name != upload.filename:
                raise _form_error("attachments", "FILENAME_MISMATCH", "Filename differs.")
        if len(files) > MAX_ATTACHMENTS:
            raise _DiscordError(
                400,
                f"Maximum number of attachments in a message reached ({MAX_ATTACHMENTS})",
                30015,
            )
        limit = self.file_limit(channel_id)
        total = sum(len(f.data) for f in files)
        if any(len(f.data) > limit for f in files) or total > max(MAX_REQUEST_BYTES, limit):
            raise _DiscordError(413, "Request entity too large", 40005)

    async def _get_me(self, request: web.Request, record: DiscordRequest) -> web.Response:
        return _json_response(self._bot_user_full(self._acting(record)))

    async def _get_user(
        self, request: web.Request, record: DiscordRequest, user_id: str
    ) -> web.Response:
        user = self.users.get(user_id)
        if user is None:
            raise _DiscordError(404, "Unknown User", 10013)
        return _json_response(user.to_dict())

    async def _get_application(self, request: web.Request, record: DiscordRequest) -> web.Response:
        owner = self.users[DEFAULT_OWNER_ID]
        bot = self._acting(record)
        return _json_response(
            {
                "id": bot.application_id,
                "name": bot.name,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "hook": True,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": self._verify_key,
                "owner": owner.to_dict(),
                "team": None,
                "flags": self._application_flags(),
                "bot": bot.user.to_dict(),
                "rpc_origins": [],
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "role_connections_verification_url": None,
                "tags": [],
                "approximate_guild_count": len(self.guilds),
                "integration_types_config": {"0": {}},
            }
        )

    async def _get_gateway(self, request: web.Request, record: DiscordRequest) -> web.Response:
        return _json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request, record: DiscordRequest) -> web.Response:
        started = self.identify_count(bot_id=record.bot_id)
        return _json_response(
            {
                "url": self.gateway_url,
                "shards": self.recommended_shards,
                "session_start_limit": {
                    "total": self.session_start_total,
                    "remaining": max(0, self.session_start_total - started),
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    async def _get_channel(
        self, request: web.Request, record: DiscordRequest, channel_id: str
    ) -> web.Response:
        return _json_response(self._channel_object(self._channel_for(record, channel_id)))

    async def _create_dm(self, request: web.Request, record: DiscordRequest) -> web.Response:
        payload, _ = await self._read_payload(request, record)
        recipient = payload.get("recipient_id")
        if recipient is None:
            raise _form_error("recipient_id", "BASE_TYPE_REQUIRED", "This field is required")
        if str(recipient) not in self.users:
            raise _DiscordError(404, "Unknown User", 10013)
        channel_id = self.create_dm_channel(str(recipient), bot_id=record.bot_id)
        return _json_response(self._channel_object(self._channels[channel_id]))

    async def _trigger_typing(
        self, request: web.Request, record: DiscordRequest, channel_id: str
    ) -> web.Response:
        self._channel_for(record, channel_id)
        self.typing.append(channel_id)
        self._notify()
        return web.Response(status=204)

    async def _create_message(
        self, request: web.Request, record: DiscordRequest, channel_id: str
    ) -> web.Response:
        await self._pause(self.post_delay_seconds)
        response = await self._with_fault(
            request, self._next_fault(), lambda: self._create_now(request, record, channel_id)
        )
        if self._held_answers and record.files:
            await self._pause(self._held_answers.popleft())
        return response

    async def _with_fault(
        self,
        request: web.Request,
        fault: Fault | None,
        handle: Callable[[], Any],
        *,
        bucket: str = _CREATE_BUCKET,
    ) -> web.Response:
        """Answer ``fault`` (a 429 or an error: no effect), or handle the request: ``delay``
        late, ``drop`` with its effect but no answer."""
        if fault is not None and fault.kind in ("rate_limit", "fail"):
            return self._fault_response(fault, bucket=bucket)
        if fault is not None and fault.kind == "delay":
            await self._pause(fault.seconds)
        response: web.Response = await handle()
        if fault is not None and fault.kind == "drop":
            return abort(request)
        return response

    async def _create_now(
        self, request: web.Request, record: DiscordRequest, channel_id: str
    ) -> web.Response:
        bot = self._acting(record)
        known = self._channel_for(record, channel_id)
        if known.type not in _TEXT_LIKE_TYPES:
            raise _DiscordError(400, "Cannot send messages in a non-text channel", 50008)
        payload, files = await self._read_payload(request, record)
        content = payload.get("content")
        if content is not None and not isinstance(content, str):
            raise _form_error("content", "BASE_TYPE_STRING", "Must be a string.")
        content = content or ""
        has_body = bool(content) or any(
            payload.get(key) for key in ("embeds", "sticker_ids", "components", "poll")
        )
        if not has_body and not files:
            raise _DiscordError(400, "Cannot send an empty message", 50006)
        if len(content) > MAX_CONTENT_CHARS:
            raise _form_error(
                "content",
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {MAX_CONTENT_CHARS} or fewer in length.",
            )
        self._check_uploads(channel_id, payload, files)
        nonce = payload.get("nonce")
        if nonce is not None:
            if isinstance(nonce, bool) or not isinstance(nonce, str | int):
                raise _form_error("nonce", "BASE_TYPE_STRING", "Must be a string or an integer.")
            nonce = str(nonce)
            if len(nonce) > MAX_NONCE_CHARS:
                raise _form_error(
                    "nonce",
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {MAX_NONCE_CHARS} or fewer in length.",
                )
            if payload.get("enforce_nonce") is True:
                original = self._nonce_hit(bot.id, channel_id, nonce)
                if original is not None:
                    self.nonce_hits.append(original)
                    self._notify()
                    return _json_response(self._rest_form(original))
        referenced = self._check_reference(channel_id, payload.get("message_reference"))
        message = self._build_message(
            channel_id=channel_id,
            guild_id=known.guild_id,
            author=bot.user,
            content=content,
            referenced=referenced,
            nonce=nonce,
            tts=bool(payload.get("tts", False)),
            embeds=list(payload.get("embeds") or []),
            components=list(payload.get("components") or []),
            attachments=[self._attachment(channel_id, f) for f in files],
            flags=int(payload.get("flags") or 0),
            replied_user_mentioned=_replied_user_mentioned(payload),
        )
        self._store(message)
        if nonce is not None:
            self._nonces[(bot.id, channel_id, nonce)] = (time.monotonic(), message["id"])
        post = self._rest_form(message)
        self.posts.append(post)
        self._post_queue.put_nowait(copy.deepcopy(post))
        self._notify()
        # Every session that sees the channel gets it: other bots always, the author's own
        # only with echo_own_messages.
        skip = None if self.echo_own_messages else bot.id
        await self._deliver("MESSAGE_CREATE", message, skip_bot=skip)
        return _json_response(post, headers=self._ratelimit_headers(remaining=4))

    def _nonce_hit(self, bot_id: str, channel_id: str, nonce: str) -> dict[str, Any] | None:
        """Discord dedups ``enforce_nonce`` per author: another bot's nonce is no hit."""
        seen = self._nonces.get((bot_id, channel_id, nonce))
        if seen is None or time.monotonic() - seen[0] > NONCE_WINDOW_SECONDS:
            return None
        return self._messages.get(channel_id, {}).get(seen[1])

    def _check_reference(self, channel_id: str, reference: Any) -> dict[str, Any] | None:
        """The referenced message, or None; an unknown one is Discord's 400 (50035)."""
        if reference is None:
            return None
        if not isinstance(reference, dict) or reference.get("message_id") is None:
            raise _form_error("message_reference", "BASE_TYPE_REQUIRED", "Invalid reference.")
        ref_channel = str(reference.get("channel_id") or channel_id)
        found = self._messages.get(ref_channel, {}).get(str(reference["message_id"]))
        if found is not None and ref_channel == channel_id:
            return found
        if reference.get("fail_if_not_exists") is False:
            return None
        raise _form_error(
            "message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
        )

    def _fault_response(self, fault: Fault, *, bucket: str = _CREATE_BUCKET) -> web.Response:
        if fault.kind == "rate_limit":
            retry_after = 0.3 if fault.retry_after is None else fault.retry_after
            headers = self._ratelimit_headers(remaining=0, reset_after=retry_after)
            headers["X-RateLimit-Bucket"] = bucket
            headers.update(
                {
                    "Via": "1.1 google",
                    "Retry-After": str(max(1, int(-(-retry_after // 1)))),
                    "X-RateLimit-Scope": "global" if fault.global_ else "user",
                }
            )
            if fault.global_:
                headers["X-RateLimit-Global"] = "true"
            body = {
                "message": "You are being rate limited.",
                "retry_after": retry_after,
                "global": fault.global_,
            }
            return _json_response(body, 429, headers)
        if fault.status == 403:
            return _json_response({"message": "Missing Permissions", "code": 50013}, 403)
        if fault.status == 404:
            return _json_response({"message": "Unknown Channel", "code": 10003}, 404)
        status = fault.status or 500
        message = f"{status}: {_reason(status)}"
        return _json_response({"message": message, "code": 0}, status)

    def _ratelimit_headers(self, *, remaining: int, reset_after: float = 5.0) -> dict[str, str]:
        return {
            "X-RateLimit-Bucket": _CREATE_BUCKET,
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        }

    async def _list_messages(
        self, request: web.Request, record: DiscordRequest, channel_id: str
    ) -> web.Response:
        bot = self._acting(record)
        self._channel_for(record, channel_id)
        limit = _int_param(record.query, "limit")
        limit = 50 if limit is None else limit
        if not 1 <= limit <= 100:
            raise _form_error("limit", "NUMBER_TYPE_MAX", "int value should be <= 100 and >= 1.")
        before = _int_param(record.query, "before")
        after = _int_param(record.query, "after")
        around = _int_param(record.query, "around")
        ordered = sorted(self._messages.get(channel_id, {}).values(), key=lambda m: int(m["id"]))
        if around is not None:
            older = [m for m in ordered if int(m["id"]) <= around][-((limit + 1) // 2) :]
            newer = [m for m in ordered if int(m["id"]) > around][: limit // 2]
            chosen = older + newer
        elif after is not None:
            chosen = [m for m in ordered if int(m["id"]) > after][:limit]
        else:
            if before is not None:
                ordered = [m for m in ordered if int(m["id"]) < before]
            chosen = ordered[-limit:]
        newest_first = sorted(chosen, key=lambda m: int(m["id"]), reverse=True)
        return _json_response([self._rest_view(m, bot) for m in newest_first])

    async def _get_message(
        self, request: web.Request, record: DiscordRequest, channel_id: str, message_id: str
    ) -> web.Response:
        self._channel_for(record, channel_id)
        found = self._messages.get(channel_id, {}).get(message_id)
        if found is None:
            raise _unknown_message()
        return _json_response(self._rest_view(found, self._acting(record)))

    async def _edit_message(
        self, request: web.Request, record: DiscordRequest, channel_id: str, message_id: str
    ) -> web.Response:
        throttled = self._edit_throttled(channel_id)
        if throttled is not None:
            return self._fault_response(
                Fault("rate_limit", retry_after=throttled), bucket=_EDIT_BUCKET
            )
        return await self._with_fault(
            request,
            self._next_fault(EDIT_METHOD),
            lambda: self._edit_now(request, record, channel_id, message_id),
            bucket=_EDIT_BUCKET,
        )

    def _edit_throttled(self, channel_id: str) -> float | None:
        """Seconds until the channel's edit bucket takes another edit; None when it does now
        (the edit is counted)."""
        if self.edit_rate_limit is None:
            return None
        count, window = self.edit_rate_limit
        now = time.monotonic()
        recent = self._edit_times.setdefault(channel_id, deque())
        while recent and now - recent[0] >= window:
            recent.popleft()
        if len(recent) >= count:
            return max(0.001, recent[0] + window - now)
        recent.append(now)
        return None

    def _edit_headers(self, channel_id: str) -> dict[str, str]:
        """The edit bucket's ``X-RateLimit-*`` as it stands after an edit."""
        if self.edit_rate_limit is None:
            return {}
        count, window = self.edit_rate_limit
        recent = self._edit_times.get(channel_id) or deque([time.monotonic()])
        reset_after = max(0.0, recent[0] + window - time.monotonic())
        headers = self._ratelimit_headers(
            remaining=max(0, count - len(recent)), reset_after=reset_after
        )
        headers["X-RateLimit-Bucket"] = _EDIT_BUCKET
        headers["X-RateLimit-Limit"] = str(count)
        return headers

    async def _edit_now(
        self, request: web.Request, record: DiscordRequest, channel_id: str, message_id: str
    ) -> web.Response:
        self._channel_for(record, channel_id)
        found = self._messages.get(channel_id, {}).get(message_id)
        if found is None:
            raise _unknown_message()
        if found["author"]["id"] != record.bot_id:
            raise _DiscordError(403, "Cannot edit a message authored by another user", 50005)
        payload, _ = await self._read_payload(request, record)
        content = payload.get("content", found["content"])
        if content is not None and not isinstance(content, str):
            raise _form_error("content", "BASE_TYPE_STRING", "Must be a string.")
        if content is not None and len(content) > MAX_CONTENT_CHARS:
            raise _form_error(
                "content",
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {MAX_CONTENT_CHARS} or fewer in length.",
            )
        updated = await self.edit_message(
            channel_id=channel_id,
            message_id=message_id,
            content=content or "",
            embeds=payload.get("embeds"),
            components=payload.get("components"),
        )
        self.edits.append(
            {
                "channel_id": channel_id,
                "message_id": message_id,
                "content": updated["content"],
                "bot_id": record.bot_id,
            }
        )
        self._notify()
        return _json_response(self._rest_form(updated), headers=self._edit_headers(channel_id))

    # --- reactions -------------------------------------------------------------------------

    def _reaction_target(
        self, request: web.Request, record: DiscordRequest, channel_id: str, message_id: str
    ) -> str:
        """The reacted emoji, percent-decoded, after the checks Discord makes: a known message
        and a percent-encoded unicode emoji or ``name:id`` of a known custom one (10014)."""
        self._channel_for(record, channel_id)
        if message_id not in self._messages.get(channel_id, {}):
            raise _unknown_message()
        raw = request.raw_path.split("?", 1)[0].rstrip("/").split("/")[-2]
        emoji = urllib.parse.unquote(raw)
        if not raw.isascii() or not _known_emoji(emoji, self.custom_emojis):
            raise _DiscordError(400, "Unknown Emoji", 10014)
        return emoji

    async def _add_reaction(
        self,
        request: web.Request,
        record: DiscordRequest,
        channel_id: str,
        message_id: str,
        _emoji: str,
    ) -> web.Response:
        emoji = self._reaction_target(request, record, channel_id, message_id)
        on_message = self.reactions.setdefault((channel_id, message_id), {})
        if emoji not in on_message and len(on_message) >= MAX_DISTINCT_REACTIONS:
            raise _DiscordError(400, "Maximum number of reactions reached (20)", 30010)
        users = on_message.setdefault(emoji, [])
        if record.bot_id not in users:  # adding it again changes nothing
            users.append(str(record.bot_id))
        self.reaction_log.append(("add", message_id, emoji, str(record.bot_id)))
        self._notify()
        return web.Response(status=204)

    async def _remove_reaction(
        self,
        request: web.Request,
        record: DiscordRequest,
        channel_id: str,
        message_id: str,
        _emoji: str,
    ) -> web.Response:
        emoji = self._reaction_target(request, record, channel_id, message_id)
        on_message = self.reactions.get((channel_id, message_id), {})
        users = on_message.get(emoji, [])
        if record.bot_id in users:
            users.remove(str(record.bot_id))
            if not users:
                del on_message[emoji]
        self.reaction_log.append(("remove", message_id, emoji, str(record.bot_id)))
        self._notify()
        return web.Response(status=204)

    def reactions_on(
        self, channel_id: str, message_id: str, *, bot_id: int | str | None = None
    ) -> list[str]:
        """The emoji a bot (default the first) has on a message now, in the order added."""
        user = self.bot_by_id(bot_id).id
        on_message = self.reactions.get((str(channel_id), str(message_id)), {})
        return [emoji for emoji, users in on_message.items() if user in users]

    def edits_of(self, message_id: str) -> list[str]:
        """Every content a message was edited to over REST, in order."""
        return [e["content"] for e in self.edits if e["message_id"] == str(message_id)]

    async def _delete_message(
        self, request: web.Request, record: DiscordRequest, channel_id: str, message_id: str
    ) -> web.Response:
        self._channel_for(record, channel_id)
        if message_id not in self._messages.get(channel_id, {}):
            raise _unknown_message()
        await self.delete_message(channel_id=channel_id, message_id=message_id)
        return web.Response(status=204)

    # --- objects ---------------------------------------------------------------------------

    def _application_flags(self) -> int:
        flags = 0
        if self.message_content_allowed:
            flags |= _APP_FLAG_MESSAGE_CONTENT_LIMITED
        if self.members_allowed:
            flags |= _APP_FLAG_MEMBERS_LIMITED
        if self.presences_allowed:
            flags |= _APP_FLAG_PRESENCE_LIMITED
        return flags

    def _bot_user_full(self, bot: FakeBot) -> dict[str, Any]:
        """``GET /users/@me`` and READY's ``user``: the bot's private user object."""
        return {
            **bot.user.to_dict(),
            "bot": True,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "mfa_enabled": False,
            "locale": "en-US",
            "verified": True,
            "email": None,
            "bio": "",
        }

    def _guild(self, guild_id: str | None) -> FakeGuild | None:
        return next((g for g in self.guilds if g.id == guild_id), None)

    def _known_channel(self, channel_id: str) -> _KnownChannel:
        known = self._channels.get(channel_id)
        if known is None:
            raise _unknown_channel()
        return known

    def _channel_for(self, record: DiscordRequest, channel_id: str) -> _KnownChannel:
        """A channel the requesting bot may use: another bot's DM is Discord's 403."""
        known = self._known_channel(channel_id)
        if known.type == _DM_TYPE and known.bot_id not in (None, record.bot_id):
            raise _DiscordError(403, "Missing Access", 50001)
        return known

    def _member(self, user: FakeUser, guild_id: str) -> dict[str, Any]:
        """A guild member object without ``user``, as in MESSAGE_CREATE's ``member``."""
        role = self._bot_role_ids.get((user.id, guild_id))  # a bot's managed role
        roles = [role] if role is not None else []
        return {
            "roles": roles,
            "nick": None,
            "avatar": None,
            "banner": None,
            "joined_at": self._joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }

    def _channel_object(self, known: _KnownChannel) -> dict[str, Any]:
        """A channel object as REST and GUILD_CREATE give it (threads included)."""
        if known.type == _DM_TYPE:
            recipient = self.users[known.recipient_id or ""]
            return {
                "id": known.id,
                "type": _DM_TYPE,
                "last_message_id": self._last_message_id(known.id),
                "flags": 0,
                "recipients": [recipient.to_dict()],
            }
        channel = known.channel
        assert channel is not None and known.guild_id is not None
        if channel.type in _THREAD_TYPES:
            return self._thread_object(known.guild_id, channel)
        document: dict[str, Any] = {
            "id": channel.id,
            "type": channel.type,
            "guild_id": known.guild_id,
            "name": channel.name,
            "position": known.position,
            "permission_overwrites": [],
            "parent_id": channel.parent_id,
            "flags": 0,
        }
        if channel.type in (0, 5, 15, 16):
            document.update(
                {
                    "topic": channel.topic,
                    "nsfw": False,
                    "rate_limit_per_user": 0,
                    "last_message_id": self._last_message_id(channel.id),
                    "default_auto_archive_duration": 1440,
                    "default_thread_rate_limit_per_user": 0,
                }
            )
        if channel.type in (2, 13):
            document.update(
                {
                    "bitrate": 64000,
                    "user_limit": 0,
                    "rtc_region": None,
                    "nsfw": False,
                    "rate_limit_per_user": 0,
                    "last_message_id": self._last_message_id(channel.id),
                }
            )
        if channel.type in (15, 16):
            document.update(
                {
                    "available_tags": [],
                    "default_reaction_emoji": None,
                    "default_sort_order": None,
                    "default_forum_layout": 0,
                }
            )
        return document

    def _thread_object(self, guild_id: str, thread: FakeChannel) -> dict[str, Any]:
        return {
            "id": thread.id,
            "type": thread.type,
            "guild_id": guild_id,
            "parent_id": thread.parent_id,
            "owner_id": DEFAULT_OWNER_ID,
            "name": thread.name,
            "last_message_id": self._last_message_id(thread.id),
            "rate_limit_per_user": 0,
            "message_count": len(self._messages.get(thread.id, {})),
            "member_count": 1,
            "total_message_sent": len(self._messages.get(thread.id, {})),
            "flags": 0,
            "applied_tags": [],
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": self._joined_at,
                "locked": False,
                "create_timestamp": self._joined_at,
            },
        }

    def _last_message_id(self, channel_id: str) -> str | None:
        stored = self._messages.get(channel_id)
        return max(stored, key=int) if stored else None

    def _roles(self, guild: FakeGuild) -> list[dict[str, Any]]:
        """@everyone and one managed role per bot, as Discord gives each bot it adds."""

        def role(
            role_id: str, name: str, position: int, permissions: int, bot_id: str | None = None
        ) -> dict[str, Any]:
            document: dict[str, Any] = {
                "id": role_id,
                "name": name,
                "description": None,
                "permissions": str(permissions),
                "position": position,
                "color": 0,
                "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                "hoist": False,
                "icon": None,
                "unicode_emoji": None,
                "managed": role_id != guild.id,
                "mentionable": False,
                "flags": 0,
            }
            if bot_id is not None:
                document["tags"] = {"bot_id": bot_id}
            return document

        return [
            role(guild.id, "@everyone", 0, _EVERYONE_PERMISSIONS),
            *(
                role(
                    self._bot_role_ids[(bot.id, guild.id)],
                    bot.name,
                    position,
                    _BOT_ROLE_PERMISSIONS,
                    bot.id,
                )
                for position, bot in enumerate(self.bots, start=1)
            ),
        ]

    def _guild_object(self, guild: FakeGuild, bot: FakeBot) -> dict[str, Any]:
        """The full GUILD_CREATE guild as ``bot`` gets it: what discord.py needs to build a
        ``Guild`` and its channels, threads, roles and ``guild.me`` (the only member listed,
        as without the GUILD_MEMBERS intent)."""
        channels = [self._channel_object(self._channels[c.id]) for c in guild.channels]
        threads = [self._thread_object(guild.id, t) for t in guild.threads]
        bot_member = {"user": bot.user.to_dict(), **self._member(bot.user, guild.id)}
        return {
            "id": guild.id,
            "name": guild.name,
            "icon": None,
            "icon_hash": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": guild.owner_id,
            "application_id": None,
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "widget_enabled": False,
            "widget_channel_id": None,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "nsfw": False,
            "premium_tier": guild.premium_tier,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "max_members": 500000,
            "max_presences": None,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "incidents_data": None,
            "hub_type": None,
            "features": [],
            "roles": self._roles(guild),
            "emojis": [],
            "stickers": [],
            "joined_at": self._joined_at,
            "large": False,
            "unavailable": False,
            "lazy": True,
            "member_count": max(guild.member_count, len(self.bots)),
            "members": [bot_member],
            "voice_states": [],
            "presences": [],
            "channels": channels,
            "threads": threads,
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
            "activity_instances": [],
            "application_command_counts": {},
            "version": int(time.time() * 1000),
        }

    def _attachment(self, channel_id: str, file: UploadedFile) -> dict[str, Any]:
        """An uploaded file as the message shows it, served by the CDN route; its type is
        guessed from the name, as Discord does (discord.py sends every part as
        ``application/octet-stream``)."""
        guessed, _ = mimetypes.guess_type(file.filename)
        return self.add_attachment(
            channel_id=channel_id, filename=file.filename, data=file.data, content_type=guessed
        )

    def _mentions(self, content: str, guild_id: str | None) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for user_id in _USER_MENTION.findall(content):
            user = self.users.get(user_id)
            if user is None or user_id in found:
                continue
            mention = user.to_dict()
            if guild_id is not None:
                mention["member"] = self._member(user, guild_id)
            found[user_id] = mention
        return list(found.values())

    def _build_message(
        self,
        *,
        channel_id: str,
        guild_id: str | None,
        author: FakeUser,
        content: str,
        message_id: str | None = None,
        referenced: dict[str, Any] | None = None,
        nonce: str | None = None,
        tts: bool = False,
        embeds: list[Any] | None = None,
        components: list[Any] | None = None,
        attachments: list[Any] | None = None,
        flags: int = 0,
        replied_user_mentioned: bool = False,
    ) -> dict[str, Any]:
        """A complete message in MESSAGE_CREATE's shape (``guild_id`` and ``member`` included)."""
        mentions = self._mentions(content, guild_id)
        if referenced is not None and replied_user_mentioned:
            replied = self.users.get(referenced["author"]["id"])
            if replied is not None and all(m["id"] != replied.id for m in mentions):
                mention = replied.to_dict()
                if guild_id is not None:
                    mention["member"] = self._member(replied, guild_id)
                mentions.append(mention)
        guild = self._guild(guild_id)
        role_ids = {role["id"] for role in self._roles(guild)} if guild is not None else set()
        message: dict[str, Any] = {
            "id": message_id or new_snowflake(),
            "type": 19 if referenced is not None else 0,
            "channel_id": channel_id,
            "content": content,
            "author": author.to_dict(),
            "mentions": mentions,
            "mention_roles": [r for r in _ROLE_MENTION.findall(content) if r in role_ids],
            "mention_everyone": False,
            "attachments": attachments or [],
            "embeds": embeds or [],
            "components": components or [],
            "pinned": False,
            "tts": tts,
            "flags": flags,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
        }
        if nonce is not None:
            message["nonce"] = nonce
        if referenced is not None:
            message["message_reference"] = {
                "type": 0,
                "message_id": referenced["id"],
                "channel_id": referenced["channel_id"],
            }
            if guild_id is not None:
                message["message_reference"]["guild_id"] = guild_id
            message["referenced_message"] = self._rest_form(referenced)
        if guild_id is not None:
            message["guild_id"] = guild_id
            message["member"] = self._member(author, guild_id)
        return message

    def _store(self, message: dict[str, Any]) -> None:
        self._messages.setdefault(message["channel_id"], {})[message["id"]] = message

    @staticmethod
    def _rest_form(message: dict[str, Any]) -> dict[str, Any]:
        """A message as REST answers it: without the gateway-only ``guild_id`` and ``member``."""
        document = copy.deepcopy(message)
        document.pop("guild_id", None)
        document.pop("member", None)
        for mention in document.get("mentions", []):
            mention.pop("member", None)
        return document

    def _rest_view(self, message: dict[str, Any], bot: FakeBot) -> dict[str, Any]:
        """REST form as ``bot`` reads it: content blanked when the app lacks the
        MESSAGE_CONTENT intent."""
        document = self._rest_form(message)
        if not self.message_content_allowed and self._content_restricted(message, bot.id):
            _blank_content(document)
        return document

    @staticmethod
    def _content_restricted(message: dict[str, Any], bot_id: str) -> bool:
        """MESSAGE_CONTENT applies: a guild message, not by the bot, not mentioning it."""
        return (
            message.get("guild_id") is not None
            and message["author"]["id"] != bot_id
            and all(m["id"] != bot_id for m in message.get("mentions", []))
        )

    # --- test controls: messages -----------------------------------------------------------

    async def send_message(
        self,
        *,
        channel_id: str = DEFAULT_CHANNEL_ID,
        content: str,
        author_id: str = DEFAULT_USER_ID,
        author_name: str = DEFAULT_USER_NAME,
        guild_id: str | None = None,
        bot: bool = False,
        mentions_bot: bool = False,
        message_id: str | None = None,
        referenced_message_id: str | None = None,
        dispatch: bool = True,
        bot_id: int | str | None = None,
        attachments: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        """A user (or another bot) posts a message; dispatches a complete MESSAGE_CREATE.

        The guild is the channel's, or ``guild_id`` (a guild the fake does not know gives
        the client a ``PartialMessageable``). An unknown channel without ``guild_id`` becomes
        the DM channel of the author and the bot ``bot_id`` (default the first).
        ``mentions_bot`` prefixes ``<@BOT_ID> `` of that bot. A guild message goes to every
        bot's session of the shard that owns the guild, a DM to its bot's shard 0; held for
        replay if it is disconnected, lost if that shard never identified. Returns the
        stored message (full content, gateway shape). ``attachments``: objects made by
        :meth:`add_attachment`.
        """
        channel_id, author_id = str(channel_id), str(author_id)
        addressed = self.bot_by_id(bot_id)
        if any(b.id == author_id for b in self.bots):
            raise ValueError(f"{author_id} is a fake bot: post as it through REST")
        known = self._channels.get(channel_id)
        if guild_id is None and known is not None:
            guild_id = known.guild_id
        author = self.users.get(author_id)
        if author is None or author.name != author_name or author.bot != bot:
            author = FakeUser(author_id, author_name, bot=bot)
            self.users[author_id] = author
        if guild_id is None and known is None:
            self._channels[channel_id] = _KnownChannel(
                channel_id, _DM_TYPE, recipient_id=author_id, bot_id=addressed.id
            )
            self._dm_by_user.setdefault((addressed.id, author_id), channel_id)
        referenced = None
        if referenced_message_id is not None:
            referenced = self._messages.get(channel_id, {}).get(str(referenced_message_id))
            if referenced is None:
                raise ValueError(f"no message {referenced_message_id} in channel {channel_id}")
        if mentions_bot:
            content = f"<@{addressed.id}> {content}"
        message = self._build_message(
            channel_id=channel_id,
            guild_id=str(guild_id) if guild_id is not None else None,
            author=author,
            content=content,
            message_id=str(message_id) if message_id is not None else None,
            referenced=referenced,
            nonce=new_snowflake(),
            attachments=[dict(a) for a in attachments],
            replied_user_mentioned=True,
        )
        self._store(message)
        self._notify()
        if dispatch:
            await self._deliver("MESSAGE_CREATE", message)
        return copy.deepcopy(message)

    async def edit_message(
        self,
        *,
        channel_id: str,
        message_id: str,
        content: str,
        embeds: list[Any] | None = None,
        components: list[Any] | None = None,
    ) -> dict[str, Any]:
        """Edit a known message (anyone's) and dispatch MESSAGE_UPDATE with the full message."""
        found = self._messages.get(str(channel_id), {}).get(str(message_id))
        if found is None:
            raise ValueError(f"no message {message_id} in channel {channel_id}")
        found["content"] = content
        found["mentions"] = self._mentions(content, found.get("guild_id"))
        if embeds is not None:
            found["embeds"] = list(embeds)
        if components is not None:
            found["components"] = list(components)
        found["edited_timestamp"] = _now_iso()
        self._notify()
        await self._deliver("MESSAGE_UPDATE", found)
        return copy.deepcopy(found)

    async def delete_message(self, *, channel_id: str, message_id: str) -> None:
        """Delete a known message and dispatch MESSAGE_DELETE."""
        stored = self._messages.get(str(channel_id), {})
        found = stored.pop(str(message_id), None)
        if found is None:
            raise ValueError(f"no message {message_id} in channel {channel_id}")
        self._notify()
        event: dict[str, Any] = {"id": found["id"], "channel_id": found["channel_id"]}
        if found.get("guild_id") is not None:
            event["guild_id"] = found["guild_id"]
        await self._deliver("MESSAGE_DELETE", event, guild_id=found.get("guild_id"))

    async def _deliver(
        self,
        event: str,
        data: dict[str, Any],
        *,
        guild_id: str | None = None,
        skip_bot: str | None = None,
    ) -> None:
        """Dispatch a message event to every current session (of any bot but ``skip_bot``)
        that owns its guild, or is the DM's bot, and whose intents let it see it;
        MESSAGE_CONTENT blanks content where Discord would."""
        guild_id = data.get("guild_id", guild_id)
        needed = INTENT_GUILD_MESSAGES if guild_id is not None else INTENT_DIRECT_MESSAGES
        known = self._channels.get(str(data.get("channel_id")))
        dm_bot = known.bot_id if guild_id is None and known is not None else None
        for session in list(self._current.values()):
            if session.bot_id == skip_bot or dm_bot not in (None, session.bot_id):
                continue
            if not session.owns(guild_id) or not session.intents & needed:
                continue
            seen = copy.deepcopy(data)
            if event != "MESSAGE_DELETE" and not session.message_content:
                if self._content_restricted(seen, session.bot_id):
                    _blank_content(seen)
                referenced = seen.get("referenced_message")
                if referenced is not None and referenced["author"]["id"] != session.bot_id:
                    referenced["guild_id"] = guild_id
                    if self._content_restricted(referenced, session.bot_id):
                        _blank_content(referenced)
                    referenced.pop("guild_id", None)
            await self._dispatch(session, event, seen)

    # --- test controls: the gateway --------------------------------------------------------

    # Every control acts on one shard of one bot: ``bot_id`` None is the first bot.

    def _open_connection(self, shard_id: int, bot_id: int | str | None) -> GatewayConnection:
        session = self.session(shard_id, bot_id=bot_id)
        conn = session.connection
        if conn is None or conn.closed:
            raise RuntimeError(f"shard {shard_id} has no open gateway connection")
        return conn

    async def request_reconnect(
        self, shard_id: int = 0, *, bot_id: int | str | None = None
    ) -> None:
        """Send RECONNECT (op 7): the client closes and RESUMEs."""
        await self._send(self._open_connection(shard_id, bot_id), _op(7, None))

    async def invalidate_session(
        self, shard_id: int = 0, resumable: bool = False, *, bot_id: int | str | None = None
    ) -> None:
        """Send INVALID_SESSION (op 9). Not resumable: the session is forgotten, so the client
        must IDENTIFY again (discord.py waits ``before_identify_hook``, 5 s by default)."""
        conn = self._open_connection(shard_id, bot_id)
        if not resumable:
            self.sessions.pop(self.session(shard_id, bot_id=bot_id).id, None)
        await self._send(conn, _op(9, resumable))

    async def close_gateway(
        self,
        code: int,
        shard_id: int = 0,
        reason: str | None = None,
        *,
        bot_id: int | str | None = None,
    ) -> None:
        """Close a shard's connection with a close code: 4000 makes discord.py RESUME; 4004
        raises ``ConnectionClosed``; 4014 ``PrivilegedIntentsRequired``; 4007/4009 also end
        the session, like Discord."""
        conn = self._open_connection(shard_id, bot_id)
        if code in _SESSION_ENDING_CLOSES and conn.session_id is not None:
            self.sessions.pop(conn.session_id, None)
        await self._close(conn, code, reason)

    async def drop_connection(self, shard_id: int = 0, *, bot_id: int | str | None = None) -> None:
        """Cut a shard's TCP connection without a close frame; discord.py RESUMEs."""
        conn = self._open_connection(shard_id, bot_id)
        if conn.transport is not None:
            conn.transport.abort()
        await self.wait_until(lambda: conn.closed)

    async def replay_on_next_resume(
        self, from_seq: int, shard_id: int = 0, *, bot_id: int | str | None = None
    ) -> None:
        """The next RESUME of the shard's session replays every dispatch with ``s > from_seq``,
        even if the client asks for a later ``seq``: events it already processed arrive again.
        """
        session = self.session(shard_id, bot_id=bot_id)
        async with session.lock:
            session.replay_from = from_seq

    async def force_resume_replaying_last(
        self, n: int = 1, shard_id: int = 0, *, bot_id: int | str | None = None
    ) -> int:
        """Make the client RESUME (close 4000) and replay its last ``n`` dispatches to it.

        Returns the ``from_seq`` used; ``await fake.wait_resumed(...)`` to wait for it.
        """
        session = self.session(shard_id, bot_id=bot_id)
        if not 1 <= n <= len(session.log):
            raise ValueError(f"the session has {len(session.log)} dispatches, not {n}")
        from_seq = int(session.log[-n]["s"]) - 1
        await self.replay_on_next_resume(from_seq, shard_id, bot_id=bot_id)
        await self.close_gateway(4000, shard_id, bot_id=bot_id)
        return from_seq

    async def dispatch_event(
        self,
        event: str,
        data: dict[str, Any],
        *,
        shard_id: int = 0,
        bot_id: int | str | None = None,
    ) -> dict[str, Any]:
        """Dispatch any event as given (e.g. a THREAD_CREATE, or a deliberately broken payload)
        on a shard's current session; returns the payload with its ``s``."""
        session = self.session(shard_id, bot_id=bot_id)
        await self._dispatch(session, event, copy.deepcopy(data))
        return session.log[-1]

    # --- the gateway -----------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, timeout=5.0, max_msg_size=4 * 1024 * 1024)
        if not ws.can_prepare(request).ok:
            # A plain GET of "/": recorded like any other unknown route.
            return await self._rest(request)
        await ws.prepare(request)
        conn = GatewayConnection(
            number=len(self.connections) + 1,
            query=dict(request.query),
            ws=ws,
            transport=request.transport,
        )
        self.connections.append(conn)
        self._notify()
        try:
            if conn.query.get("v") != str(API_VERSION):
                await self._close(conn, 4012)
                return ws
            if conn.query.get("encoding", "json") != "json":
                await self._close(conn, 4002, "This fake speaks only encoding=json.")
                return ws
            if self.zlib_stream and conn.query.get("compress") == "zlib-stream":
                conn.compressor = zlib.compressobj()
            await self._send(
                conn,
                _op(10, {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": _trace()}),
            )
            async for frame in ws:
                if frame.type is aiohttp.WSMsgType.TEXT:
                    await self._on_frame(conn, frame.data)
                elif frame.type is aiohttp.WSMsgType.BINARY:
                    await self._close(conn, 4002, "Binary frames are not accepted.")
                if ws.closed:
                    break
        finally:
            conn.closed = True
            conn.close_code = conn.close_code or ws.close_code
            session = self.sessions.get(conn.session_id or "")
            if session is None and conn.shard is not None and conn.bot_id is not None:
                session = self._current.get((conn.bot_id, conn.shard[0]))
            if session is not None and session.connection is conn:
                session.connection = None
            self._notify()
        return ws

    async def _on_frame(self, conn: GatewayConnection, text: str) -> None:
        try:
            payload = json.loads(text)
        except ValueError:
            await self._close(conn, 4002)
            return
        if not isinstance(payload, dict) or not isinstance(payload.get("op"), int):
            await self._close(conn, 4002)
            return
        conn.received.append(payload)
        self._notify()
        op = payload["op"]
        if op == 1:
            conn.heartbeats += 1
            self.heartbeats += 1
            if self.ack_heartbeats:
                await self._send(conn, _op(11, None))
        elif op in (2, 6):
            if conn.session_id is not None:
                await self._close(conn, 4005)
            elif op == 2:
                await self._identify(conn, payload.get("d"))
            else:
                await self._resume(conn, payload.get("d"))
        elif conn.session_id is None:
            await self._close(conn, 4003)
        elif op in (3, 4):
            pass  # presence and voice state updates: recorded, nothing to answer
        elif op == 8:
            await self._members_chunk(conn, payload.get("d"))
        else:
            await self._close(conn, 4001)

    def _disallowed_intents(self, intents: int) -> int:
        disallowed = 0
        if not self.message_content_allowed:
            disallowed |= INTENT_MESSAGE_CONTENT
        if not self.members_allowed:
            disallowed |= INTENT_GUILD_MEMBERS
        if not self.presences_allowed:
            disallowed |= INTENT_GUILD_PRESENCES
        return intents & disallowed

    async def _identify(self, conn: GatewayConnection, d: Any) -> None:
        if not isinstance(d, dict):
            await self._close(conn, 4002)
            return
        bot = self._bot_by_token(d.get("token"))
        if bot is None:
            await self._close(conn, 4004)
            return
        intents = d.get("intents")
        if isinstance(intents, bool) or not isinstance(intents, int) or intents < 0:
            await self._close(conn, 4013)
            return
        if self._disallowed_intents(intents):
            await self._close(conn, 4014)
            return
        shard = d.get("shard", [0, 1])
        if not (
            isinstance(shard, list)
            and len(shard) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in shard)
            and shard[1] >= 1
            and 0 <= shard[0] < shard[1]
        ):
            await self._close(conn, 4010)
            return
        shard_id, shard_count = shard
        session = GatewaySession(
            id=secrets.token_hex(16),
            bot_id=bot.id,
            shard_id=shard_id,
            shard_count=shard_count,
            intents=intents,
        )
        self.sessions[session.id] = session
        self._current[(bot.id, shard_id)] = session
        conn.session_id, conn.shard = session.id, (shard_id, shard_count)
        conn.bot_id = bot.id
        owned = [g for g in self.guilds if session.owns(g.id)]
        async with session.lock:
            session.connection = conn
            ready = {
                "v": API_VERSION,
                "user": self._bot_user_full(bot),
                "user_settings": {},
                "guilds": [{"id": g.id, "unavailable": True} for g in owned],
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": [],
                "session_id": session.id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "shard": [shard_id, shard_count],
                "application": {"id": bot.application_id, "flags": self._application_flags()},
                "_trace": _trace(),
            }
            await self._dispatch_locked(session, "READY", ready)
            if intents & INTENT_GUILDS:
                for guild in owned:
                    await self._dispatch_locked(
                        session, "GUILD_CREATE", self._guild_object(guild, bot)
                    )
        self.identifies.append(
            IdentifyRecord(
                bot_id=bot.id,
                shard_id=shard_id,
                shard_count=shard_count,
                intents=intents,
                session_id=session.id,
                connection=conn.number,
                payload=copy.deepcopy(d),
            )
        )
        self.identified.set()
        self._notify()

    async def _resume(self, conn: GatewayConnection, d: Any) -> None:
        if not isinstance(d, dict):
            await self._close(conn, 4002)
            return
        bot = self._bot_by_token(d.get("token"))
        if bot is None:
            await self._close(conn, 4004)
            return
        conn.bot_id = bot.id
        seq = d.get("seq")
        seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        session = self.sessions.get(str(d.get("session_id")))
        if session is not None and session.bot_id != bot.id:
            session = None  # another bot's session: unknown to this token
        if session is None:
            self.resumes.append(
                ResumeRecord(
                    bot_id=bot.id,
                    shard_id=None,
                    session_id=d.get("session_id"),
                    seq=seq,
                    accepted=False,
                    replayed=0,
                    connection=conn.number,
                )
            )
            self._notify()
            await self._send(conn, _op(9, False))
            return
        conn.session_id, conn.shard = session.id, (session.shard_id, session.shard_count)
        old = session.connection
        if old is not None and old is not conn and not old.closed and old.transport is not None:
            old.transport.abort()  # Discord ends the superseded connection
        async with session.lock:
            start = seq or 0
            if session.replay_from is not None:
                start = min(start, session.replay_from)
                session.replay_from = None
            replay = [p for p in session.log if p["s"] > start]
            session.connection = conn
            for payload in replay:
                await self._send(conn, payload)
            session.seq += 1  # RESUMED takes a sequence number but is never replayed
            await self._send(conn, {"op": 0, "t": "RESUMED", "s": session.seq, "d": {}})
        self._current.setdefault((bot.id, session.shard_id), session)
        self.resumes.append(
            ResumeRecord(
                bot_id=bot.id,
                shard_id=session.shard_id,
                session_id=session.id,
                seq=seq,
                accepted=True,
                replayed=len(replay),
                connection=conn.number,
            )
        )
        self._notify()

    async def _members_chunk(self, conn: GatewayConnection, d: Any) -> None:
        """REQUEST_GUILD_MEMBERS (op 8): one GUILD_MEMBERS_CHUNK with the members it knows."""
        if not isinstance(d, dict):
            await self._close(conn, 4002)
            return
        session = self.sessions.get(conn.session_id or "")
        if session is None:
            return
        bot = self.bot_by_id(session.bot_id)
        guild_ids = d.get("guild_id")
        for guild_id in guild_ids if isinstance(guild_ids, list) else [guild_ids]:
            guild = self._guild(str(guild_id))
            if guild is None:
                continue
            chunk: dict[str, Any] = {
                "guild_id": guild.id,
                "members": [{"user": bot.user.to_dict(), **self._member(bot.user, guild.id)}],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
            }
            if d.get("nonce") is not None:
                chunk["nonce"] = d["nonce"]
            await self._dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)

    async def _dispatch(self, session: GatewaySession, event: str, data: dict[str, Any]) -> None:
        async with session.lock:
            await self._dispatch_locked(session, event, data)

    async def _dispatch_locked(
        self, session: GatewaySession, event: str, data: dict[str, Any]
    ) -> None:
        """Give the event the session's next ``s``, log it for RESUME, send it if connected.

        Callers hold ``session.lock``, so ``s`` goes out in order.
        """
        session.seq += 1
        payload = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.log.append(payload)
        conn = session.connection
        if conn is not None and not conn.closed and not conn.ws.closed:
            await self._send(conn, payload)
        self._notify()

    async def _send(self, conn: GatewayConnection, payload: dict[str, Any]) -> bool:
        """Send one frame (text, or a zlib-stream binary frame); False if the socket is gone."""
        text = json.dumps(payload)
        conn.sent.append(payload)
        try:
            if conn.compressor is not None:
                data = conn.compressor.compress(text.encode()) + conn.compressor.flush(
                    zlib.Z_SYNC_FLUSH
                )
                await conn.ws.send_bytes(data)
            else:
                await conn.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def _close(self, conn: GatewayConnection, code: int, reason: str | None = None) -> None:
        conn.close_code = code
        message = (reason or _CLOSE_REASONS.get(code, "")).encode()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await conn.ws.close(code=code, message=message)
        self._notify()


# --- helpers -------------------------------------------------------------------------------


def _op(op: int, d: Any) -> dict[str, Any]:
    return {"op": op, "d": d, "s": None, "t": None}


def _trace() -> list[str]:
    return ['["gateway-fake-1",{"micros":0}]']


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _blank_content(message: dict[str, Any]) -> None:
    """What Discord sends without the MESSAGE_CONTENT intent."""
    message["content"] = ""
    message["embeds"] = []
    message["attachments"] = []
    message["components"] = []
    message.pop("poll", None)


def _replied_user_mentioned(payload: dict[str, Any]) -> bool:
    """A reply pings its author unless ``allowed_mentions`` says otherwise (then it must say
    ``replied_user: true``)."""
    allowed = payload.get("allowed_mentions")
    if not isinstance(allowed, dict):
        return True
    return bool(allowed.get("replied_user", False))


_EMOJI_JOINERS = frozenset("\u200d\ufe0f\ufe0e\u20e3")


def _known_emoji(emoji: str, custom: dict[str, str]) -> bool:
    """A unicode emoji (symbols, with joiners, variation selectors, skin tones and keycaps),
    or ``name:id`` of a known custom emoji."""
    name, _, emoji_id = emoji.partition(":")
    if emoji_id:
        return custom.get(emoji_id) == name
    symbols = [c for c in emoji if unicodedata.category(c) in ("So", "Sk") or c == "\u20e3"]
    return bool(symbols) and all(
        c in _EMOJI_JOINERS or c in "0123456789#*" or unicodedata.category(c) in ("So", "Sk")
        for c in emoji
    )


def _default_guild() -> FakeGuild:
    return FakeGuild(
        DEFAULT_GUILD_ID,
        "Test Guild",
        channels=[FakeChannel(DEFAULT_CHANNEL_ID, "general")],
        threads=[FakeChannel(DEFAULT_THREAD_ID, "a-thread", type=11, parent_id=DEFAULT_CHANNEL_ID)],
    )


def _default_user() -> FakeUser:
    return FakeUser(DEFAULT_USER_ID, DEFAULT_USER_NAME, "Alice")
