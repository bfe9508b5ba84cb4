"""Fuzzing ``POST /feishu/{agent}/events`` of the real app, in Encrypt Key mode.

Random bytes, broken UTF-8, JSON of the wrong shape, ``{"encrypt": ...}`` holding random text,
random base64 or validly encrypted garbage, validly encrypted *and* signed JSON of random shapes
(past decryption and the signature check, into the event parser), validly encrypted and signed
``im.message.receive_v1`` (and bot added/removed) events with mutated fields, odd, missing,
repeated or non-UTF-8 signature headers, and bodies beyond ``http.max_body_bytes``. For every
request:

* the answer is a 200 or a 4xx, never a 5xx (Feishu redelivers a 5xx, and what failed once
  fails again; the adapter's 500/503 are for a database that is down or a bot identity not yet
  known, which never happens here), and the adapter logs no refusal with a 5xx;
* a refused request stores nothing (no participant, session, membership or user message), and
  an acknowledged one stores only what its event says: the message under its own id, from its
  own sender, in its own chat (or the group session of a bot added/removed event);
* no handler error escapes to aiohttp, and the app still serves ``/healthz`` afterwards, and a
  real mention pushed by the fake afterwards is still stored.

Hypothesis drives one running bridge per test (``derandomize``: the same examples every run),
each example one HTTP request (written byte for byte on a socket, so headers may hold bytes
that are no UTF-8), on SQLite and on PostgreSQL.

What the fuzzing found is in ``FOUND`` below, each case fixed in ``channels/feishu``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.http_exceptions import HttpProcessingError
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from tests.fakes.feishu import (
    DEFAULT_BOT_OPEN_ID,
    DEFAULT_ENCRYPT_KEY,
    DEFAULT_GROUP_CHAT_ID,
    DEFAULT_GROUP_CHAT_NAME,
    DEFAULT_P2P_CHAT_ID,
    DEFAULT_USER_OPEN_ID,
    DEFAULT_VERIFICATION_TOKEN,
    MSG_TYPES,
    FakeFeishu,
    decrypt,
    encrypt,
    signature,
)
from tests.support.fuzzing import (
    JSON_VALUES,
    MIB,
    FuzzEndpoint,
    LogRecords,
    Snapshot,
    bridge_for,
    capturing,
    compact,
    deep,
    fuzz_settings,
    garbled,
    parsed,
    raw_json,
    serialize,
    ten_megabytes,
)

ENCRYPT_KEY = DEFAULT_ENCRYPT_KEY
AES_KEY = hashlib.sha256(ENCRYPT_KEY.encode()).digest()
WRONG_AES_KEY = hashlib.sha256(b"not-the-encrypt-key").digest()
PATH = "/feishu/assistant/events"
MESSAGE_EVENT = "im.message.receive_v1"
BOT_ADDED = "im.chat.member.bot.added_v1"
BOT_REMOVED = "im.chat.member.bot.deleted_v1"
STAMP, NONCE, SIGNATURE = (
    "X-Lark-Request-Timestamp",
    "X-Lark-Request-Nonce",
    "X-Lark-Signature",
)

Headers = list[tuple[bytes, bytes]]


# --- Feishu's crypto, for any bytes ----------------------------------------------------------


def seal(plain: bytes, *, key: bytes = AES_KEY, pad: bool = True) -> str:
    """Feishu's ``encrypt`` value, base64(iv + AES-256-CBC(PKCS#7(plain))), of any bytes.

    The fake's :func:`~tests.fakes.feishu.encrypt` takes text only and is pure Python (too slow
    for megabytes); ``test_seal_is_feishus_encryption`` holds the two to the same bytes. The IV
    comes from the plaintext, so every run sends the same bytes."""
    if pad:
        padder = padding.PKCS7(128).padder()
        plain = padder.update(plain) + padder.finalize()
    iv = hashlib.sha256(plain).digest()[:16]
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + encryptor.update(plain) + encryptor.finalize()).decode()


def sealed(plain: bytes) -> bytes:
    """The body Feishu posts for the event ``plain``."""
    return compact({"encrypt": seal(plain)})


def signed_headers(body: bytes, *, nonce: str = "fuzz-nonce") -> Headers:
    """The three ``X-Lark-*`` headers of ``body``, signed now with the real Encrypt Key."""
    stamp = str(int(time.time()))
    digest = signature(stamp, nonce, ENCRYPT_KEY, body)
    return [
        (STAMP.encode(), stamp.encode()),
        (NONCE.encode(), nonce.encode()),
        (SIGNATURE.encode(), digest.encode()),
    ]


def test_seal_is_feishus_encryption() -> None:
    text = '{"schema":"2.0","x":"\u00e9\u6c49"}'
    value = seal(text.encode())
    assert decrypt(ENCRYPT_KEY, value) == text
    iv = base64.b64decode(value)[:16]
    assert encrypt(ENCRYPT_KEY, text, iv=iv) == value


# --- the app under test ----------------------------------------------------------------------


class Problems(LogRecords):
    """ERROR records of aiohttp's server (an exception escaped a handler) and asyncio (a task
    failed unobserved), and any record of the Feishu channel with an exception or telling of a
    refusal with a 5xx."""

    LOGGERS = ("aiohttp.server", "aiohttp.web", "asyncio", "channels.feishu")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)

    def wanted(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, "fields", None)
        status = fields.get("status") if isinstance(fields, dict) else None
        refused_5xx = isinstance(status, int) and status >= 500
        # The HTTP parser's own 400s (of the bridge, or of the fake when the bridge asks it for
        # a URL too long): answered, and no handler ran.
        unparsed = record.exc_info is not None and isinstance(
            record.exc_info[1], HttpProcessingError
        )
        return bool(record.levelno >= logging.ERROR or record.exc_info or refused_5xx) and (
            not unparsed
        )


@dataclass
class Endpoint(FuzzEndpoint):
    fake: FakeFeishu

    async def post(
        self,
        body: bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
        *,
        content_type: bytes | None = b"application/json; charset=utf-8",
    ) -> int:
        """POST ``body`` with exactly these header lines, written on a socket as they are."""
        address = URL(self.bridge.url)
        assert address.host is not None and address.port is not None
        lines = [
            f"POST {PATH} HTTP/1.1".encode(),
            f"Host: {address.host}:{address.port}".encode(),
            b"Connection: close",
            b"Content-Length: %d" % len(body),
        ]
        if content_type is not None:
            lines.append(b"Content-Type: " + content_type)
        lines += [name + b": " + value for name, value in headers]
        async with asyncio.timeout(30):
            reader, writer = await asyncio.open_connection(address.host, address.port)
            try:
                writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
                await writer.drain()
                answer = await reader.read()
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1."), answer[:200]
        return int(status_line.split()[1])

    async def post_signed(self, body: bytes) -> int:
        return await self.post(body, signed_headers(body))

    async def post_event(self, plain: bytes) -> int:
        """``plain`` encrypted and signed exactly as Feishu does."""
        return await self.post_signed(sealed(plain))

    def new_problems(self) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()} {getattr(r, 'fields', '')} {r.exc_info and r.exc_info[1]}"
            for r in self.log.fresh()
        ]


@pytest.fixture
async def fake_feishu() -> AsyncIterator[FakeFeishu]:
    async with FakeFeishu(encrypt_key=ENCRYPT_KEY) as fake:
        yield fake


@pytest.fixture
def problems() -> Iterator[LogRecords]:
    # feishu.refused is logged at INFO
    levels = {"channels.feishu": logging.INFO}
    with capturing(Problems(), Problems.LOGGERS, levels=levels) as handler:
        yield handler


async def assert_a_real_mention_is_stored(endpoint: Endpoint) -> None:
    """The fake pushes a group mention exactly as Feishu would: it is stored as it was said."""
    event = endpoint.fake.message_event(chat_type="group", text="still there?", mention_bot=True)
    before = await endpoint.snapshot()
    pushed = await endpoint.fake.push(endpoint.url, event)
    assert pushed.status == 200, pushed.body
    stored = (await endpoint.snapshot()).new_messages(before)
    assert [row[1:3] for row in stored] == [
        (event["event"]["message"]["message_id"], "still there?")
    ]


@asynccontextmanager
async def feishu_endpoint(
    database_url: str, fake: FakeFeishu, problems: LogRecords, *, max_body_bytes: int | None = None
) -> AsyncIterator[Endpoint]:
    """The bridge with one agent on Feishu (Encrypt Key mode), and a client for it."""
    section = {
        "app_id": fake.app_id,
        "app_secret": fake.app_secret,
        "verification_token": fake.verification_token,
        "encrypt_key": ENCRYPT_KEY,
        "base_url": fake.base_url,
    }
    agent = {"slug": "assistant", "feishu": section}
    async with bridge_for(database_url, agent, max_body_bytes=max_body_bytes) as (bridge, http):
        endpoint = Endpoint(bridge=bridge, http=http, log=problems, path=PATH, fake=fake)
        yield endpoint
        # Still storing what Feishu sends after everything it was sent.
        await assert_a_real_mention_is_stored(endpoint)
        assert endpoint.new_problems() == []


@pytest.fixture
async def endpoint(
    database_url: str, fake_feishu: FakeFeishu, problems: LogRecords
) -> AsyncIterator[Endpoint]:
    async with feishu_endpoint(database_url, fake_feishu, problems) as target:
        yield target


# --- what may happen -------------------------------------------------------------------------


def is_id(value: Any) -> bool:
    """An id a database can store as it is."""
    if not isinstance(value, str) or not 0 < len(value) <= 255 or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class MayStore:
    message_ids: list[str]
    sessions: set[str]
    participants: set[str]


def may_store(document: Any) -> MayStore | None:
    """What a verified event may store, if anything: a message event its message (under its own
    id, from its own sender, in its own chat or topic); a bot added/removed event its group."""
    if not isinstance(document, dict):
        return None
    header, event = document.get("header"), document.get("event")
    if not isinstance(header, dict) or not isinstance(event, dict):
        return None
    if header.get("token") != DEFAULT_VERIFICATION_TOKEN:
        return None
    kind = header.get("event_type")
    if kind in (BOT_ADDED, BOT_REMOVED):
        chat = event.get("chat_id")
        return MayStore([], {f"feishu:{chat}"}, set()) if is_id(chat) else None
    if kind != MESSAGE_EVENT:
        return None
    sender, message = event.get("sender"), event.get("message")
    if not isinstance(sender, dict) or not isinstance(message, dict):
        return None
    sender_id = sender.get("sender_id")
    open_id = sender_id.get("open_id") if isinstance(sender_id, dict) else None
    message_id, chat_id = message.get("message_id"), message.get("chat_id")
    thread_id = message.get("thread_id")
    if sender.get("sender_type") != "user" or not isinstance(message.get("content"), str):
        return None
    if not all(is_id(value) for value in (open_id, message_id, chat_id)):
        return None
    sessions = {f"feishu:{chat_id}"}
    if thread_id:
        sessions.add(f"feishu:{chat_id}:{thread_id}")
    return MayStore([message_id], sessions, {open_id})


async def check(endpoint: Endpoint, before: Snapshot, status: int, document: Any) -> None:
    """Never a 5xx; a refusal stores nothing; an acknowledgement stores only what the event
    says. ``document`` is the decrypted event (None when there is none)."""
    shown = repr(document)[:300]
    assert status < 500, f"{status} for {shown}"
    assert endpoint.new_problems() == [], shown
    after = await endpoint.snapshot()
    if after == before:
        return
    assert status == 200, f"{status}, yet stored something for {shown}"
    allowed = may_store(document)
    stored = after.new_messages(before)
    assert allowed is not None, f"stored {stored} for {shown}"
    assert after.user_messages[: len(before.user_messages)] == before.user_messages
    assert [row[1] for row in stored] in ([], allowed.message_ids), shown
    assert all("\x00" not in row[2] for row in stored), shown
    assert set(after.sessions) - set(before.sessions) <= allowed.sessions, shown
    assert after.new_participants(before, "user") <= allowed.participants, shown


# --- building requests -----------------------------------------------------------------------


ODD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "om_\x00",
        "\u202e\ufeff",
        "\ud800",
        "ou_\udfff",
        "a/b",
        "../../auth/v3/tenant_access_token/internal",
        "?user_id_type=user_id",
        "#",
        "%2F%00",
        "x y\tz",
        "@_user_1",
        "@_user_1 ",
        "@_user_99",
        *sorted(MSG_TYPES),
        "user",
        "app",
        "bot",
        "p2p",
        "group",
        "topic_group",
        "at",
        "a",
        "img",
        "emotion",
        "{}",
        "[]",
        "null",
        "5",
        '"text"',
        '{"text":5}',
        '{"text":"\\u0000"}',
        '{"content":7}',
        '{"zh_cn":{"content":[[{"tag":"a","href":[1]}]]}}',
        DEFAULT_BOT_OPEN_ID,
        DEFAULT_USER_OPEN_ID,
        DEFAULT_GROUP_CHAT_ID,
        DEFAULT_P2P_CHAT_ID,
        MESSAGE_EVENT,
        BOT_ADDED,
        BOT_REMOVED,
        "url_verification",
        "event_callback",
        DEFAULT_VERIFICATION_TOKEN,
    ]
)
ODD_VALUES = st.one_of(
    JSON_VALUES,
    ODD_STRINGS,
    st.integers(min_value=256, max_value=300_000).map(lambda n: "x" * n),
    st.integers(min_value=250, max_value=260).map(lambda n: "ou_" + "7" * (n - 3)),
    st.builds(
        lambda kind, size: f"@@raw:{kind}:{size}@@",
        st.sampled_from("[{9"),
        st.integers(min_value=2, max_value=100_000),
    ),
    st.integers(min_value=2**63, max_value=2**200),
)
HEADER_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
# Header bytes the HTTP parser lets through to the handler (controls it refuses itself), and
# those above 0x7f, which it hands on as lone surrogates (no UTF-8).
HEADER_BYTES = st.binary(max_size=40).map(
    lambda raw: bytes(byte for byte in raw if byte >= 0x20 and byte != 0x7F)
)


# Real events, built by the fake as Feishu sends them.

POST = {
    "title": "Plan",
    "content": [
        [{"tag": "text", "text": "step "}, {"tag": "a", "text": "doc", "href": "https://x.test"}],
        [{"tag": "at", "user_id": "@_user_1", "user_name": "TestBot"}, {"tag": "img"}],
        [{"tag": "emotion", "emoji_type": "SMILE"}, {"tag": "media", "file_key": "f_1"}],
    ],
}
REAL_EVENTS: dict[str, Callable[[FakeFeishu], dict[str, Any]]] = {
    "p2p_text": lambda fake: fake.message_event(text="hello from the fuzzer"),
    "group_mention": lambda fake: fake.message_event(
        chat_type="group",
        text="@_user_2 fuzz me @_user_1",
        mentions=[("@_user_2", "ou_li", "Li")],
        mention_bot=True,
    ),
    "group_post": lambda fake: fake.message_event(
        chat_type="group", post="a post", mention_bot=True
    ),
    "rich_post": lambda fake: fake.message_event(post={"zh_cn": copy.deepcopy(POST)}),
    "image": lambda fake: fake.message_event(image_key="img_v2_fuzz"),
    "file": lambda fake: fake.message_event(file=("file_v2_fuzz", "notes.txt")),
    "topic": lambda fake: fake.message_event(
        chat_type="group", text="in a topic", thread_id="omt_fuzz", mention_bot=True
    ),
    "bot_added": lambda fake: fake.bot_added_event(DEFAULT_GROUP_CHAT_ID, DEFAULT_GROUP_CHAT_NAME),
    "bot_added_unknown_chat": lambda fake: fake.bot_added_event("oc_fuzz_unknown", "Fuzz Room"),
    "bot_removed": lambda fake: fake.bot_deleted_event(DEFAULT_GROUP_CHAT_ID),
    "handshake": lambda fake: fake.url_verification("fuzz-challenge"),
}
MESSAGE_EVENTS = [name for name in REAL_EVENTS if not name.startswith(("bot_", "handshake"))]

Path = tuple[str | int, ...]
ENVELOPE_PATHS: list[Path] = [
    ("schema",),
    ("type",),
    ("token",),
    ("challenge",),
    ("header",),
    ("header", "event_type"),
    ("header", "token"),
    ("header", "event_id"),
    ("event",),
]
EVENT_PATHS: list[Path] = [
    ("event", "sender"),
    ("event", "sender", "sender_type"),
    ("event", "sender", "sender_id"),
    ("event", "sender", "sender_id", "open_id"),
    ("event", "message"),
    *(
        ("event", "message", key)
        for key in (
            "message_id",
            "chat_id",
            "chat_type",
            "thread_id",
            "root_id",
            "message_type",
            "content",
            "mentions",
        )
    ),
    ("event", "message", "mentions", 0),
    ("event", "message", "mentions", 0, "key"),
    ("event", "message", "mentions", 0, "id"),
    ("event", "message", "mentions", 0, "id", "open_id"),
    ("event", "message", "mentions", 0, "name"),
    ("event", "message", "mentions", 1),
    ("event", "chat_id"),
    ("event", "name"),
]
# Inside message.content (a JSON string): text, image, file and post (possibly in a locale).
CONTENT_PATHS: list[Path] = [
    ("text",),
    ("image_key",),
    ("file_key",),
    ("file_name",),
    ("title",),
    ("content",),
    ("content", 0),
    ("content", 0, 0),
    ("content", 0, 0, "tag"),
    ("content", 0, 0, "text"),
    ("content", 0, 1, "href"),
    ("content", 0, 1, "text"),
    ("zh_cn",),
    ("zh_cn", "title"),
    ("zh_cn", "content"),
    ("zh_cn", "content", 0),
    *(("zh_cn", "content", row, column) for row in range(3) for column in range(2)),
    *(
        ("zh_cn", "content", row, column, key)
        for row in range(3)
        for column in range(2)
        for key in ("tag", "text", "href", "user_id", "user_name", "emoji_type", "file_key")
    ),
]
ID_PATHS: list[Path] = [
    ("event", "sender", "sender_id", "open_id"),
    ("event", "message", "message_id"),
    ("event", "message", "chat_id"),
    ("event", "message", "thread_id"),
]
# Ids (and group names) no column can hold as they are, ids that are no path segment, and the
# longest ids that fit.
ID_VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "\x00",
            "om_\x00",
            "oc_\ud800",
            "ou_\udfff",
            "omt_\u202e",
            "a\tb",
            "a b",
            "ou_\u00e9\u6c49",
            "a/b",
            "../../../open-apis/bot/v3/info",
            "?user_id_type=user_id",
            "#",
            "%00",
        ]
    ),
    st.builds(
        str.__add__,
        st.sampled_from(["om_", "oc_", "ou_", "omt_", ""]),
        st.text(st.characters(categories=["Cc", "Cs", "Cf", "Zs", "Lo"]), min_size=1, max_size=3),
    ),
    st.integers(min_value=240, max_value=300).map(lambda n: "o_" + "7" * (n - 2)),
    ODD_VALUES,
)
SENDER_TYPES = st.sampled_from(["user", "app", "bot", "USER", "", "anonymous", "system"])
# The types a message may have (merge_forward is only ever received), and odd ones.
MESSAGE_TYPES = st.sampled_from([*sorted(MSG_TYPES), "merge_forward", "", "TEXT"])
POST_TAGS = st.sampled_from(["text", "md", "a", "at", "emotion", "img", "media", "code_block"])
POST_ELEMENTS = st.one_of(
    ODD_VALUES,
    st.fixed_dictionaries(
        {"tag": st.one_of(POST_TAGS, ODD_VALUES)},
        optional={
            key: st.one_of(ODD_STRINGS, ODD_VALUES)
            for key in ("text", "href", "user_id", "user_name", "emoji_type", "image_key")
        },
    ),
)
POST_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "title": ODD_VALUES,
        "content": st.one_of(
            ODD_VALUES,
            st.lists(st.one_of(ODD_VALUES, st.lists(POST_ELEMENTS, max_size=4)), max_size=3),
        ),
    },
)
POST_CONTENTS = st.one_of(
    POST_BODIES, st.dictionaries(st.sampled_from(["zh_cn", "en_us", "x"]), POST_BODIES)
)
MENTIONS = st.lists(
    st.one_of(
        ODD_VALUES,
        st.fixed_dictionaries(
            {},
            optional={
                "key": st.one_of(st.sampled_from(["@_user_1", "@_user_2", ""]), ODD_VALUES),
                "id": st.one_of(
                    ODD_VALUES,
                    st.fixed_dictionaries(
                        {"open_id": st.one_of(st.just(DEFAULT_BOT_OPEN_ID), ODD_VALUES)}
                    ),
                ),
                "name": ODD_VALUES,
            },
        ),
    ),
    max_size=3,
)


def mutate(document: Any, path: Path, value: Any, *, delete: bool) -> None:
    """Set (or delete) ``document`` at ``path``, if the containers along it are there."""
    *steps, last = path
    for step in steps:
        in_dict = isinstance(document, dict) and isinstance(step, str) and step in document
        in_list = isinstance(document, list) and isinstance(step, int) and step < len(document)
        if not (in_dict or in_list):
            return
        document = document[step]
    if isinstance(document, dict) and isinstance(last, str):
        if delete:
            document.pop(last, None)
        else:
            document[last] = value
    elif isinstance(document, list) and isinstance(last, int):
        if delete and last < len(document):
            del document[last]
        elif not delete:
            document[last:last] = [value]


@st.composite
def event_variants(draw: st.DrawFn, fake: FakeFeishu) -> bytes:
    """A real event with fields of the wrong type, missing, huge or odd: mostly in the event
    and its ``content``, sometimes in the envelope."""
    document = REAL_EVENTS[draw(st.sampled_from(sorted(REAL_EVENTS)), label="event")](fake)
    message = document.get("event", {}).get("message")
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from(["event", "event", "content", "special", "envelope"]))
        if where == "special" and isinstance(message, dict):
            kind = draw(
                st.sampled_from(["id", "id", "sender_type", "message_type", "post", "mentions"])
            )
            if kind == "id":
                path = draw(st.sampled_from(ID_PATHS))
                mutate(document, path, draw(ID_VALUES), delete=False)
            elif kind == "sender_type":
                document["event"]["sender"]["sender_type"] = draw(SENDER_TYPES)
            elif kind == "message_type":
                message["message_type"] = draw(MESSAGE_TYPES)
            elif kind == "post":
                message["message_type"] = "post"
                message["content"] = serialize(draw(POST_CONTENTS), "ascii").decode()
            else:
                message["mentions"] = draw(MENTIONS)
            continue
        if where == "content" and isinstance(message, dict):
            try:
                content = json.loads(message["content"])
            except (TypeError, ValueError, KeyError):
                continue
            path = draw(st.sampled_from(CONTENT_PATHS))
            delete = draw(st.integers(0, 4)) == 0
            mutate(content, path, None if delete else draw(ODD_VALUES), delete=delete)
            message["content"] = serialize(content, "ascii").decode()
            continue
        paths = ENVELOPE_PATHS if where == "envelope" else EVENT_PATHS
        path = draw(st.sampled_from(paths))
        delete = draw(st.integers(0, 4)) == 0
        mutate(document, path, None if delete else draw(ODD_VALUES), delete=delete)
    event = document.get("event")
    if isinstance(event, dict) and "chat_id" in event and draw(st.booleans()):  # bot added
        event[draw(st.sampled_from(["chat_id", "name"]))] = draw(ID_VALUES)
    return serialize(document, draw(st.sampled_from(["ascii", "ascii", "compact"])))


@st.composite
def id_variants(draw: st.DrawFn, fake: FakeFeishu) -> bytes:
    """A real message (or bot added/removed) event with one id, or the group name, odd."""
    name = draw(st.sampled_from([*MESSAGE_EVENTS, "bot_added_unknown_chat", "bot_removed"]))
    document = REAL_EVENTS[name](fake)
    if name.startswith("bot_"):
        path: Path = ("event", draw(st.sampled_from(["chat_id", "name"])))
    else:
        path = draw(st.sampled_from(ID_PATHS))
    mutate(document, path, draw(ID_VALUES, label="id"), delete=False)
    return serialize(document, draw(st.sampled_from(["ascii", "ascii", "compact"])))


@st.composite
def envelope_shapes(draw: st.DrawFn, fake: FakeFeishu) -> bytes:
    """Decrypted JSON of random shapes: anything, or a real event with its envelope level
    replaced, removed or swapped for the schema 1.0 form."""
    how = draw(st.sampled_from(["any", "real", "schema1", "handshake"]))
    if how == "any":
        return serialize(draw(ODD_VALUES), draw(st.sampled_from(["ascii", "compact"])))
    document: dict[str, Any] = REAL_EVENTS[draw(st.sampled_from(sorted(REAL_EVENTS)))](fake)
    if how == "schema1":
        document = {
            "uuid": draw(ODD_VALUES),
            "token": DEFAULT_VERIFICATION_TOKEN,
            "ts": "1700000000.0",
            "type": draw(st.sampled_from(["event_callback", "url_verification"])),
            "event": draw(ODD_VALUES),
        }
    elif how == "handshake":
        document = {
            "type": "url_verification",
            "token": draw(st.one_of(st.just(DEFAULT_VERIFICATION_TOKEN), ODD_VALUES)),
            "challenge": draw(ODD_VALUES),
        }
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        path = draw(st.sampled_from(ENVELOPE_PATHS))
        delete = draw(st.booleans())
        mutate(document, path, None if delete else draw(ODD_VALUES), delete=delete)
    return serialize(document, draw(st.sampled_from(["ascii", "compact"])))


def encrypt_values() -> st.SearchStrategy[Any]:
    """What ``{"encrypt": ...}`` may hold: text, base64 of any bytes (whole AES blocks or not),
    validly encrypted bytes that are no UTF-8 or no JSON, bad padding, the wrong key, or no
    string at all."""
    blocks = st.integers(min_value=0, max_value=8).flatmap(
        lambda n: st.binary(min_size=16 * n, max_size=16 * n)
    )
    return st.one_of(
        HEADER_TEXT,
        st.binary(max_size=200).map(lambda raw: base64.b64encode(raw).decode()),
        blocks.map(lambda raw: base64.b64encode(raw).decode()),
        st.binary(max_size=200).map(seal),
        st.text(max_size=60).map(lambda text: seal(text.encode("utf-8", "surrogatepass"))),
        blocks.map(lambda raw: seal(raw, pad=False)),
        st.just(b'{"schema":"2.0"}').map(lambda raw: seal(raw, key=WRONG_AES_KEY)),
        st.binary(max_size=60).map(lambda raw: seal(raw).replace("=", "").replace("+", "-")),
        st.binary(max_size=60).map(lambda raw: " " + seal(raw) + "\n"),
        ODD_VALUES.filter(lambda value: not isinstance(value, str)),
    )


@st.composite
def outer_bodies(draw: st.DrawFn, fake: FakeFeishu) -> bytes:
    """Bodies that are no validly encrypted event."""
    how = draw(
        st.sampled_from(["bytes", "text", "json", "encrypt", "extra", "plain", "deep", "odd"])
    )
    if how == "bytes":
        return draw(st.binary(max_size=1024))
    if how == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if how == "json":
        return serialize(draw(JSON_VALUES), draw(st.sampled_from(["ascii", "compact"])))
    if how in ("encrypt", "extra"):
        document = {"encrypt": draw(encrypt_values())}
        if how == "extra":
            document.update(draw(st.dictionaries(st.text(max_size=10), ODD_VALUES, max_size=3)))
        return draw(garbled(serialize(document, draw(st.sampled_from(["ascii", "compact"])))))
    if how == "plain":  # a real event, not encrypted
        return draw(garbled(compact(REAL_EVENTS[draw(st.sampled_from(sorted(REAL_EVENTS)))](fake))))
    if how == "deep":
        inner = raw_json(draw(st.sampled_from("[{9")), draw(st.integers(2, 200_000)))
        return draw(st.sampled_from([inner, b'{"encrypt":' + inner + b"}"]))
    return serialize({"encrypt": draw(ODD_VALUES)}, "ascii")


def header_lines(values: dict[str, list[bytes]], case: Callable[[str], str]) -> Headers:
    return [(case(name).encode(), value) for name, options in values.items() for value in options]


@st.composite
def signature_headers(draw: st.DrawFn, body: bytes) -> tuple[Headers, bool]:
    """The three ``X-Lark-*`` headers of ``body``: each missing, repeated, forged or garbage
    (text, or bytes that are no UTF-8). True when each header's first value is the valid one
    (the bridge reads the first of repeated headers, so then it may accept)."""
    stamp = str(int(time.time()))
    valid = {
        STAMP: stamp.encode(),
        NONCE: b"fuzz-nonce",
        SIGNATURE: signature(stamp, "fuzz-nonce", ENCRYPT_KEY, body).encode(),
    }
    forged = {
        STAMP: [str(int(stamp) + 1).encode(), b"", b"abc", b"9" * 5000, "١٢٣".encode()],
        NONCE: [b"", b"other-nonce", b"fuzz-nonce "],
        SIGNATURE: [
            signature(stamp, "fuzz-nonce", "not-the-key", body).encode(),
            signature(stamp, "fuzz-nonce", ENCRYPT_KEY, body + b" ").encode(),
            valid[SIGNATURE].upper(),
            valid[SIGNATURE][:-1],
            b"sha256=" + valid[SIGNATURE],
            b"",
        ],
    }
    values: dict[str, list[bytes]] = {}
    for name in (STAMP, NONCE, SIGNATURE):
        option = st.one_of(
            st.just(valid[name]),
            st.sampled_from(forged[name]),
            HEADER_TEXT.map(str.encode),
            HEADER_BYTES,
            st.sampled_from([b"\xff", b"\xc3(", b"\xe9t\xe9", "\u00e9".encode()]),
        )
        values[name] = draw(st.lists(option, max_size=2), label=name)
    case = draw(st.sampled_from([str, str.lower, str.upper]))
    first_valid = all(values[name][:1] == [valid[name]] for name in valid)
    return header_lines(values, case), first_valid


# --- the fuzz tests --------------------------------------------------------------------------


@given(data=st.data())
@fuzz_settings(150)
async def test_bodies_that_are_no_encrypted_event_are_refused(
    endpoint: Endpoint, data: st.DataObject
) -> None:
    raw = data.draw(outer_bodies(endpoint.fake), label="body")
    if data.draw(st.booleans(), label="validly_signed"):
        headers = signed_headers(raw)
    else:
        headers, _ = data.draw(signature_headers(raw), label="headers")
    content_type = data.draw(
        st.sampled_from([b"application/json; charset=utf-8", b"text/plain", None]),
        label="content_type",
    )
    before, status = await endpoint.observe(endpoint.post(raw, headers, content_type=content_type))
    await check(endpoint, before, status, None)
    assert 400 <= status < 500


@given(data=st.data())
@fuzz_settings(150)
async def test_encrypted_signed_json_of_random_shapes(
    endpoint: Endpoint, data: st.DataObject
) -> None:
    plain = data.draw(
        st.one_of(
            envelope_shapes(endpoint.fake),
            envelope_shapes(endpoint.fake).flatmap(garbled),
            st.binary(max_size=512),
            st.integers(min_value=2, max_value=200_000).map(deep),
        ),
        label="plaintext",
    )
    before, status = await endpoint.observe(endpoint.post_event(plain))
    await check(endpoint, before, status, parsed(plain))


@given(data=st.data())
@fuzz_settings(250, shrink=False)
async def test_encrypted_signed_events_with_odd_fields(
    endpoint: Endpoint, data: st.DataObject
) -> None:
    plain = data.draw(event_variants(endpoint.fake), label="plaintext")
    before, status = await endpoint.observe(endpoint.post_event(plain))
    await check(endpoint, before, status, parsed(plain))


@given(data=st.data())
@fuzz_settings(100)
async def test_encrypted_signed_events_with_odd_ids(
    endpoint: Endpoint, data: st.DataObject
) -> None:
    plain = data.draw(id_variants(endpoint.fake), label="plaintext")
    before, status = await endpoint.observe(endpoint.post_event(plain))
    await check(endpoint, before, status, parsed(plain))


@given(data=st.data())
@fuzz_settings(120)
async def test_a_real_event_without_a_valid_signature_is_refused(
    endpoint: Endpoint, data: st.DataObject
) -> None:
    plain = compact(endpoint.fake.message_event(text="signed?"))
    body = sealed(plain)
    headers, first_valid = data.draw(signature_headers(body), label="headers")
    before, status = await endpoint.observe(endpoint.post(body, headers))
    await check(endpoint, before, status, json.loads(plain))
    if not first_valid:
        assert status == 401


# --- every crash the fuzzing found, fixed in channels/feishu -----------------------------------


def _message(fake: FakeFeishu, **fields: Any) -> dict[str, Any]:
    """A group mention of the bot (stored unless refused) with ``fields`` of its message."""
    event = fake.message_event(chat_type="group", text="found", mention_bot=True)
    event["event"]["message"].update(fields)
    return event


def _from(fake: FakeFeishu, open_id: str) -> dict[str, Any]:
    event = fake.message_event(text="found")
    event["event"]["sender"]["sender_id"]["open_id"] = open_id
    return event


def _post(fake: FakeFeishu, content: Any) -> dict[str, Any]:
    event = fake.message_event(post="found")
    event["event"]["message"]["content"] = json.dumps(content)
    return event


def _signed_by(header: str, value: bytes) -> Callable[[FakeFeishu], tuple[bytes, Headers]]:
    """A real event whose ``header`` is ``value`` (bytes that are no UTF-8)."""

    def build(fake: FakeFeishu) -> tuple[bytes, Headers]:
        body = sealed(compact(fake.message_event(text="found")))
        headers = [
            (name, value if name == header.encode() else old) for name, old in signed_headers(body)
        ]
        return body, headers

    return build


def _event(
    build: Callable[[FakeFeishu], dict[str, Any]],
) -> Callable[[FakeFeishu], tuple[bytes, Headers]]:
    """The event ``build`` makes, encrypted and signed (lone surrogates as JSON escapes)."""

    def sealed_and_signed(fake: FakeFeishu) -> tuple[bytes, Headers]:
        body = sealed(json.dumps(build(fake)).encode())
        return body, signed_headers(body)

    return sealed_and_signed


def _raw(body: bytes) -> Callable[[FakeFeishu], tuple[bytes, Headers]]:
    return lambda _fake: (body, signed_headers(body))


_NUL, _SURROGATE, _LONG = "\x00", "\ud800", "x" * 256
# The status each is answered with now; before the fix, each was a 500 (or stored an id no
# database keeps as it is: a NUL on SQLite, more than 255 characters on SQLite).
FOUND: dict[str, tuple[int, Callable[[FakeFeishu], tuple[bytes, Headers]]]] = {
    # FeishuChannel._open: signature_matches encoded the header values, which aiohttp hands on
    # with lone surrogates for bytes that are no UTF-8 (UnicodeEncodeError).
    "timestamp_not_utf8": (401, _signed_by(STAMP, b"\xff")),
    "nonce_not_utf8": (401, _signed_by(NONCE, b"n\xe9")),
    "signature_not_utf8": (401, _signed_by(SIGNATURE, b"\xc3(")),
    # _json_object and read_message: json.loads raises RecursionError on deep nesting.
    "body_nested_too_deep": (400, _raw(deep(100_000))),
    "encrypt_nested_too_deep": (400, _raw(b'{"encrypt":' + deep(100_000) + b"}")),
    "event_nested_too_deep": (400, _raw(sealed(deep(100_000)))),
    "content_nested_too_deep": (
        400,
        _event(lambda fake: _message(fake, content='{"text":' + deep(5000).decode() + "}")),
    ),
    # _flatten_post iterated a number, and joined a link's href that was no string.
    "post_paragraphs_a_number": (200, _event(lambda fake: _post(fake, {"zh_cn": {"content": 5}}))),
    "post_link_href_a_list": (
        200,
        _event(lambda fake: _post(fake, {"content": [[{"tag": "a", "href": [1]}]]})),
    ),
    "post_link_text_and_href_objects": (
        200,
        _event(
            lambda fake: _post(fake, {"content": [[{"tag": "a", "text": {}, "href": {"a": 1}}]]})
        ),
    ),
    # read_message: ids no database stores as they are (a 500 from the database, or stored).
    "message_id_with_nul": (400, _event(lambda fake: _message(fake, message_id="om_" + _NUL))),
    "message_id_surrogate": (400, _event(lambda fake: _message(fake, message_id=_SURROGATE))),
    "message_id_too_long": (400, _event(lambda fake: _message(fake, message_id=_LONG))),
    "chat_id_with_nul": (400, _event(lambda fake: _message(fake, chat_id="oc_" + _NUL))),
    "chat_id_surrogate": (400, _event(lambda fake: _message(fake, chat_id="oc_" + _SURROGATE))),
    "thread_id_with_nul": (400, _event(lambda fake: _message(fake, thread_id="omt_" + _NUL))),
    "thread_id_surrogate": (400, _event(lambda fake: _message(fake, thread_id=_SURROGATE))),
    "open_id_with_nul": (400, _event(lambda fake: _from(fake, "ou_" + _NUL))),
    "open_id_surrogate": (400, _event(lambda fake: _from(fake, "ou_" + _SURROGATE))),
    "open_id_too_long": (400, _event(lambda fake: _from(fake, _LONG))),
    # _on_membership: the same for the chat id, and the group name from the event (taken when
    # the chat's name cannot be looked up) is left out unless a column holds it as it is.
    "added_chat_id_with_nul": (400, _event(lambda fake: fake.bot_added_event("oc_" + _NUL, "x"))),
    "added_chat_id_surrogate": (400, _event(lambda fake: fake.bot_added_event(_SURROGATE, "x"))),
    "added_chat_id_too_long": (400, _event(lambda fake: fake.bot_added_event(_LONG, "x"))),
    "removed_chat_id_too_long": (400, _event(lambda fake: fake.bot_deleted_event(_LONG, "x"))),
    "added_name_with_nul": (200, _event(lambda fake: fake.bot_added_event("oc_n1", "a" + _NUL))),
    "added_name_surrogate": (200, _event(lambda fake: fake.bot_added_event("oc_n2", _SURROGATE))),
    "added_name_too_long": (200, _event(lambda fake: fake.bot_added_event("oc_n3", _LONG))),
}


async def test_what_the_fuzzing_found_is_refused_or_stored_as_said(endpoint: Endpoint) -> None:
    for case, (expected, build) in sorted(FOUND.items()):  # one bridge for all: they are many
        body, headers = build(endpoint.fake)
        before, status = await endpoint.observe(endpoint.post(body, headers))
        plain = body
        with contextlib.suppress(ValueError, RecursionError, KeyError, TypeError):
            plain = decrypt(ENCRYPT_KEY, json.loads(body)["encrypt"]).encode()
        await check(endpoint, before, status, parsed(plain))
        assert status == expected, case


async def test_real_events_still_get_through_after_fuzzing(endpoint: Endpoint) -> None:
    """After every crash case (and a refused forgery of the very same message), Feishu's own
    requests, byte for byte from the fake's pusher, are answered and stored."""
    for _expected, build in FOUND.values():
        await endpoint.post(*build(endpoint.fake))
    assert endpoint.new_problems() == []
    fake = endpoint.fake
    handshake = await fake.push(endpoint.url, fake.url_verification("after-the-fuzz"))
    assert handshake.status == 200 and handshake.json() == {"challenge": "after-the-fuzz"}
    event = fake.message_event(chat_type="group", text="@_user_1 a real mention", mention_bot=True)
    assert (await fake.push(endpoint.url, event, tamper_signature=True)).status == 401
    before = await endpoint.snapshot()
    pushed = await fake.push(endpoint.url, event)
    assert pushed.status == 200 and pushed.json() == {"msg": "success"}
    stored = (await endpoint.snapshot()).new_messages(before)
    message_id = event["event"]["message"]["message_id"]
    assert [row[1:3] for row in stored] == [(message_id, "a real mention")]
    async with asyncio.timeout(10):  # the echo agent answers it (after the found cases)
        while (reply := await fake.next_sent(timeout=10)).reply_to != message_id:
            pass
    assert reply.text == "a real mention"
    assert endpoint.new_problems() == []


# --- bodies beyond http.max_body_bytes ---------------------------------------------------------


async def test_ten_megabyte_bodies_get_413_and_store_nothing(endpoint: Endpoint) -> None:
    huge = sealed(compact(endpoint.fake.message_event(text="y" * (10 * MIB))))
    requests: list[tuple[bytes | AsyncIterator[bytes], Headers]] = [
        (b"\xff" * (10 * MIB), []),
        (huge, signed_headers(huge)),  # a real, validly encrypted and signed message
        (ten_megabytes(), []),  # chunked: no Content-Length to go by
    ]
    before = await endpoint.snapshot()
    for body, headers in requests:
        async with endpoint.http.post(
            endpoint.url,
            data=body,
            headers=[(name.decode(), value.decode()) for name, value in headers],
        ) as response:
            assert response.status == 413
        assert endpoint.new_problems() == []
        assert await endpoint.snapshot() == before


async def test_the_body_limit_is_kept_for_encrypted_events(
    database_url: str, fake_feishu: FakeFeishu, problems: Problems
) -> None:
    async with feishu_endpoint(
        database_url, fake_feishu, problems, max_body_bytes=4096
    ) as endpoint:
        over = sealed(compact(fake_feishu.message_event(text="o" * 3000)))
        under = sealed(compact(fake_feishu.message_event(text="u" * 1000)))
        await endpoint.assert_body_limit(endpoint.post_signed, over, under, 4096)
