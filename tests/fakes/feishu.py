"""A strict, offline fake of Feishu/Lark: the Open API and the event push, for bridge tests.

One aiohttp server on 127.0.0.1 and a free port, matching the shared platform reference (§3,
§4). Point the bridge's Feishu base URL at :attr:`FakeFeishu.base_url`; it appends
``/open-apis/...`` as it would for ``https://open.feishu.cn``.

* **Crypto** (:func:`encrypt`, :func:`decrypt`, :func:`signature`): Feishu's event encryption
  (AES-256-CBC, key = SHA-256 of the Encrypt Key, random IV in front, base64) and its
  ``X-Lark-Signature``. The cipher is ``cryptography``'s AES; the padding, key derivation and
  framing are written here independently of the bridge's and checked against the reference's
  vectors in the tests.
* **The Open API**: ``tenant_access_token/internal`` (tokens really expire, by the clock),
  ``bot/v3/info``, ``im/v1/chats/{id}``, ``contact/v3/users/{id}``, ``im/v1/messages`` (send),
  ``im/v1/messages/{id}/reply``, ``GET im/v1/messages/{id}`` and the files users sent,
  ``GET im/v1/messages/{id}/resources/{key}?type=image|file`` (:meth:`FakeFeishu.add_resource`;
  a key of another message 234003, the wrong ``type`` 234001, a card 234043; faults under
  ``method="resource.get"``), uploads ``POST im/v1/images`` (multipart ``image_type``
  message|avatar, non-empty ``image`` ≤10 MB in an image format) and ``POST im/v1/files``
  (``file_type`` opus|mp4|pdf|doc|xls|ppt|stream, ``file_name``, non-empty ``file`` ≤30 MB),
  each a new key every time (:attr:`FakeFeishu.uploads`; faults under ``method="upload"``);
  an image/file/audio/media message must show keys this app uploaded, by the message type of
  the upload (else 230055); a send's faults can target one ``msg_type``
  (``method="send.file"``). Strict like Feishu: a valid
  ``Authorization: Bearer t-...`` on every call (else 99991661/99991663), ``content`` must be a
  *string* holding JSON, size limits, ``uuid`` idempotency for an hour, ``reply_in_thread``.
  Answers are ``{"code": 0, "msg": "success", "data": {...}}``; refusals HTTP 400
  ``{"code": N, "msg": ...}``. Every request lands in :attr:`FakeFeishu.requests`; every
  created message in :attr:`FakeFeishu.sent` and the queue read by :meth:`FakeFeishu.next_sent`.
  Faults: :meth:`FakeFeishu.rate_limit_next` (99991400 + ``x-ogw-ratelimit-*``, or a gateway
  429), :meth:`FakeFeishu.fail_next_sends`, :meth:`FakeFeishu.drop_next_sends`,
  :attr:`FakeFeishu.send_delay_seconds`, :meth:`FakeFeishu.expire_all_tokens`.
* **The event pusher** (:meth:`FakeFeishu.push`, :meth:`FakeFeishu.redeliver`,
  :meth:`FakeFeishu.push_with_redelivery`) plays Feishu posting schema 2.0 events to the
  bridge's request URL: encrypted as ``{"encrypt": ...}`` with the three ``X-Lark-*`` signature
  headers when an Encrypt Key is configured, plain JSON otherwise; url_verification is never
  signed. Builders (:meth:`FakeFeishu.message_event`, :meth:`FakeFeishu.url_verification`,
  :meth:`FakeFeishu.bot_added_event`, :meth:`FakeFeishu.bot_deleted_event`) produce payloads
  shaped like ``tests/fixtures/feishu_*.json``. What a pushed event says happened also
  happens in the fake (the message exists, so the bridge can reply to it).

Usage::

    async with FakeFeishu(encrypt_key="ek_test_key") as feishu:
        bridge = make_bridge(feishu_base_url=feishu.base_url, ...)
        event = feishu.message_event(chat_type="group", text="hi", mention_bot=True)
        result = await feishu.push(webhook_url, event)
        assert result.status == 200
        reply = await feishu.next_sent(timeout=5)
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import math
import re
import secrets
import time
import uuid as uuid_module
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from multidict import CIMultiDict

from tests.fakes.base import (
    FakePlatform,
    Fault,
    HttpRecord,
    abort,
    compact,
    json_response,
    serve_on_loopback,
)

__all__ = [
    "CODE_APP_SECRET_INVALID",
    "CODE_BOT_NOT_IN_CHAT",
    "CODE_CHAT_NOT_FOUND",
    "CODE_CONTENT_TOO_LONG",
    "CODE_INVALID_PARAM",
    "CODE_INVALID_PARAM_TYPE",
    "CODE_MESSAGE_NOT_FOUND",
    "CODE_MISSING_TOKEN",
    "CODE_RATE_LIMITED",
    "CODE_TOKEN_INVALID",
    "CODE_USER_NO_AUTHORITY",
    "DEFAULT_APP_ID",
    "DEFAULT_APP_SECRET",
    "DEFAULT_BOT_NAME",
    "DEFAULT_BOT_OPEN_ID",
    "DEFAULT_ENCRYPT_KEY",
    "DEFAULT_GROUP_CHAT_ID",
    "DEFAULT_P2P_CHAT_ID",
    "DEFAULT_TENANT_KEY",
    "DEFAULT_USER_NAME",
    "DEFAULT_USER_OPEN_ID",
    "DEFAULT_VERIFICATION_TOKEN",
    "FEISHU_RETRY_SCHEDULE_SECONDS",
    "MAX_RICH_CONTENT_BYTES",
    "MAX_TEXT_CONTENT_BYTES",
    "FakeFeishu",
    "FeishuChat",
    "FeishuRequest",
    "FeishuResource",
    "FeishuUpload",
    "PushResult",
    "SentMessage",
    "decrypt",
    "encrypt",
    "signature",
]

# The identities of the golden payloads ``tests/fixtures/feishu_*.json``.
DEFAULT_APP_ID = "cli_a1b2c3d4e5f60000"
DEFAULT_APP_SECRET = "fake-app-secret-0123456789abcdef"
DEFAULT_VERIFICATION_TOKEN = "vt_test_token"
# The key of the reference's deterministic vector (§3.3); the fake's default is plain mode.
DEFAULT_ENCRYPT_KEY = "ek_test_key"
DEFAULT_TENANT_KEY = "2ca1d211f64f6438"
DEFAULT_BOT_OPEN_ID = "ou_bot0000000000000000000000000001"
DEFAULT_BOT_UNION_ID = "on_2c4b0c6a1e8d0f0b7b5a3e7f9d1c2b3a"
DEFAULT_BOT_NAME = "TestBot"
DEFAULT_USER_OPEN_ID = "ou_84aad35d084aa403a838cf73ee18467"
DEFAULT_USER_UNION_ID = "on_8ed6aa67826108097d9ee143816345"
DEFAULT_USER_USER_ID = "e33ggbyz"
DEFAULT_USER_NAME = "Alice Chen"
DEFAULT_GROUP_CHAT_ID = "oc_5ad11d72b830411d72b836c20"
DEFAULT_GROUP_CHAT_NAME = "Team Standup"
DEFAULT_P2P_CHAT_ID = "oc_a0553eda9014c201e6969b478895c230"

# Feishu redelivers a push that got no 200 within 3 s after these delays (§3.6).
FEISHU_RETRY_SCHEDULE_SECONDS = (15.0, 300.0, 3600.0, 21600.0)
MAX_TEXT_CONTENT_BYTES = 150 * 1024
MAX_RICH_CONTENT_BYTES = 30 * 1024
UUID_WINDOW_SECONDS = 3600.0
MAX_UUID_CHARS = 50
# Asking for a token with less than this left returns a new one; otherwise the same one.
TOKEN_REFRESH_WINDOW_SECONDS = 1800.0

CODE_TOKEN_INVALID = 99991663
CODE_MISSING_TOKEN = 99991661
CODE_RATE_LIMITED = 99991400
CODE_APP_SECRET_INVALID = 10014
CODE_APP_ID_INVALID = 10003
CODE_FIELD_VALIDATION = 99992402
# What Feishu answers when ``content`` is a JSON object instead of a string holding JSON.
CODE_INVALID_PARAM_TYPE = 9499
CODE_INVALID_PARAM = 230001
CODE_BOT_NOT_IN_CHAT = 230002
CODE_MESSAGE_NOT_FOUND = 230011
CODE_USER_UNREACHABLE = 230013
CODE_CONTENT_TOO_LONG = 230025
CODE_CHAT_NOT_FOUND = 232006
CODE_CHAT_OPERATOR_OUT = 232011
CODE_USER_NO_AUTHORITY = 41050

# CardKit (the reference's "Strict fake (Feishu streaming)").
CODE_CARD_PARAM = 10002
CODE_CARD_NOT_FOUND = 200740
CODE_CARD_EXPIRED = 200750
CODE_STREAMING_TIMEOUT = 200850
CODE_CARD_TOO_BIG = 200860
CODE_UPDATE_MULTI_FALSE = 300302
CODE_STREAMING_CLOSED = 300309
CODE_ELEMENT_NOT_TEXT = 300310
CODE_UPDATE_ELEMENT_FAILED = 300313
CODE_SEQUENCE_NOT_INCREASING = 300317
# Sending a card entity a second time: Feishu's code is not documented (UNCONFIRMED).
CODE_CARD_ALREADY_SENT = 230099
CODE_REACTION_TYPE_INVALID = 231001
CODE_REACTION_NO_PERMISSION = 231002
CODE_REACTION_MESSAGE_NOT_FOUND = 231003
CODE_MESSAGE_NO_PERMISSION = 230027
# Message resources (GET im/v1/messages/{id}/resources/{key}).
CODE_RESOURCE_PARAM = 234001
CODE_RESOURCE_NOT_IN_MESSAGE = 234003
CODE_RESOURCE_TOO_LARGE = 234037
CODE_RESOURCE_UNSUPPORTED_MESSAGE = 234043
MAX_RESOURCE_BYTES = 100 * 1024 * 1024
# Uploads (POST im/v1/images, im/v1/files): no idempotency key; the key is this app's only.
CODE_UPLOAD_PARAM = 234001
CODE_UPLOAD_TOO_LARGE = 234006
CODE_UPLOAD_EMPTY = 234010
CODE_IMAGE_FORMAT = 234011
CODE_MSG_TYPE_MISMATCH = 230055
MAX_IMAGE_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_FILE_UPLOAD_BYTES = 30 * 1024 * 1024
MAX_REQUEST_BYTES = 40 * 1024 * 1024
IMAGE_TYPES = frozenset({"message", "avatar"})
FILE_TYPES = frozenset({"opus", "mp4", "pdf", "doc", "xls", "ppt", "stream"})
# The message type each kind of upload may be shown by (else 230055).
_UPLOAD_MSG_TYPES = {"image": "image", "opus": "audio", "mp4": "media"}
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"RIFF")
CARD_OPS_PER_SECOND = 10
CARD_STREAMING_SECONDS = 600.0
CARD_LIFETIME_SECONDS = 14 * 86400.0
MAX_CARD_CONTENT_CHARS = 100_000
MAX_CARD_BYTES = 30 * 1024
MAX_CARD_IDS = 20
# A subset of the official, case-sensitive emoji_type names (185 in all).
EMOJI_TYPES = frozenset(
    {
        "OnIt", "Typing", "OneSecond", "Get", "DONE", "CheckMark", "CrossMark", "THUMBSUP",
        "OK", "ERROR", "THINKING", "LGTM", "Yes", "No", "SMILE", "HEART", "APPLAUSE",
        "MUSCLE", "FINGERHEART", "JIAYI",
    }
)  # fmt: skip
POST_TAGS = frozenset({"text", "a", "at", "img", "media", "emotion", "hr", "code_block", "md"})
POST_LOCALES = frozenset({"zh_cn", "en_us", "ja_jp"})

_RATE_LIMIT_MESSAGES = {
    CODE_RATE_LIMITED: "request trigger frequency limit",
    230020: "This operation triggers the frequency limit.",
    11232: "create message trigger rate limit",
}
MSG_TYPES = frozenset(  # what a send or reply may create
    {
        "text",
        "post",
        "image",
        "file",
        "audio",
        "media",
        "sticker",
        "interactive",
        "share_chat",
        "share_user",
        "system",
    }
)
_RECEIVE_ID_TYPES = frozenset({"chat_id", "open_id", "union_id", "user_id", "email"})
_USER_ID_TYPES = frozenset({"open_id", "union_id", "user_id"})
_USER_AGENT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Lark/7.20.0"

ChatMode = Literal["group", "topic", "p2p"]


# --- Feishu's event crypto ---------------------------------------------------------------


def encrypt(encrypt_key: str, plaintext: str, *, iv: bytes | None = None) -> str:
    """Feishu's ``encrypt`` value: base64(iv + AES-256-CBC(PKCS#7(plaintext))).

    The key is SHA-256 of the Encrypt Key; the IV is random unless given (for test vectors).
    """
    iv = secrets.token_bytes(16) if iv is None else iv
    if len(iv) != 16:
        raise ValueError("the IV must be 16 bytes")
    data = plaintext.encode()
    pad = 16 - len(data) % 16
    key = hashlib.sha256(encrypt_key.encode()).digest()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    cipher = encryptor.update(data + bytes([pad]) * pad) + encryptor.finalize()
    return base64.b64encode(iv + cipher).decode()


def decrypt(encrypt_key: str, value: str) -> str:
    """The plaintext of an ``encrypt`` value; ``ValueError`` if it is not well formed.

    Validates like the SDK: at least 32 bytes (IV + one block), whole blocks, padding 1-16.
    """
    raw = base64.b64decode(value, validate=True)
    if len(raw) < 32 or len(raw) % 16:
        raise ValueError("encrypted data must be an IV plus whole 16-byte blocks")
    key = hashlib.sha256(encrypt_key.encode()).digest()
    decryptor = Cipher(algorithms.AES(key), modes.CBC(raw[:16])).decryptor()
    padded = decryptor.update(raw[16:]) + decryptor.finalize()
    pad = padded[-1]
    if not 1 <= pad <= 16 or padded[-pad:] != bytes([pad]) * pad:
        raise ValueError("bad PKCS#7 padding (wrong Encrypt Key?)")
    return padded[:-pad].decode()


_encrypt = encrypt  # for methods whose ``encrypt`` parameter hides the function


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    """``X-Lark-Signature``: hex SHA-256 of timestamp + nonce + Encrypt Key + the exact body."""
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


def signed_headers(
    body: bytes,
    *,
    timestamp: str | None = None,
    nonce: str = "n1",
    encrypt_key: str = DEFAULT_ENCRYPT_KEY,
) -> dict[str, str]:
    """The headers Feishu sends a push with, signing ``body`` at ``timestamp`` (now)."""
    stamp = timestamp if timestamp is not None else str(int(time.time()))
    return {
        "Content-Type": "application/json",
        "X-Lark-Request-Timestamp": stamp,
        "X-Lark-Request-Nonce": nonce,
        "X-Lark-Signature": signature(stamp, nonce, encrypt_key, body),
    }


def _now_ms() -> str:
    return str(time.time_ns() // 1_000_000)


def _derived(prefix: str, seed: str, length: int) -> str:
    """A stable fake id for a seed, so one user keeps one union_id across events."""
    return prefix + hashlib.sha256(seed.encode()).hexdigest()[:length]


# --- records -----------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class FeishuRequest(HttpRecord):
    """One Open API request as the fake received it, accepted or refused.

    ``code`` is the business code answered (0 for success, None when there was no JSON
    answer); ``response`` the JSON document answered.
    """

    code: int | None = None
    response: Any = None


@dataclass(slots=True, kw_only=True)
class SentMessage:
    """One message the bridge created, by send or reply, with the full object answered."""

    kind: Literal["send", "reply"]
    message: dict[str, Any]
    chat_id: str
    msg_type: str
    content: str
    receive_id: str | None
    receive_id_type: str | None
    reply_to: str | None
    reply_in_thread: bool
    uuid: str | None
    request: FeishuRequest
    card_text: Callable[[], str | None] | None = None
    """The current text of the card a card message shows (set by the fake)."""

    @property
    def message_id(self) -> str:
        return str(self.message["message_id"])

    @property
    def thread_id(self) -> str | None:
        value = self.message.get("thread_id")
        return str(value) if value else None

    @property
    def data(self) -> Any:
        """The decoded ``content``."""
        return json.loads(self.content)

    @property
    def text(self) -> str | None:
        """The text of a ``text`` message, the text of a post's ``md``/``text`` tags (joined),
        the current text of a streaming card's element; else None."""
        if self.msg_type == "text":
            return str(self.data["text"])
        if self.msg_type == "post":
            return post_text(self.data)
        if self.msg_type == "interactive" and self.card_text is not None:
            return self.card_text()
        return None

    @property
    def mentions(self) -> list[tuple[str, str]]:
        """``(open_id, name)`` of each ``<at user_id="…">`` in a text message, in order, as
        Feishu lists them in the created message's ``mentions`` (``@all`` is not listed)."""
        return [(str(m["id"]), str(m["name"])) for m in self.message.get("mentions", [])]


@dataclass(frozen=True, slots=True, kw_only=True)
class PushResult:
    """What the bridge answered to one pushed event; ``status`` 0 when it never answered.

    ``document`` is the plaintext event, ``request_body`` the exact bytes posted (encrypted
    or not). ``attempt`` is 0 for the first delivery, then 1, 2... for redeliveries.
    ``error`` says why there was no answer (``timeout``, ``connection_failed``).
    """

    url: str
    status: int
    body: str
    headers: CIMultiDict[str]
    elapsed: float
    event_id: str | None
    document: dict[str, Any]
    request_body: bytes
    request_headers: dict[str, str]
    attempt: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Feishu counts only HTTP 200 as delivered."""
        return self.status == 200

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class FeishuChat:
    """A chat the fake knows; ``bot_member`` False after the bot was removed."""

    chat_id: str
    name: str = ""
    chat_mode: ChatMode = "group"
    chat_type: Literal["private", "public"] = "private"
    description: str = ""
    owner_open_id: str = DEFAULT_USER_OPEN_ID
    bot_member: bool = True
    external: bool = False
    peer_open_id: str | None = None  # the human of a p2p chat


@dataclass(slots=True, kw_only=True)
class FeishuCard:
    """A CardKit card entity: its JSON, streaming state, last sequence, the message that
    sent it (once), and every text its first text element showed, in order."""

    card_id: str
    document: dict[str, Any]
    elements: dict[str, dict[str, Any]]
    streaming: bool
    created_at: float
    enabled_at: float
    last_sequence: int = 0
    message_id: str | None = None
    history: list[str] = field(default_factory=list)
    settings_log: list[bool] = field(default_factory=list)
    """Each ``streaming_mode`` set through the settings endpoint, in order."""
    operations: deque[float] = field(default_factory=deque)
    throttled: int = 0

    def text(self) -> str:
        """What the card's first text element shows now."""
        for element in self.elements.values():
            if element.get("tag") in ("markdown", "plain_text"):
                return str(element.get("content", ""))
        return ""


@dataclass(slots=True)
class FeishuResource:
    """A file a user sent in a message: ``kind`` is the ``type`` the download must ask for
    (``image`` for images, also in posts; ``file`` for files, audio and video)."""

    data: bytes
    content_type: str
    kind: Literal["image", "file"]


@dataclass(slots=True, kw_only=True)
class FeishuUpload:
    """An image or file the bridge uploaded: ``kind`` ``image`` (``file_type`` None) or
    ``file`` (``image_type`` None), the key it got, and what was sent."""

    kind: Literal["image", "file"]
    key: str
    data: bytes
    image_type: str | None = None
    file_type: str | None = None
    file_name: str | None = None
    request: FeishuRequest


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float  # time.monotonic()


class _FeishuError(Exception):
    """A refusal in Feishu's shape: HTTP ``status`` with ``{"code", "msg"}``."""

    def __init__(
        self, code: int, msg: str, *, status: int = 400, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = dict(headers or {})


def _invalid_param(detail: str) -> _FeishuError:
    return _FeishuError(
        CODE_INVALID_PARAM,
        f"Your request contains an invalid request parameter, ext={detail}.",
    )


def _field_validation(detail: str) -> _FeishuError:
    return _FeishuError(CODE_FIELD_VALIDATION, f"field validation failed: {detail}")


_Handler = Callable[[web.Request, FeishuRequest, tuple[str, ...]], Awaitable[web.StreamResponse]]


# --- the fake ----------------------------------------------------------------------------


class FakeFeishu(FakePlatform[SentMessage]):
    """Feishu's Open API and event delivery on 127.0.0.1 and a free port; see the module doc.

    ``encrypt_key`` None is plain mode: events go out as plain JSON without signature headers.
    The fixtures' two chats (group ``Team Standup`` and a p2p chat) and their human user are
    known from the start; more with :meth:`add_chat` and :meth:`add_user`, or by pushing
    events from them.

    Sends and replies fail as scripted with the verbs of
    :class:`~tests.fakes.base.FakePlatform` (``rate_limit_next``, ``fail_next``,
    ``drop_next``) or their older names here.
    """

    _FAULT_METHOD = "send"
    _FAULT_KINDS = frozenset({"rate_limit", "fail", "drop", "delay"})

    def __init__(
        self,
        *,
        app_id: str = DEFAULT_APP_ID,
        app_secret: str = DEFAULT_APP_SECRET,
        verification_token: str = DEFAULT_VERIFICATION_TOKEN,
        encrypt_key: str | None = None,
        tenant_key: str = DEFAULT_TENANT_KEY,
        bot_open_id: str = DEFAULT_BOT_OPEN_ID,
        bot_name: str = DEFAULT_BOT_NAME,
        token_lifetime_seconds: float = 7200.0,
    ) -> None:
        super().__init__()
        self.app_id = app_id
        self.app_secret = app_secret
        self.verification_token = verification_token
        self.encrypt_key = encrypt_key
        self.tenant_key = tenant_key
        self.bot_open_id = bot_open_id
        self.bot_name = bot_name
        # Read at each issue, so a test may shorten it after start.
        self.token_lifetime_seconds = token_lifetime_seconds
        self.send_delay_seconds = 0.0
        self._last_event_ms = 0

        self.requests: list[FeishuRequest] = []
        self.sent: list[SentMessage] = []
        self.uuid_hits: list[dict[str, Any]] = []
        self.pushes: list[PushResult] = []
        self.tokens_issued = 0
        self.token_requests = 0

        self._tokens: dict[str, _Token] = {}
        self._latest_token: str | None = None
        self._chats: dict[str, FeishuChat] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._reachable: set[str] = {bot_open_id}
        self._p2p_by_user: dict[str, str] = {}
        self._messages: dict[str, dict[str, Any]] = {}
        self._uuids: dict[str, tuple[float, str]] = {}
        self.cards: dict[str, FeishuCard] = {}
        self.deleted: list[str] = []
        self._reactions: dict[str, list[dict[str, Any]]] = {}
        self.reaction_log: list[tuple[str, str, str]] = []
        """``(added|deleted, message_id, emoji_type)`` in order."""
        self._resources: dict[tuple[str, str], FeishuResource] = {}
        self.uploads: list[FeishuUpload] = []
        """Every image and file uploaded, in order (a repeated upload is another one)."""
        self._upload_keys: dict[str, FeishuUpload] = {}
        self._routes: list[tuple[str, re.Pattern[str], _Handler, bool]] = [
            ("POST", re.compile(r"/auth/v3/tenant_access_token/internal"), self._token, False),
            ("GET", re.compile(r"/bot/v3/info"), self._bot_info, True),
            ("GET", re.compile(r"/im/v1/chats/([^/]+)"), self._get_chat, True),
            ("GET", re.compile(r"/contact/v3/users/([^/]+)"), self._get_user, True),
            ("POST", re.compile(r"/im/v1/messages"), self._send, True),
            ("POST", re.compile(r"/im/v1/images"), self._upload_image, True),
            ("POST", re.compile(r"/im/v1/files"), self._upload_file, True),
            ("POST", re.compile(r"/im/v1/messages/([^/]+)/reply"), self._reply, True),
            ("GET", re.compile(r"/im/v1/messages/([^/]+)"), self._get_message, True),
            ("DELETE", re.compile(r"/im/v1/messages/([^/]+)"), self._delete_message, True),
            ("POST", re.compile(r"/im/v1/messages/([^/]+)/reactions"), self._add_reaction, True),
            ("GET", re.compile(r"/im/v1/messages/([^/]+)/reactions"), self._list_reactions, True),
            (
                "DELETE",
                re.compile(r"/im/v1/messages/([^/]+)/reactions/([^/]+)"),
                self._delete_reaction,
                True,
            ),
            ("POST", re.compile(r"/cardkit/v1/cards"), self._create_card, True),
            (
                "PUT",
                re.compile(r"/cardkit/v1/cards/([^/]+)/elements/([^/]+)/content"),
                self._card_content,
                True,
            ),
            ("PATCH", re.compile(r"/cardkit/v1/cards/([^/]+)/settings"), self._card_settings, True),
            (
                "GET",
                re.compile(r"/im/v1/messages/([^/]+)/resources/([^/]+)"),
                self._get_resource,
                True,
            ),
        ]

        self.add_user(
            DEFAULT_USER_OPEN_ID,
            DEFAULT_USER_NAME,
            union_id=DEFAULT_USER_UNION_ID,
            user_id=DEFAULT_USER_USER_ID,
        )
        self.add_chat(DEFAULT_GROUP_CHAT_ID, DEFAULT_GROUP_CHAT_NAME)
        self.add_chat(DEFAULT_P2P_CHAT_ID, chat_mode="p2p", peer_open_id=DEFAULT_USER_OPEN_ID)

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: the bridge appends ``/open-apis/...``."""
        return self._local_url()

    async def start(self) -> None:
        """As the base serves, with room for a 30 MB upload (and a few over, to refuse)."""
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        self._add_routes(app)
        self._runner, self._port = await serve_on_loopback(app)

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    # --- the tenant ----------------------------------------------------------------------

    def add_chat(
        self,
        chat_id: str = DEFAULT_GROUP_CHAT_ID,
        name: str = DEFAULT_GROUP_CHAT_NAME,
        *,
        chat_mode: ChatMode = "group",
        chat_type: Literal["private", "public"] = "private",
        description: str = "",
        owner_open_id: str = DEFAULT_USER_OPEN_ID,
        bot_member: bool = True,
        peer_open_id: str | None = None,
    ) -> FeishuChat:
        """Make a chat exist (with the bot in it unless ``bot_member`` is False).

        A ``topic`` chat starts a new thread for every message sent to it; a ``p2p`` chat is
        the bot's DM with ``peer_open_id``, reachable with ``receive_id_type=open_id`` too.
        """
        chat = FeishuChat(
            chat_id,
            name,
            chat_mode,
            chat_type,
            description,
            owner_open_id,
            bot_member,
            peer_open_id=peer_open_id,
        )
        self._chats[chat_id] = chat
        if peer_open_id is not None:
            self._p2p_by_user[peer_open_id] = chat_id
            self._reachable.add(peer_open_id)
        return chat

    def chat(self, chat_id: str) -> FeishuChat:
        """A known chat; ``KeyError`` otherwise."""
        return self._chats[chat_id]

    def add_user(
        self,
        open_id: str = DEFAULT_USER_OPEN_ID,
        name: str = DEFAULT_USER_NAME,
        *,
        en_name: str | None = None,
        union_id: str | None = None,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        """Make a user visible to the contact API (and reachable by ``open_id`` sends)."""
        user = {
            "union_id": union_id or _derived("on_", open_id, 32),
            "user_id": user_id or _derived("", open_id, 8),
            "open_id": open_id,
            "name": name,
            "en_name": en_name if en_name is not None else name,
            "nickname": "",
            "avatar": {
                "avatar_72": f"https://example.invalid/avatar/{open_id}~72x72.png",
                "avatar_240": f"https://example.invalid/avatar/{open_id}~240x240.png",
                "avatar_640": f"https://example.invalid/avatar/{open_id}~640x640.png",
                "avatar_origin": f"https://example.invalid/avatar/{open_id}~noop.png",
            },
            "status": {
                "is_frozen": False,
                "is_resigned": False,
                "is_activated": True,
                "is_exited": False,
                "is_unjoin": False,
            },
        }
        self._users[open_id] = user
        self._reachable.add(open_id)
        return user

    def message(self, message_id: str) -> dict[str, Any]:
        """A stored message (pushed or created) as the Open API shows it; ``KeyError``."""
        return copy.deepcopy(self._messages[message_id])

    def remember(self, event: Mapping[str, Any]) -> None:
        """Make what an event says happened true here: its message, chat, sender, membership.

        :meth:`push` calls it; call it directly to set the fake up without pushing.
        """
        header = event.get("header")
        body = event.get("event")
        if not isinstance(header, Mapping) or not isinstance(body, Mapping):
            return
        event_type = header.get("event_type")
        chat_id = body.get("chat_id")
        if event_type == "im.chat.member.bot.added_v1" and isinstance(chat_id, str):
            known = self._chats.get(chat_id)
            if known is None:
                self.add_chat(chat_id, str(body.get("name") or ""))
            else:
                known.bot_member = True
                known.name = str(body.get("name") or known.name)
        elif event_type == "im.chat.member.bot.deleted_v1" and isinstance(chat_id, str):
            if chat_id in self._chats:
                self._chats[chat_id].bot_member = False
        elif event_type == "im.message.receive_v1":
            self._remember_message(body)

    def _remember_message(self, body: Mapping[str, Any]) -> None:
        message = body.get("message")
        sender = body.get("sender")
        if not isinstance(message, Mapping) or not isinstance(sender, Mapping):
            return
        chat_id = str(message.get("chat_id", ""))
        sender_ids = sender.get("sender_id") or {}
        open_id = str(sender_ids.get("open_id", "")) if isinstance(sender_ids, Mapping) else ""
        if open_id and sender.get("sender_type") == "user":
            self._reachable.add(open_id)
        if chat_id not in self._chats:
            if message.get("chat_type") == "p2p":
                self.add_chat(chat_id, chat_mode="p2p", peer_open_id=open_id or None)
            else:
                self.add_chat(chat_id, "")
        message_id = str(message.get("message_id", ""))
        stored: dict[str, Any] = {"message_id": message_id}
        for key in ("root_id", "parent_id", "thread_id"):
            if message.get(key):
                stored[key] = message[key]
        stored.update(
            {
                "msg_type": message.get("message_type", "text"),
                "create_time": message.get("create_time", _now_ms()),
                "update_time": message.get("update_time", _now_ms()),
                "deleted": False,
                "updated": False,
                "chat_id": chat_id,
                "sender": {
                    "id": open_id,
                    "id_type": "open_id",
                    "sender_type": sender.get("sender_type", "user"),
                    "tenant_key": sender.get("tenant_key", self.tenant_key),
                },
                "body": {"content": message.get("content", "")},
            }
        )
        mentions = message.get("mentions") or []
        if mentions:
            stored["mentions"] = [
                {
                    "key": item.get("key"),
                    "id": (item.get("id") or {}).get("open_id"),
                    "id_type": "open_id",
                    "name": item.get("name"),
                    "tenant_key": item.get("tenant_key", self.tenant_key),
                }
                for item in mentions
                if isinstance(item, Mapping)
            ]
        self._messages[message_id] = stored

    # --- tokens --------------------------------------------------------------------------

    def issue_token(self) -> str:
        """A fresh tenant access token valid for :attr:`token_lifetime_seconds` from now."""
        value = "t-" + secrets.token_hex(20)
        expires_at = time.monotonic() + self.token_lifetime_seconds
        self._tokens[value] = _Token(value, expires_at)
        self._latest_token = value
        self.tokens_issued += 1
        return value

    def token_valid(self, token: str) -> bool:
        known = self._tokens.get(token)
        return known is not None and time.monotonic() < known.expires_at

    def expire_all_tokens(self) -> None:
        """Every token issued so far is invalid at once (calls get 99991663)."""
        now = time.monotonic()
        for token in self._tokens.values():
            token.expires_at = min(token.expires_at, now)

    # --- faults --------------------------------------------------------------------------

    def rate_limit_next(
        self,
        count: int = 1,
        *,
        reset_seconds: float | None = None,
        http_status: int | None = None,
        **fault: Any,
    ) -> None:
        """The next ``count`` sends/replies are throttled and create nothing.

        HTTP 400 ``{"code": 99991400, "msg": "request trigger frequency limit"}`` with
        ``x-ogw-ratelimit-limit`` / ``x-ogw-ratelimit-reset`` (seconds), as Feishu's gateway
        answers; ``code`` 230020 / 11232 for the per-chat / tenant limits. ``http_status=429``
        is the gateway-level throttle, with ``Retry-After`` as well. ``reset_seconds`` and
        ``http_status`` are Feishu's names for ``retry_after`` and ``status``.
        """
        if reset_seconds is not None:
            fault["retry_after"] = reset_seconds
        if http_status is not None:
            fault["status"] = http_status
        super().rate_limit_next(count, **fault)

    def fail_next_sends(
        self,
        count: int = 1,
        status: int = 500,
        *,
        body: bytes = b"<html><body><h1>500 Internal Server Error</h1></body></html>",
        content_type: str = "text/html",
    ) -> None:
        """The next ``count`` sends/replies answer ``status`` (an HTML page) and create nothing."""
        self.fail_next(count, status, body=body, content_type=content_type)

    def drop_next_sends(self, count: int = 1) -> None:
        """The next ``count`` sends/replies take effect but the connection is cut before the
        answer: the bridge cannot tell whether its message landed (the case ``uuid`` is for).
        """
        self.drop_next(count)

    # --- waiting for sends ---------------------------------------------------------------

    # The timeout parameters are the API the tests were promised: one call, one bound.
    async def next_sent(self, timeout: float = 5.0) -> SentMessage:  # noqa: ASYNC109
        """:meth:`next_post`: the next message the bridge created."""
        return await self.next_post(timeout)

    async def expect_nothing_sent(self, within: float) -> None:
        """:meth:`expect_no_post`: fail if the bridge creates a message within ``within``."""
        await self.expect_no_post(within)

    def _describe_post(self, post: SentMessage) -> str:
        return f"unexpected Feishu message: {post.kind} {post.content}"

    def requests_to(self, method: str, path_prefix: str) -> list[FeishuRequest]:
        """Recorded requests whose path starts with ``path_prefix`` (e.g. ``/open-apis/im``)."""
        return [
            record
            for record in self.requests
            if record.method == method and record.path.startswith(path_prefix)
        ]

    def message_creates(self) -> list[FeishuRequest]:
        """The requests that create a message (sends and replies), without reactions."""
        return [
            record
            for record in self.requests_to("POST", "/open-apis/im/v1/messages")
            if record.path == "/open-apis/im/v1/messages" or record.path.endswith("/reply")
        ]

    # --- the Open API --------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = await FeishuRequest.read(request)
        self.requests.append(record)
        try:
            response = await self._route(request, record)
        except _Canned as canned:
            fault = canned.fault
            response = web.Response(
                status=canned.status, body=fault.body, content_type=fault.content_type
            )
        except _FeishuError as refused:
            document = {"code": refused.code, "msg": refused.msg}
            record.code, record.error, record.response = refused.code, refused.msg, document
            response = _json_response(document, refused.status, refused.headers)
        if record.status == 0 and record.error != "dropped":
            record.status = response.status
        return response

    async def _route(self, request: web.Request, record: FeishuRequest) -> web.StreamResponse:
        prefix = "/open-apis"
        if request.path.startswith(prefix + "/"):
            tail = request.path[len(prefix) :].rstrip("/")
            for method, pattern, handler, needs_token in self._routes:
                match = pattern.fullmatch(tail)
                if match is None or method != request.method:
                    continue
                if needs_token:
                    self._check_token(request)
                result: web.StreamResponse = await handler(request, record, match.groups())
                return result
        document = {"code": 404, "msg": "not found"}
        record.code, record.error, record.response = 404, "not found", document
        return _json_response(document, 404)

    def _check_token(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        if not header:
            raise _FeishuError(CODE_MISSING_TOKEN, "Missing access token for authorization.")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not self.token_valid(token.strip()):
            raise _FeishuError(CODE_TOKEN_INVALID, "Invalid access token for authorization.")

    def _ok(self, record: FeishuRequest, document: dict[str, Any]) -> web.Response:
        record.code, record.response = 0, document
        return _json_response(document, 200)

    def _json_body(self, record: FeishuRequest) -> dict[str, Any]:
        if not isinstance(record.json, dict):
            raise _FeishuError(9499, "Bad Request: the body is not a JSON object.")
        return record.json

    async def _token(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.Response:
        self.token_requests += 1
        body = self._json_body(record)
        app_id, app_secret = body.get("app_id"), body.get("app_secret")
        if not isinstance(app_id, str) or app_id != self.app_id:
            raise _FeishuError(CODE_APP_ID_INVALID, "invalid param: app_id")
        if not isinstance(app_secret, str) or not hmac.compare_digest(
            app_secret.encode(), self.app_secret.encode()
        ):
            raise _FeishuError(CODE_APP_SECRET_INVALID, "app secret invalid")
        latest = self._tokens.get(self._latest_token or "")
        remaining = latest.expires_at - time.monotonic() if latest is not None else 0.0
        if latest is None or remaining < TOKEN_REFRESH_WINDOW_SECONDS:
            value = self.issue_token()
            remaining = self.token_lifetime_seconds
        else:
            value = latest.value
        document = {
            "code": 0,
            "msg": "ok",
            "tenant_access_token": value,
            "expire": max(0, math.ceil(remaining)),
        }
        return self._ok(record, document)

    async def _bot_info(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.Response:
        bot = {
            "activate_status": 2,
            "app_name": self.bot_name,
            "avatar_url": "",
            "ip_white_list": [],
            "open_id": self.bot_open_id,
        }
        return self._ok(record, {"code": 0, "msg": "ok", "bot": bot})

    async def _get_chat(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.Response:
        (chat_id,) = groups
        chat = self._chats.get(chat_id)
        if chat is None:
            raise _FeishuError(
                CODE_CHAT_NOT_FOUND, "Your request specifies a chat_id which is invalid."
            )
        if not chat.bot_member:
            raise _FeishuError(CODE_CHAT_OPERATOR_OUT, "Operator can NOT be out of the chat.")
        id_type = request.query.get("user_id_type", "open_id")
        if id_type not in _USER_ID_TYPES:
            raise _field_validation("user_id_type")
        owner = self._users.get(chat.owner_open_id, {"open_id": chat.owner_open_id})
        data = {
            "avatar": "https://example.invalid/chat-avatar.png",
            "name": chat.name,
            "description": chat.description,
            "i18n_names": {"zh_cn": chat.name, "en_us": chat.name, "ja_jp": ""},
            "add_member_permission": "all_members",
            "share_card_permission": "allowed",
            "at_all_permission": "all_members",
            "edit_permission": "all_members",
            "owner_id_type": id_type,
            "owner_id": owner.get(id_type, chat.owner_open_id),
            "user_manager_id_list": [],
            "bot_manager_id_list": [],
            "chat_mode": chat.chat_mode,
            "chat_type": chat.chat_type,
            "chat_tag": "inner",
            "group_message_type": "thread" if chat.chat_mode == "topic" else "chat",
            "join_message_visibility": "all_members",
            "leave_message_visibility": "all_members",
            "membership_approval": "no_approval_required",
            "moderation_permission": "all_members",
            "external": chat.external,
            "tenant_key": self.tenant_key,
            "user_count": "1" if chat.chat_mode == "p2p" else "2",
            "bot_count": "1",
        }
        return self._ok(record, {"code": 0, "msg": "success", "data": data})

    async def _get_user(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.Response:
        (user_id,) = groups
        id_type = request.query.get("user_id_type", "open_id")
        if id_type not in _USER_ID_TYPES:
            raise _field_validation("user_id_type")
        for user in self._users.values():
            if user[id_type] == user_id:
                document = {"code": 0, "msg": "success", "data": {"user": copy.deepcopy(user)}}
                return self._ok(record, document)
        raise _FeishuError(CODE_USER_NO_AUTHORITY, "no user authority error")

    async def _get_message(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.Response:
        (message_id,) = groups
        await self._scripted(record, "message.get")
        stored = self._messages.get(message_id)
        if stored is None:
            raise _FeishuError(CODE_MESSAGE_NOT_FOUND, "The message is not found.")
        document = {"code": 0, "msg": "success", "data": {"items": [copy.deepcopy(stored)]}}
        return self._ok(record, document)

    async def _delete_message(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.Response:
        """Recall one of the app's own messages."""
        (message_id,) = groups
        fault = await self._scripted(record, "message.delete")
        stored = self._messages.get(message_id)
        if stored is None or stored.get("deleted"):
            raise _FeishuError(CODE_MESSAGE_NOT_FOUND, "The message is not found.")
        if stored["sender"].get("id") != self.app_id:
            raise _FeishuError(CODE_MESSAGE_NO_PERMISSION, "No permission to recall.")
        stored["deleted"] = True
        self.deleted.append(message_id)
        return self._answer(request, record, fault, {})

    # --- message resources ----------------------------------------------------------------

    def add_resource(
        self,
        message_id: str,
        file_key: str,
        data: bytes,
        content_type: str,
        *,
        kind: Literal["image", "file"] = "image",
    ) -> None:
        """The message ``message_id`` carries ``file_key`` (its bytes, as ``content_type``)."""
        self._resources[(message_id, file_key)] = FeishuResource(data, content_type, kind)

    def resource_downloads(self) -> list[FeishuRequest]:
        """The requests to ``GET .../messages/{id}/resources/{key}``, in order."""
        return [
            record
            for record in self.requests_to("GET", "/open-apis/im/v1/messages/")
            if "/resources/" in record.path
        ]

    async def _get_resource(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.StreamResponse:
        """Only the pair a message really carries, asked with its own ``type``; a card or
        merged-forward message has no downloadable resources (234043)."""
        message_id, file_key = groups
        await self._scripted(record, "resource.get")
        kind = request.query.get("type")
        if kind not in ("image", "file"):
            raise _FeishuError(CODE_RESOURCE_PARAM, "invalid param: type must be image or file")
        stored = self._messages.get(message_id)
        if stored is not None and stored.get("msg_type") in ("interactive", "merge_forward"):
            raise _FeishuError(CODE_RESOURCE_UNSUPPORTED_MESSAGE, "unsupported message type")
        resource = self._resources.get((message_id, file_key))
        if resource is None:
            raise _FeishuError(CODE_RESOURCE_NOT_IN_MESSAGE, "the file is not in the message")
        if resource.kind != kind:
            raise _FeishuError(CODE_RESOURCE_PARAM, f"invalid param: type {kind} for {file_key}")
        if len(resource.data) > MAX_RESOURCE_BYTES:
            raise _FeishuError(CODE_RESOURCE_TOO_LARGE, "the file is larger than 100 MB")
        record.code = 0
        return web.Response(status=200, body=resource.data, content_type=resource.content_type)

    # --- uploads -------------------------------------------------------------------------

    def uploads_of(self, kind: Literal["image", "file"]) -> list[FeishuUpload]:
        return [upload for upload in self.uploads if upload.kind == kind]

    def upload(self, key: str) -> FeishuUpload:
        return self._upload_keys[key]

    def _check_upload_keys(self, msg_type: str, decoded: dict[str, Any]) -> None:
        """A message shows only keys this app uploaded, each by its own message type."""
        image_key = decoded.get("image_key")
        if msg_type in ("image", "media") and image_key is not None:
            image = self._upload_keys.get(str(image_key))
            if image is None or image.kind != "image":
                raise _invalid_param(f"image_key {image_key} is not this app's image")
            if msg_type == "image" and image.image_type != "message":
                raise _invalid_param(f"image_key {image_key} is not a message image")
        if msg_type != "image":
            file_key = str(decoded.get("file_key"))
            file = self._upload_keys.get(file_key)
            if file is None or file.kind != "file":
                raise _invalid_param(f"file_key {file_key} is not this app's file")
            if _UPLOAD_MSG_TYPES.get(file.file_type or "", "file") != msg_type:
                raise _FeishuError(
                    CODE_MSG_TYPE_MISMATCH, f"a {file.file_type} upload cannot be a {msg_type}"
                )

    async def _upload_image(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.StreamResponse:
        """``image_type`` message|avatar and a non-empty ``image`` of at most 10 MB in a
        known format: a new ``image_key`` every time."""
        fields = _multipart(record)
        fault = await self._scripted(record, "upload")
        image_type = fields.get("image_type", (None, b""))[1].decode(errors="replace")
        if image_type not in IMAGE_TYPES:
            raise _FeishuError(CODE_UPLOAD_PARAM, "invalid param: image_type")
        if "image" not in fields or fields["image"][0] is None:
            raise _FeishuError(CODE_UPLOAD_PARAM, "invalid param: image is required")
        data = fields["image"][1]
        if not data:
            raise _FeishuError(CODE_UPLOAD_EMPTY, "the image is empty")
        if len(data) > MAX_IMAGE_UPLOAD_BYTES:
            raise _FeishuError(CODE_UPLOAD_TOO_LARGE, "image size exceeded the limit (10M)")
        if not data.startswith(_IMAGE_MAGIC):
            raise _FeishuError(CODE_IMAGE_FORMAT, "the image format is not supported")
        upload = FeishuUpload(
            kind="image",
            key="img_v3_" + secrets.token_hex(12),
            data=data,
            image_type=image_type,
            request=record,
        )
        return self._stored(request, record, fault, upload, {"image_key": upload.key})

    async def _upload_file(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.StreamResponse:
        """``file_type`` from Feishu's list, a ``file_name`` and a non-empty ``file`` of at
        most 30 MB: a new ``file_key`` every time."""
        fields = _multipart(record)
        fault = await self._scripted(record, "upload")
        file_type = fields.get("file_type", (None, b""))[1].decode(errors="replace")
        if file_type not in FILE_TYPES:
            raise _FeishuError(CODE_UPLOAD_PARAM, "invalid param: file_type")
        file_name = fields.get("file_name", (None, b""))[1].decode(errors="replace")
        if not file_name:
            raise _FeishuError(CODE_UPLOAD_PARAM, "invalid param: file_name is required")
        if "file" not in fields or fields["file"][0] is None:
            raise _FeishuError(CODE_UPLOAD_PARAM, "invalid param: file is required")
        data = fields["file"][1]
        if not data:
            raise _FeishuError(CODE_UPLOAD_EMPTY, "the file is empty")
        if len(data) > MAX_FILE_UPLOAD_BYTES:
            raise _FeishuError(CODE_UPLOAD_TOO_LARGE, "file size exceeded the limit (30M)")
        upload = FeishuUpload(
            kind="file",
            key="file_v3_" + secrets.token_hex(12),
            data=data,
            file_type=file_type,
            file_name=file_name,
            request=record,
        )
        return self._stored(request, record, fault, upload, {"file_key": upload.key})

    def _stored(
        self,
        request: web.Request,
        record: FeishuRequest,
        fault: Fault | None,
        upload: FeishuUpload,
        data: dict[str, str],
    ) -> web.Response:
        self.uploads.append(upload)
        self._upload_keys[upload.key] = upload
        return self._answer(request, record, fault, data)

    # --- reactions -----------------------------------------------------------------------

    def reactions_on(self, message_id: str) -> list[str]:
        """The emoji_type of each reaction a message has now, in the order they were added."""
        return [r["reaction_type"]["emoji_type"] for r in self._reactions.get(message_id, [])]

    def add_user_reaction(self, message_id: str, emoji_type: str, open_id: str) -> None:
        """A user reacts (the bot may not delete it)."""
        operator = {"operator_id": open_id, "operator_type": "user"}
        self._reactions.setdefault(message_id, []).append(self._reaction(emoji_type, operator))

    def _reaction(self, emoji_type: str, operator: dict[str, str]) -> dict[str, Any]:
        return {
            "reaction_id": "ZCaCIjUBVVWSrm5L-" + secrets.token_hex(12),
            "operator": operator,
            "action_time": _now_ms(),
            "reaction_type": {"emoji_type": emoji_type},
        }

    def _reactable(self, message_id: str) -> dict[str, Any]:
        stored = self._messages.get(message_id)
        if stored is None or stored.get("deleted"):
            raise _FeishuError(CODE_REACTION_MESSAGE_NOT_FOUND, "message not found")
        return stored

    async def _add_reaction(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.Response:
        (message_id,) = groups
        body = self._json_body(record)
        kind = body.get("reaction_type")
        if not isinstance(kind, dict):
            raise _FeishuError(
                CODE_INVALID_PARAM_TYPE, "Invalid parameter type in json: reaction_type"
            )
        emoji_type = kind.get("emoji_type")
        if not isinstance(emoji_type, str) or emoji_type not in EMOJI_TYPES:
            raise _FeishuError(CODE_REACTION_TYPE_INVALID, "reaction type is invalid")
        fault = await self._scripted(record, "reaction.create")
        self._reactable(message_id)
        operator = {"operator_id": self.app_id, "operator_type": "app"}
        found = self._reactions.setdefault(message_id, [])
        # The same emoji again by the same app: the existing reaction (UNCONFIRMED at Feishu).
        for existing in found:
            if existing["operator"] == operator and existing["reaction_type"] == kind:
                return self._answer(request, record, fault, copy.deepcopy(existing))
        reaction = self._reaction(emoji_type, operator)
        found.append(reaction)
        self.reaction_log.append(("added", message_id, emoji_type))
        return self._answer(request, record, fault, copy.deepcopy(reaction))

    async def _list_reactions(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.Response:
        (message_id,) = groups
        wanted = request.query.get("reaction_type")
        if wanted is not None and wanted not in EMOJI_TYPES:
            raise _FeishuError(CODE_REACTION_TYPE_INVALID, "reaction type is invalid")
        try:
            size = int(request.query.get("page_size", "20"))
            start = int(request.query.get("page_token") or "0")
        except ValueError:
            raise _field_validation("page_size/page_token") from None
        if not 1 <= size <= 50 or start < 0:
            raise _field_validation("page_size must be 1..50")
        fault = await self._scripted(record, "reaction.list")
        self._reactable(message_id)
        items = [
            r
            for r in self._reactions.get(message_id, [])
            if wanted is None or r["reaction_type"]["emoji_type"] == wanted
        ]
        page = items[start : start + size]
        more = start + size < len(items)
        data = {
            "items": copy.deepcopy(page),
            "has_more": more,
            "page_token": str(start + size) if more else "",
        }
        return self._answer(request, record, fault, data)

    async def _delete_reaction(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.Response:
        message_id, reaction_id = groups
        fault = await self._scripted(record, "reaction.delete")
        self._reactable(message_id)
        found = self._reactions.get(message_id, [])
        reaction = next((r for r in found if r["reaction_id"] == reaction_id), None)
        if reaction is None:  # the code is UNCONFIRMED (231003-family)
            raise _FeishuError(CODE_REACTION_MESSAGE_NOT_FOUND, "reaction not found")
        if reaction["operator"] != {"operator_id": self.app_id, "operator_type": "app"}:
            raise _FeishuError(CODE_REACTION_NO_PERMISSION, "no permission")
        found.remove(reaction)
        emoji_type = reaction["reaction_type"]["emoji_type"]
        self.reaction_log.append(("deleted", message_id, emoji_type))
        return self._answer(request, record, fault, copy.deepcopy(reaction))

    # --- CardKit -------------------------------------------------------------------------

    def card(self, card_id: str) -> FeishuCard:
        """A created card; ``KeyError`` otherwise."""
        return self.cards[card_id]

    def card_of(self, message_id: str) -> FeishuCard:
        """The card a card message shows; ``KeyError`` if it shows none."""
        return next(card for card in self.cards.values() if card.message_id == message_id)

    def _card(self, card_id: str) -> FeishuCard:
        card = self.cards.get(card_id)
        if card is None:
            raise _FeishuError(CODE_CARD_NOT_FOUND, "card entity not found")
        if time.monotonic() - card.created_at > CARD_LIFETIME_SECONDS:
            raise _FeishuError(CODE_CARD_EXPIRED, "card entity expired")
        return card

    def _card_operation(self, card: FeishuCard) -> None:
        """Count one operation on the card: more than 10 within a second is throttled."""
        now = time.monotonic()
        while card.operations and now - card.operations[0] >= 1.0:
            card.operations.popleft()
        if len(card.operations) >= CARD_OPS_PER_SECOND:
            reset = max(0.05, 1.0 - (now - card.operations[0]))
            card.throttled += 1
            headers = {"x-ogw-ratelimit-limit": "10", "x-ogw-ratelimit-reset": f"{reset:.3f}"}
            raise _FeishuError(
                CODE_RATE_LIMITED, "request trigger frequency limit", status=429, headers=headers
            )
        card.operations.append(now)

    def _sequence(self, card: FeishuCard, body: dict[str, Any]) -> int:
        sequence = body.get("sequence")
        if not isinstance(sequence, int) or isinstance(sequence, bool):
            raise _FeishuError(CODE_CARD_PARAM, "sequence must be an integer")
        if not 1 <= sequence <= 2**31 - 1:
            raise _FeishuError(CODE_CARD_PARAM, "sequence must be a positive int32")
        if sequence <= card.last_sequence:
            raise _FeishuError(CODE_SEQUENCE_NOT_INCREASING, "sequence number compare failed")
        return sequence

    def _still_streaming(self, card: FeishuCard) -> None:
        if card.streaming and time.monotonic() - card.enabled_at > CARD_STREAMING_SECONDS:
            card.streaming = False
            raise _FeishuError(CODE_STREAMING_TIMEOUT, "streaming mode timed out")
        if not card.streaming:
            raise _FeishuError(CODE_STREAMING_CLOSED, "card streaming is closed")

    async def _create_card(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.Response:
        body = self._json_body(record)
        if body.get("type") != "card_json":
            raise _FeishuError(CODE_CARD_PARAM, "type must be card_json")
        data = body.get("data")
        if not isinstance(data, str):
            raise _FeishuError(CODE_INVALID_PARAM_TYPE, "Invalid parameter type in json: data")
        if len(data.encode()) > MAX_CARD_BYTES:
            raise _FeishuError(CODE_CARD_TOO_BIG, "card content exceeds 30 KB")
        try:
            document = json.loads(data)
        except ValueError:
            raise _FeishuError(CODE_CARD_PARAM, "data is not JSON") from None
        elements = _check_card(document)
        fault = await self._scripted(record, "card.create")
        card_id = "7" + "".join(secrets.choice("0123456789") for _ in range(18))
        now = time.monotonic()
        card = FeishuCard(
            card_id=card_id,
            document=document,
            elements=elements,
            streaming=True,
            created_at=now,
            enabled_at=now,
        )
        card.history.append(card.text())
        self.cards[card_id] = card
        return self._answer(request, record, fault, {"card_id": card_id})

    async def _card_content(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.Response:
        card_id, element_id = groups
        body = self._json_body(record)
        content = body.get("content")
        if not isinstance(content, str) or not 1 <= len(content) <= MAX_CARD_CONTENT_CHARS:
            raise _FeishuError(CODE_CARD_PARAM, "content must be 1 to 100,000 characters")
        uuid = body.get("uuid")
        if uuid is not None and (not isinstance(uuid, str) or len(uuid) > 64):
            raise _FeishuError(CODE_CARD_PARAM, "uuid must be at most 64 characters")
        fault = await self._scripted(record, "card.content")
        card = self._card(card_id)
        self._card_operation(card)
        sequence = self._sequence(card, body)
        self._still_streaming(card)
        element = card.elements.get(element_id)
        if element is None:
            raise _FeishuError(CODE_UPDATE_ELEMENT_FAILED, "element not found")
        if element.get("tag") not in ("markdown", "plain_text"):
            raise _FeishuError(CODE_ELEMENT_NOT_TEXT, "element is not a text element")
        card.last_sequence = sequence
        element["content"] = content
        card.history.append(card.text())
        return self._answer(request, record, fault, {})

    async def _card_settings(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.Response:
        (card_id,) = groups
        body = self._json_body(record)
        raw = body.get("settings")
        if not isinstance(raw, str):
            raise _FeishuError(CODE_INVALID_PARAM_TYPE, "Invalid parameter type in json: settings")
        try:
            settings = json.loads(raw)
        except ValueError:
            raise _FeishuError(CODE_CARD_PARAM, "settings is not JSON") from None
        config = settings.get("config") if isinstance(settings, dict) else None
        if not isinstance(config, dict):
            raise _FeishuError(CODE_CARD_PARAM, "settings.config is required")
        streaming = config.get("streaming_mode")
        if streaming is not None and not isinstance(streaming, bool):
            raise _FeishuError(CODE_CARD_PARAM, "streaming_mode must be a boolean")
        if config.get("update_multi") is False:
            raise _FeishuError(CODE_UPDATE_MULTI_FALSE, "update_multi must be true")
        fault = await self._scripted(record, "card.settings")
        card = self._card(card_id)
        self._card_operation(card)
        card.last_sequence = self._sequence(card, body)
        if streaming is not None:
            if streaming and not card.streaming:
                card.enabled_at = time.monotonic()
            card.streaming = streaming
            card.settings_log.append(streaming)
        card_config = card.document.setdefault("config", {})
        card_config.update(config)
        return self._answer(request, record, fault, {})

    def _card_to_send(self, msg_type: str, content: str) -> FeishuCard | None:
        """The card entity a card message sends; each is sent only once."""
        if msg_type != "interactive":
            return None
        decoded = json.loads(content)
        if decoded.get("type") != "card":
            return None
        data = decoded.get("data")
        card_id = data.get("card_id") if isinstance(data, dict) else None
        if not isinstance(card_id, str):
            raise _invalid_param("card_id is required")
        card = self._card(card_id)
        if card.message_id is not None:
            raise _FeishuError(CODE_CARD_ALREADY_SENT, "ErrCode: 200380; card already sent")
        return card

    async def _send(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.StreamResponse:
        id_type = request.query.get("receive_id_type")
        if id_type not in _RECEIVE_ID_TYPES:
            raise _field_validation("receive_id_type")
        body = self._json_body(record)
        receive_id = body.get("receive_id")
        if not isinstance(receive_id, str) or not receive_id:
            raise _field_validation("receive_id is required")
        msg_type, content, uuid = self._check_message(body)
        fault = await self._before_create(record, msg_type)
        hit = self._uuid_hit(uuid, record)
        if hit is not None:
            return self._ok(record, {"code": 0, "msg": "success", "data": hit})
        chat = self._receiving_chat(id_type, receive_id)
        card = self._card_to_send(msg_type, content)
        thread_id = "omt_" + secrets.token_hex(8) if chat.chat_mode == "topic" else None
        message = self._create(chat.chat_id, msg_type, content, thread_id=thread_id)
        if card is not None:
            card.message_id = message["message_id"]
        checked = (msg_type, content, uuid)
        return self._after_create(
            request, record, fault, message, checked, receive_id=receive_id, receive_id_type=id_type
        )

    async def _reply(
        self, request: web.Request, record: FeishuRequest, groups: tuple[str, ...]
    ) -> web.StreamResponse:
        (parent_id,) = groups
        body = self._json_body(record)
        msg_type, content, uuid = self._check_message(body)
        in_thread = body.get("reply_in_thread", False)
        if not isinstance(in_thread, bool):
            raise _field_validation("reply_in_thread must be a boolean")
        fault = await self._before_create(record, msg_type)
        hit = self._uuid_hit(uuid, record)
        if hit is not None:
            return self._ok(record, {"code": 0, "msg": "success", "data": hit})
        parent = self._messages.get(parent_id)
        if parent is None or parent.get("deleted"):
            raise _FeishuError(CODE_MESSAGE_NOT_FOUND, "The message is not found.")
        chat = self._chats[parent["chat_id"]]
        if not chat.bot_member:
            raise _FeishuError(CODE_BOT_NOT_IN_CHAT, "The bot can not be outside the group.")
        card = self._card_to_send(msg_type, content)
        # A reply to a message already in a thread stays in it, reply_in_thread or not.
        thread_id = parent.get("thread_id")
        if thread_id is None and in_thread:
            thread_id = "omt_" + secrets.token_hex(8)
            parent["thread_id"] = thread_id
        message = self._create(
            chat.chat_id,
            msg_type,
            content,
            root_id=parent.get("root_id") or parent_id,
            parent_id=parent_id,
            thread_id=thread_id,
        )
        if card is not None:
            card.message_id = message["message_id"]
        checked = (msg_type, content, uuid)
        return self._after_create(
            request, record, fault, message, checked, reply_to=parent_id, reply_in_thread=in_thread
        )

    def _check_message(self, body: dict[str, Any]) -> tuple[str, str, str | None]:
        """``msg_type``, ``content`` (a string holding JSON) and ``uuid``, checked like Feishu."""
        msg_type = body.get("msg_type")
        if not isinstance(msg_type, str) or not msg_type:
            raise _field_validation("msg_type is required")
        if msg_type not in MSG_TYPES:
            raise _invalid_param("invalid msg_type")
        content = body.get("content")
        if content is None:
            raise _field_validation("content is required")
        if not isinstance(content, str):
            raise _FeishuError(
                CODE_INVALID_PARAM_TYPE,
                "Invalid parameter type in json: content. Please check and modify accordingly.",
            )
        try:
            decoded = json.loads(content)
        except ValueError:
            raise _invalid_param("invalid message content") from None
        if not isinstance(decoded, dict):
            raise _invalid_param("invalid message content")
        limit = MAX_RICH_CONTENT_BYTES if msg_type in ("post", "interactive") else None
        limit = limit or MAX_TEXT_CONTENT_BYTES
        if len(content.encode()) > limit:
            raise _FeishuError(
                CODE_CONTENT_TOO_LONG, "The length of the message content reaches its limit."
            )
        if msg_type == "text" and (not isinstance(decoded.get("text"), str) or not decoded["text"]):
            raise _invalid_param("invalid message content")
        if msg_type == "post" and not _valid_post(decoded):
            raise _invalid_param("invalid message content")
        if msg_type == "image" and not isinstance(decoded.get("image_key"), str):
            raise _invalid_param("invalid message content")
        if msg_type in ("file", "audio", "media") and not isinstance(decoded.get("file_key"), str):
            raise _invalid_param("invalid message content")
        if msg_type in ("image", "file", "audio", "media"):
            self._check_upload_keys(msg_type, decoded)
        uuid = body.get("uuid")
        if uuid is not None and (not isinstance(uuid, str) or len(uuid) > MAX_UUID_CHARS):
            raise _field_validation(f"uuid must be a string of at most {MAX_UUID_CHARS} chars")
        return msg_type, content, uuid or None

    async def _before_create(self, record: FeishuRequest, msg_type: str) -> Fault | None:
        """Apply the scripted fault or delay of a send (first those scripted for its
        ``msg_type`` alone, ``method="send.<msg_type>"``); a drop is returned for later."""
        fault = await self._scripted(record, f"send.{msg_type}")
        fault = fault or await self._scripted(record, "send")
        await self._pause(self.send_delay_seconds)
        return fault

    async def _scripted(self, record: FeishuRequest, method: str) -> Fault | None:
        """Apply the next scripted fault of ``method`` (``send`` for sends and replies,
        ``card.create``, ``card.content``, ``card.settings``, ``reaction.create``,
        ``reaction.list``, ``reaction.delete``, ``message.get``, ``message.delete``): a
        rate limit or failure is raised, a delay waited out, a drop returned for later."""
        fault = self._next_fault(method)
        if fault is not None and fault.kind == "rate_limit":
            reset_seconds = 1.0 if fault.retry_after is None else fault.retry_after
            status = fault.status or 400
            code = CODE_RATE_LIMITED if fault.code is None else fault.code
            reset = f"{reset_seconds:g}"
            headers = {"x-ogw-ratelimit-limit": "50", "x-ogw-ratelimit-reset": reset}
            if status == 429:
                headers["Retry-After"] = str(max(1, math.ceil(reset_seconds)))
            msg = _RATE_LIMIT_MESSAGES.get(code, "request trigger frequency limit")
            raise _FeishuError(code, msg, status=status, headers=headers)
        if fault is not None and fault.kind == "fail":
            canned = _Canned(fault)
            record.error = f"http {canned.status}"
            raise canned
        if fault is not None and fault.kind == "delay":
            await self._pause(fault.seconds)
            return None
        return fault

    def _answer(
        self, request: web.Request, record: FeishuRequest, fault: Fault | None, data: Any
    ) -> web.Response:
        """Success (the effect already happened), or a cut connection for a scripted drop."""
        self._notify()
        if fault is not None and fault.kind == "drop":
            record.error = "dropped"
            return abort(request)
        return self._ok(record, {"code": 0, "msg": "success", "data": data})

    def _uuid_hit(self, uuid: str | None, record: FeishuRequest) -> dict[str, Any] | None:
        if uuid is None:
            return None
        seen = self._uuids.get(uuid)
        if seen is None or time.monotonic() - seen[0] > UUID_WINDOW_SECONDS:
            return None
        original = self._messages[seen[1]]
        self.uuid_hits.append({"uuid": uuid, "message_id": seen[1], "path": record.path})
        return copy.deepcopy(original)

    def _receiving_chat(self, id_type: str, receive_id: str) -> FeishuChat:
        if id_type == "chat_id":
            chat = self._chats.get(receive_id)
            if chat is None or not chat.bot_member:
                raise _FeishuError(CODE_BOT_NOT_IN_CHAT, "The bot can not be outside the group.")
            return chat
        open_id = self._open_id_for(id_type, receive_id)
        if open_id is None or open_id not in self._reachable:
            raise _FeishuError(CODE_USER_UNREACHABLE, "Bot has NO availability to this user.")
        chat_id = self._p2p_by_user.get(open_id)
        if chat_id is None:
            chat_id = _derived("oc_", "p2p:" + open_id, 32)
            self.add_chat(chat_id, chat_mode="p2p", peer_open_id=open_id)
        return self._chats[chat_id]

    def _open_id_for(self, id_type: str, receive_id: str) -> str | None:
        if id_type == "open_id":
            return receive_id
        key = {"union_id": "union_id", "user_id": "user_id"}.get(id_type)
        for user in self._users.values():
            if key is not None and user[key] == receive_id:
                return str(user["open_id"])
        return None

    def _create(
        self,
        chat_id: str,
        msg_type: str,
        content: str,
        *,
        root_id: str | None = None,
        parent_id: str | None = None,
        thread_id: str | None = None,
    ) -> dict[str, Any]:
        now = _now_ms()
        message: dict[str, Any] = {"message_id": "om_" + secrets.token_hex(16)}
        if root_id:
            message["root_id"] = root_id
        if parent_id:
            message["parent_id"] = parent_id
        if thread_id:
            message["thread_id"] = thread_id
        message.update(
            {
                "msg_type": msg_type,
                "create_time": now,
                "update_time": now,
                "deleted": False,
                "updated": False,
                "chat_id": chat_id,
                "sender": {
                    "id": self.app_id,
                    "id_type": "app_id",
                    "sender_type": "app",
                    "tenant_key": self.tenant_key,
                },
                "body": {"content": content},
            }
        )
        mentions = _at_mentions(content, msg_type, self._users, self.tenant_key)
        if mentions:
            message["mentions"] = mentions
        self._messages[message["message_id"]] = message
        return message

    def _after_create(
        self,
        request: web.Request,
        record: FeishuRequest,
        fault: Fault | None,
        message: dict[str, Any],
        checked: tuple[str, str, str | None],
        *,
        receive_id: str | None = None,
        receive_id_type: str | None = None,
        reply_to: str | None = None,
        reply_in_thread: bool = False,
    ) -> web.Response:
        """Record a created message (a send, or with ``reply_to`` a reply) and answer it."""
        msg_type, content, uuid = checked
        sent = SentMessage(
            kind="send" if reply_to is None else "reply",
            message=copy.deepcopy(message),
            chat_id=message["chat_id"],
            msg_type=msg_type,
            content=content,
            receive_id=receive_id,
            receive_id_type=receive_id_type,
            reply_to=reply_to,
            reply_in_thread=reply_in_thread,
            uuid=uuid,
            request=record,
            card_text=self._card_text_of(sent_id := str(message["message_id"])),
        )
        if uuid is not None:
            self._uuids[uuid] = (time.monotonic(), sent_id)
        self.sent.append(sent)
        self._post_queue.put_nowait(sent)
        if fault is not None and fault.kind == "drop":
            record.error = "dropped"
            return abort(request)
        return self._ok(record, {"code": 0, "msg": "success", "data": copy.deepcopy(sent.message)})

    def _card_text_of(self, message_id: str) -> Callable[[], str | None]:
        def text() -> str | None:
            card = next((c for c in self.cards.values() if c.message_id == message_id), None)
            return card.text() if card is not None else None

        return text

    # --- event builders ------------------------------------------------------------------

    def _header(self, event_type: str, event_id: str | None) -> dict[str, Any]:
        # Strictly increasing, as events made one after another are at Feishu, even within
        # one millisecond: the bridge orders membership changes by it.
        self._last_event_ms = max(int(_now_ms()), self._last_event_ms + 1)
        return {
            "event_id": event_id or uuid_module.uuid4().hex,
            "event_type": event_type,
            "create_time": str(self._last_event_ms),
            "token": self.verification_token,
            "app_id": self.app_id,
            "tenant_key": self.tenant_key,
        }

    def _user_ids(self, open_id: str) -> dict[str, str]:
        if open_id == self.bot_open_id:
            return {"union_id": DEFAULT_BOT_UNION_ID, "user_id": "", "open_id": open_id}
        user = self._users.get(open_id)
        if user is not None:
            return {"union_id": user["union_id"], "user_id": user["user_id"], "open_id": open_id}
        return {
            "union_id": _derived("on_", open_id, 32),
            "user_id": _derived("", open_id, 8),
            "open_id": open_id,
        }

    def url_verification(self, challenge: str | None = None) -> dict[str, Any]:
        """The handshake Feishu sends when the request URL is saved (plain form; :meth:`push`
        encrypts it in encrypted mode, never signs it)."""
        return {
            "challenge": challenge or secrets.token_urlsafe(12),
            "token": self.verification_token,
            "type": "url_verification",
        }

    def message_event(
        self,
        *,
        chat_id: str | None = None,
        chat_type: Literal["p2p", "group"] = "p2p",
        text: str | None = None,
        post: str | Mapping[str, Any] | None = None,
        image_key: str | None = None,
        file: tuple[str, str] | None = None,
        sender_open_id: str = DEFAULT_USER_OPEN_ID,
        sender_type: str = "user",
        mentions: Sequence[tuple[str, str, str]] = (),
        mention_bot: bool = False,
        thread_id: str | None = None,
        message_id: str | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """An ``im.message.receive_v1`` event shaped like the fixtures.

        One of ``text`` (default ``"hello"``), ``post`` (a string becomes one text paragraph;
        a mapping is the received post content as is), ``image_key`` or ``file`` (file_key,
        file_name). ``mentions`` are ``(key, open_id, name)`` with keys ``@_user_N``; a key
        missing from the text is put in front of it. ``mention_bot`` adds the bot's mention
        under the next free key. ``message.content`` is a JSON *string*, as Feishu sends it.
        ``chat_id`` defaults to the fixtures' p2p or group chat.
        """
        if sum(kind is not None for kind in (text, post, image_key, file)) > 1:
            raise ValueError("give one of text, post, image_key, file")
        if chat_id is None:
            chat_id = DEFAULT_P2P_CHAT_ID if chat_type == "p2p" else DEFAULT_GROUP_CHAT_ID
        all_mentions = list(mentions)
        if mention_bot:
            used = {key for key, _, _ in all_mentions}
            number = 1
            while f"@_user_{number}" in used:
                number += 1
            all_mentions.insert(0, (f"@_user_{number}", self.bot_open_id, self.bot_name))
        keys = [key for key, _, _ in all_mentions]

        message_type: str
        content: dict[str, Any]
        if image_key is not None:
            message_type, content = "image", {"image_key": image_key}
        elif file is not None:
            message_type, content = "file", {"file_key": file[0], "file_name": file[1]}
        elif post is not None:
            message_type = "post"
            if isinstance(post, str):
                at_items = [
                    {"tag": "at", "user_id": key, "user_name": name}
                    for key, _, name in all_mentions
                ]
                content = {"title": "", "content": [[*at_items, {"tag": "text", "text": post}]]}
            else:
                content = copy.deepcopy(dict(post))
        else:
            message_type = "text"
            body = "hello" if text is None else text
            missing = [key for key in keys if key not in body]
            body = " ".join([*missing, body]) if missing else body
            content = {"text": body}
            # Feishu lists mentions in the order they appear in the text.
            all_mentions.sort(key=lambda item: body.find(item[0]))

        created = str(int(time.time()) * 1000)
        message: dict[str, Any] = {
            "message_id": message_id or "om_" + secrets.token_hex(16),
            "root_id": root_id or "",
            "parent_id": parent_id or "",
            "create_time": created,
            "update_time": created,
            "chat_id": chat_id,
        }
        if thread_id is not None:
            message["thread_id"] = thread_id
        message.update(
            {
                "chat_type": chat_type,
                "message_type": message_type,
                "content": json.dumps(content, ensure_ascii=False, separators=(",", ":")),
                "mentions": [
                    {
                        "key": key,
                        "id": self._user_ids(open_id),
                        "name": name,
                        "tenant_key": self.tenant_key,
                    }
                    for key, open_id, name in all_mentions
                ],
                "user_agent": _USER_AGENT,
            }
        )
        return {
            "schema": "2.0",
            "header": self._header("im.message.receive_v1", event_id),
            "event": {
                "sender": {
                    "sender_id": self._user_ids(sender_open_id),
                    "sender_type": sender_type,
                    "tenant_key": self.tenant_key,
                },
                "message": message,
            },
        }

    def bot_added_event(
        self,
        chat_id: str,
        name: str,
        *,
        operator_open_id: str = DEFAULT_USER_OPEN_ID,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """``im.chat.member.bot.added_v1``: someone put the bot in a group."""
        return self._membership_event(
            "im.chat.member.bot.added_v1", chat_id, name, operator_open_id, event_id
        )

    def bot_deleted_event(
        self,
        chat_id: str,
        name: str | None = None,
        *,
        operator_open_id: str = DEFAULT_USER_OPEN_ID,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """``im.chat.member.bot.deleted_v1``: the bot was removed; sends there then fail."""
        known = self._chats.get(chat_id)
        chat_name = name if name is not None else (known.name if known else "")
        return self._membership_event(
            "im.chat.member.bot.deleted_v1", chat_id, chat_name, operator_open_id, event_id
        )

    def _membership_event(
        self, event_type: str, chat_id: str, name: str, operator: str, event_id: str | None
    ) -> dict[str, Any]:
        return {
            "schema": "2.0",
            "header": self._header(event_type, event_id),
            "event": {
                "chat_id": chat_id,
                "operator_id": self._user_ids(operator),
                "external": False,
                "operator_tenant_key": self.tenant_key,
                "name": name,
                "i18n_names": {"zh_cn": name, "en_us": name, "ja_jp": ""},
            },
        }

    # --- the event pusher ----------------------------------------------------------------

    async def push(
        self,
        url: str,
        event: Mapping[str, Any],
        *,
        encrypt: bool | None = None,
        sign: bool = True,
        event_id: str | None = None,
        verification_token: str | None = None,
        tamper_signature: bool = False,
        timestamp: str | None = None,
        nonce: str | None = None,
        age_seconds: float = 0.0,
        deadline: float | None = 10.0,
    ) -> PushResult:
        """POST one event to the bridge as Feishu does; returns (and records) what it answered.

        ``encrypt`` defaults to whether an Encrypt Key is configured. With a key, every event
        but url_verification carries ``X-Lark-Request-Timestamp``/``-Nonce``/``-Signature``
        over the exact body (unless ``sign`` is False; ``tamper_signature`` corrupts it),
        signed at the current time: ``age_seconds`` earlier (a request captured that long ago
        and replayed now; negative: a clock ahead), or at exactly ``timestamp``.
        ``event_id`` / ``verification_token`` override the header's. No answer within
        ``deadline`` seconds (or a refused connection) gives ``status`` 0, not an exception.
        """
        document = json.loads(json.dumps(event))
        header = document.get("header")
        if event_id is not None:
            if isinstance(header, dict):
                header["event_id"] = event_id
            else:
                document["uuid"] = event_id
        if verification_token is not None:
            if isinstance(header, dict):
                header["token"] = verification_token
            else:
                document["token"] = verification_token
        self.remember(document)

        encrypted = self.encrypt_key is not None if encrypt is None else encrypt
        plaintext = compact(document)
        if encrypted:
            if self.encrypt_key is None:
                raise ValueError("encrypt=True needs an encrypt_key")
            body = compact({"encrypt": _encrypt(self.encrypt_key, plaintext.decode())})
        else:
            body = plaintext
        headers = {"Content-Type": "application/json; charset=utf-8"}
        is_handshake = document.get("type") == "url_verification"
        if self.encrypt_key is not None and sign and not is_handshake:
            stamp = timestamp if timestamp is not None else str(int(time.time() - age_seconds))
            once = nonce if nonce is not None else secrets.token_hex(8)
            digest = signature(stamp, once, self.encrypt_key, body)
            if tamper_signature:
                digest = ("0" if digest[0] != "0" else "1") + digest[1:]
            headers["X-Lark-Request-Timestamp"] = stamp
            headers["X-Lark-Request-Nonce"] = once
            headers["X-Lark-Signature"] = digest
        return await self._deliver(url, document, body, headers, deadline=deadline, attempt=0)

    async def push_raw(
        self, url: str, body: bytes, headers: Mapping[str, str], *, deadline: float | None = 10.0
    ) -> PushResult:
        """POST arbitrary bytes (malformed events, forged requests); recorded like a push."""
        return await self._deliver(url, {}, body, dict(headers), deadline=deadline, attempt=0)

    async def redeliver(
        self, url: str, previous: PushResult, *, deadline: float | None = 10.0
    ) -> PushResult:
        """Send a push again exactly as before (same bytes, headers and so ``event_id``), as
        Feishu does 15 s, 5 min, 1 h and 6 h after a push that got no timely 200, or as an
        attacker replays a captured request (the signature timestamp is the original's)."""
        return await self._deliver(
            url,
            previous.document,
            previous.request_body,
            dict(previous.request_headers),
            deadline=deadline,
            attempt=previous.attempt + 1,
        )

    async def push_with_redelivery(
        self,
        url: str,
        event: Mapping[str, Any],
        *,
        deadline_seconds: float = 3.0,
        retry_after_seconds: Sequence[float] = (0.2, 0.4),
        encrypt: bool | None = None,
        event_id: str | None = None,
    ) -> list[PushResult]:
        """Deliver like Feishu: while the bridge gives no 200 within ``deadline_seconds``,
        wait the next delay of ``retry_after_seconds`` (Feishu's are
        :data:`FEISHU_RETRY_SCHEDULE_SECONDS`) and send the identical request again.
        """
        first = await self.push(
            url, event, encrypt=encrypt, event_id=event_id, deadline=deadline_seconds
        )
        results = [first]
        for delay in retry_after_seconds:
            if results[-1].ok:
                break
            await asyncio.sleep(delay)
            results.append(await self.redeliver(url, first, deadline=deadline_seconds))
        return results

    async def _deliver(
        self,
        url: str,
        document: dict[str, Any],
        body: bytes,
        headers: dict[str, str],
        *,
        deadline: float | None,
        attempt: int,
    ) -> PushResult:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        header = document.get("header")
        event_id = header.get("event_id") if isinstance(header, dict) else document.get("uuid")
        started = time.monotonic()
        status, text, answer_headers, error = 0, "", CIMultiDict[str](), None
        try:
            async with self._http.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=deadline)
            ) as response:
                text = await response.text()
                status, answer_headers = response.status, CIMultiDict(response.headers)
        except TimeoutError:
            error = "timeout"
        except aiohttp.ClientError as failure:
            error = f"connection_failed: {failure}"
        result = PushResult(
            url=url,
            status=status,
            body=text,
            headers=answer_headers,
            elapsed=time.monotonic() - started,
            event_id=str(event_id) if event_id is not None else None,
            document=document,
            request_body=body,
            request_headers=headers,
            attempt=attempt,
            error=error,
        )
        self.pushes.append(result)
        return result


class _Canned(_FeishuError):
    """A scripted non-JSON failure (an HTML 5xx page from the gateway)."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(0, "scripted failure", status=fault.status or 500)
        self.fault = fault


def _multipart(record: FeishuRequest) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a ``multipart/form-data`` body: name -> (filename, bytes); a body that is
    not multipart is refused as Feishu does (234001)."""
    content_type = record.headers.get("Content-Type", "")
    kind, _, rest = content_type.partition(";")
    found = re.search(r'boundary="?([^";]+)"?', rest)
    if kind.strip().lower() != "multipart/form-data" or found is None:
        raise _FeishuError(CODE_UPLOAD_PARAM, "invalid param: expected multipart/form-data")
    delimiter = b"--" + found.group(1).encode()
    fields: dict[str, tuple[str | None, bytes]] = {}
    for section in record.body.split(delimiter)[1:]:
        if section.startswith(b"--"):
            break
        head, _, data = section.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        disposition = next(
            (
                line.decode(errors="replace")
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-disposition:")
            ),
            "",
        )
        name = re.search(r'[; ]name="([^"]*)"', disposition)
        if name is None:
            raise _FeishuError(CODE_UPLOAD_PARAM, "invalid param: a part without a name")
        filename = re.search(r'filename="([^"]*)"', disposition)
        fields[name.group(1)] = (
            filename.group(1) if filename else None,
            data.removesuffix(b"\r\n"),
        )
    return fields


def _json_response(
    document: Any, status: int, headers: Mapping[str, str] | None = None
) -> web.Response:
    """JSON as Feishu sends it (``application/json; charset=utf-8``) with a log id."""
    all_headers = {"X-Tt-Logid": time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(9).upper()}
    all_headers.update(headers or {})
    return json_response(document, status, all_headers)


def _valid_post(decoded: dict[str, Any]) -> bool:
    """A post is ``{locale: {"title"?, "content": [[tag, ...], ...]}}`` (optionally under
    ``"post"``), locales ``zh_cn``/``en_us``/``ja_jp``, each tag a known one; ``md`` and
    ``text`` carry a string ``text``."""
    locales = decoded.get("post", decoded)
    if not isinstance(locales, dict) or not locales or not set(locales) <= POST_LOCALES:
        return False
    for value in locales.values():
        rows = value.get("content") if isinstance(value, dict) else None
        if not isinstance(rows, list) or not rows:
            return False
        for row in rows:
            if not isinstance(row, list):
                return False
            for tag in row:
                if not isinstance(tag, dict) or tag.get("tag") not in POST_TAGS:
                    return False
                if tag["tag"] in ("md", "text") and not isinstance(tag.get("text"), str):
                    return False
    return True


def _check_card(document: Any) -> dict[str, dict[str, Any]]:
    """A streaming card JSON 2.0: its elements by ``element_id``; refused like CardKit."""
    if not isinstance(document, dict) or document.get("schema") != "2.0":
        raise _FeishuError(CODE_CARD_PARAM, "card JSON must be schema 2.0")
    config = document.get("config")
    if not isinstance(config, dict) or config.get("streaming_mode") is not True:
        raise _FeishuError(CODE_CARD_PARAM, "config.streaming_mode must be true")
    if config.get("update_multi") is False:
        raise _FeishuError(CODE_UPDATE_MULTI_FALSE, "update_multi must be true")
    body = document.get("body")
    elements = body.get("elements") if isinstance(body, dict) else None
    if not isinstance(elements, list):
        raise _FeishuError(CODE_CARD_PARAM, "body.elements is required")
    found: dict[str, dict[str, Any]] = {}
    for element in elements:
        if not isinstance(element, dict) or not isinstance(element.get("tag"), str):
            raise _FeishuError(CODE_CARD_PARAM, "every element needs a tag")
        element_id = element.get("element_id")
        if element_id is None:
            continue
        if not isinstance(element_id, str) or not 1 <= len(element_id) <= MAX_CARD_IDS:
            raise _FeishuError(CODE_CARD_PARAM, "element_id must be 1 to 20 characters")
        if element_id in found:
            raise _FeishuError(CODE_CARD_PARAM, "element_id must be unique")
        content = element.get("content", "")
        if not isinstance(content, str) or len(content) > MAX_CARD_CONTENT_CHARS:
            raise _FeishuError(CODE_CARD_PARAM, "content must be at most 100,000 characters")
        found[element_id] = element
    return found


_AT = re.compile(r'<at user_id="([^"]*)">([^<]*)</at>')


def post_text(decoded: dict[str, Any]) -> str | None:
    """The text of a post's first locale: its ``md`` and ``text`` tags, a line per row."""
    locales = decoded.get("post", decoded)
    for value in locales.values() if isinstance(locales, dict) else ():
        rows = value.get("content") if isinstance(value, dict) else None
        if isinstance(rows, list):
            return "\n".join(
                "".join(
                    str(tag.get("text", ""))
                    for tag in row
                    if isinstance(tag, dict) and tag.get("tag") in ("md", "text")
                )
                for row in rows
                if isinstance(row, list)
            )
    return None


def _at_mentions(
    content: str, msg_type: str, users: Mapping[str, dict[str, Any]], tenant_key: str
) -> list[dict[str, Any]]:
    """The ``mentions`` Feishu lists for ``<at user_id="ou_...">`` tags in sent text."""
    if msg_type == "text":
        text = str(json.loads(content).get("text", ""))
    elif msg_type == "post":
        text = post_text(json.loads(content)) or ""
    else:
        return []
    mentions: list[dict[str, Any]] = []
    for match in _AT.finditer(text):
        open_id, name = match.group(1), match.group(2)
        if open_id == "all":
            continue
        known = users.get(open_id)
        mentions.append(
            {
                "key": f"@_user_{len(mentions) + 1}",
                "id": open_id,
                "id_type": "open_id",
                "name": name or (known["name"] if known else ""),
                "tenant_key": tenant_key,
            }
        )
    return mentions
