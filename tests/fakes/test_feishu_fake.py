"""The Feishu fake speaks Feishu's protocol: its crypto matches the reference vectors, its Open
API is as strict as Feishu's, and its pushes arrive as Feishu's do.

If these pass, a bridge test against :class:`tests.fakes.feishu.FakeFeishu` meets the same
tokens, errors, idempotency and event deliveries the bridge would meet at Feishu. Plain
aiohttp clients and a tiny aiohttp endpoint stand in for the bridge.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from tests.fakes.feishu import (
    CODE_BOT_NOT_IN_CHAT,
    CODE_CHAT_NOT_FOUND,
    CODE_CONTENT_TOO_LONG,
    CODE_INVALID_PARAM,
    CODE_INVALID_PARAM_TYPE,
    CODE_MESSAGE_NOT_FOUND,
    CODE_MISSING_TOKEN,
    CODE_RATE_LIMITED,
    CODE_TOKEN_INVALID,
    CODE_USER_NO_AUTHORITY,
    DEFAULT_APP_ID,
    DEFAULT_APP_SECRET,
    DEFAULT_BOT_OPEN_ID,
    DEFAULT_ENCRYPT_KEY,
    DEFAULT_GROUP_CHAT_ID,
    DEFAULT_P2P_CHAT_ID,
    DEFAULT_USER_NAME,
    DEFAULT_USER_OPEN_ID,
    DEFAULT_VERIFICATION_TOKEN,
    MAX_TEXT_CONTENT_BYTES,
    FakeFeishu,
    decrypt,
    encrypt,
    signature,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HELLO_VECTOR = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="
CHALLENGE_PLAINTEXT = (
    '{"challenge":"ajls384kdjx98XX","token":"vt_test_token","type":"url_verification"}'
)
CHALLENGE_VECTOR = (
    "AAECAwQFBgcICQoLDA0OD2ORkdfpiyOntYnjwWD+86QBTOYgCV9I7TiY47XJgOT5mYWstmBw01X5NeF586UbKqsR"
    "+yAH4dOM9ix78+l1w5GkrX45Q9HW662c64PETLeaqZpqqUr6FzdBhcHfTKs2fA=="
)
SIGNATURE_VECTOR = "02c055540f5941d26720112001070ff62705bdb7d8f84edb5b775bf9d6179b39"
LIMIT = 10.0  # seconds any one test may take


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
async def feishu() -> AsyncIterator[FakeFeishu]:
    async with FakeFeishu(encrypt_key=DEFAULT_ENCRYPT_KEY) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Arrival:
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class Receiver:
    """The bridge's side of a push: records what arrives, answers as told."""

    url: str = ""
    arrivals: list[Arrival] = field(default_factory=list)
    status: int = 200
    delays: list[float] = field(default_factory=list)  # per arrival, in order

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(Arrival(CIMultiDict(request.headers), await request.read()))
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        return web.json_response({"msg": "success"}, status=self.status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    target = Receiver()
    app = web.Application()
    app.router.add_post("/feishu/{agent}/events", target.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    target.url = f"http://127.0.0.1:{runner.addresses[0][1]}/feishu/agent-1/events"
    yield target
    await runner.cleanup()


async def get_token(http: aiohttp.ClientSession, fake: FakeFeishu) -> str:
    url = f"{fake.base_url}/open-apis/auth/v3/tenant_access_token/internal"
    body = {"app_id": fake.app_id, "app_secret": fake.app_secret}
    async with http.post(url, json=body) as response:
        assert response.status == 200
        document = await response.json()
    return str(document["tenant_access_token"])


async def call(
    http: aiohttp.ClientSession,
    fake: FakeFeishu,
    method: str,
    path: str,
    token: str | None,
    body: Any = None,
) -> tuple[int, Any, CIMultiDict[str]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with http.request(
        method, f"{fake.base_url}/open-apis{path}", json=body, headers=headers
    ) as response:
        return response.status, await response.json(), CIMultiDict(response.headers)


def text_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"msg_type": "text", "content": json.dumps({"text": text}), **extra}


def key_shape(value: Any) -> Any:
    """The nested keys of a document, for comparing payload shapes with the fixtures."""
    if isinstance(value, dict):
        return {key: key_shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [key_shape(item) for item in value[:1]]
    return type(value).__name__


# --- crypto --------------------------------------------------------------------------------


def test_reference_vectors() -> None:
    assert decrypt("test key", HELLO_VECTOR) == "hello world"
    assert encrypt(DEFAULT_ENCRYPT_KEY, CHALLENGE_PLAINTEXT, iv=bytes(range(16))) == (
        CHALLENGE_VECTOR
    )
    assert decrypt(DEFAULT_ENCRYPT_KEY, CHALLENGE_VECTOR) == CHALLENGE_PLAINTEXT


def test_signature_vector_over_exact_bytes() -> None:
    compact = json.dumps({"encrypt": CHALLENGE_VECTOR}, separators=(",", ":")).encode()
    assert signature("1716900000", "abc123", DEFAULT_ENCRYPT_KEY, compact) == SIGNATURE_VECTOR
    spaced = json.dumps({"encrypt": CHALLENGE_VECTOR}).encode()
    assert signature("1716900000", "abc123", DEFAULT_ENCRYPT_KEY, spaced) != SIGNATURE_VECTOR


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 32, 100])
def test_encrypt_decrypt_round_trip(size: int) -> None:
    plaintext = ("é" * size)[:size] if size % 2 else "x" * size
    value = encrypt("some key", plaintext)
    raw = base64.b64decode(value)
    assert len(raw) % 16 == 0 and len(raw) >= 32
    assert decrypt("some key", value) == plaintext
    assert encrypt("some key", plaintext) != value  # a random IV each time


def test_decrypt_refuses_malformed_values() -> None:
    with pytest.raises(ValueError):
        decrypt(DEFAULT_ENCRYPT_KEY, base64.b64encode(bytes(16)).decode())  # IV only
    with pytest.raises(ValueError):
        decrypt(DEFAULT_ENCRYPT_KEY, base64.b64encode(bytes(40)).decode())  # partial block
    with pytest.raises(ValueError):
        decrypt("another key", CHALLENGE_VECTOR)  # garbage padding under the wrong key


# --- tokens --------------------------------------------------------------------------------


async def test_token_issue_expiry_and_invalid_token(http: aiohttp.ClientSession) -> None:
    async with asyncio.timeout(LIMIT), FakeFeishu(token_lifetime_seconds=0.3) as fake:
        url = f"{fake.base_url}/open-apis/auth/v3/tenant_access_token/internal"
        async with http.post(url, json={"app_id": DEFAULT_APP_ID, "app_secret": "nope"}) as r:
            assert r.status == 400
            assert await r.json() == {"code": 10014, "msg": "app secret invalid"}
        async with http.post(
            url, json={"app_id": DEFAULT_APP_ID, "app_secret": DEFAULT_APP_SECRET}
        ) as r:
            document = await r.json()
        assert r.status == 200 and document["code"] == 0 and document["msg"] == "ok"
        assert "data" not in document  # the token fields are at the top level
        token = document["tenant_access_token"]
        assert token.startswith("t-") and document["expire"] == 1  # 0.3 s, rounded up

        status, info, _ = await call(http, fake, "GET", "/bot/v3/info", token)
        assert status == 200 and info["bot"]["open_id"] == DEFAULT_BOT_OPEN_ID
        assert info["bot"]["activate_status"] == 2

        status, missing, _ = await call(http, fake, "GET", "/bot/v3/info", None)
        assert status == 400 and missing["code"] == CODE_MISSING_TOKEN
        status, unknown, _ = await call(http, fake, "GET", "/bot/v3/info", "t-forged")
        assert status == 400
        assert unknown == {
            "code": CODE_TOKEN_INVALID,
            "msg": "Invalid access token for authorization.",
        }

        await asyncio.sleep(0.4)
        status, expired, _ = await call(http, fake, "GET", "/bot/v3/info", token)
        assert status == 400 and expired["code"] == CODE_TOKEN_INVALID
        fresh = await get_token(http, fake)
        assert fresh != token and fake.tokens_issued == 2 and fake.token_requests == 3


async def test_token_is_reused_until_the_refresh_window_and_expire_all(
    http: aiohttp.ClientSession, feishu: FakeFeishu
) -> None:
    async with asyncio.timeout(LIMIT):
        first = await get_token(http, feishu)
        assert await get_token(http, feishu) == first  # > 30 min left: the same token
        assert feishu.tokens_issued == 1 and feishu.token_requests == 2
        feishu.expire_all_tokens()
        status, refused, _ = await call(http, feishu, "GET", "/bot/v3/info", first)
        assert status == 400 and refused["code"] == CODE_TOKEN_INVALID
        second = await get_token(http, feishu)
        assert second != first and feishu.tokens_issued == 2
        status, _, _ = await call(http, feishu, "GET", "/bot/v3/info", second)
        assert status == 200


# --- the Open API --------------------------------------------------------------------------


async def test_send_answers_a_full_message_and_records_it(
    http: aiohttp.ClientSession, feishu: FakeFeishu
) -> None:
    async with asyncio.timeout(LIMIT):
        token = await get_token(http, feishu)
        body = {"receive_id": DEFAULT_GROUP_CHAT_ID, **text_body("hello")}
        status, document, headers = await call(
            http, feishu, "POST", "/im/v1/messages?receive_id_type=chat_id", token, body
        )
        assert status == 200 and document["code"] == 0 and document["msg"] == "success"
        assert headers["Content-Type"] == "application/json; charset=utf-8"
        message = document["data"]
        assert message["message_id"].startswith("om_")
        assert message["chat_id"] == DEFAULT_GROUP_CHAT_ID and message["msg_type"] == "text"
        assert message["sender"] == {
            "id": DEFAULT_APP_ID,
            "id_type": "app_id",
            "sender_type": "app",
            "tenant_key": feishu.tenant_key,
        }
        assert message["body"] == {"content": '{"text": "hello"}'}
        assert message["deleted"] is False and message["create_time"].isdigit()
        sent = await feishu.next_sent(timeout=1)
        assert sent.text == "hello" and sent.message_id == message["message_id"]
        assert sent.kind == "send" and sent.receive_id_type == "chat_id"
        assert feishu.requests[-1].query == {"receive_id_type": "chat_id"}
        assert feishu.requests[-1].headers["Authorization"] == f"Bearer {token}"

        to_user = {"receive_id": DEFAULT_USER_OPEN_ID, **text_body("hi in DM")}
        status, document, _ = await call(
            http, feishu, "POST", "/im/v1/messages?receive_id_type=open_id", token, to_user
        )
        assert status == 200 and document["data"]["chat_id"] == DEFAULT_P2P_CHAT_ID


async def test_content_must_be_a_json_string_within_limits(
    http: aiohttp.ClientSession, feishu: FakeFeishu
) -> None:
    async with asyncio.timeout(LIMIT):
        token = await get_token(http, feishu)
        path = "/im/v1/messages?receive_id_type=chat_id"

        async def send(body: dict[str, Any]) -> tuple[int, Any]:
            status, document, _ = await call(
                http, feishu, "POST", path, token, {"receive_id": DEFAULT_GROUP_CHAT_ID, **body}
            )
            return status, document

        status, nested = await send({"msg_type": "text", "content": {"text": "hi"}})
        assert status == 400 and nested["code"] == CODE_INVALID_PARAM_TYPE
        status, no_text = await send({"msg_type": "text", "content": '{"txt": "hi"}'})
        assert status == 400 and no_text["code"] == CODE_INVALID_PARAM
        status, not_json = await send({"msg_type": "text", "content": "hi"})
        assert status == 400 and not_json["code"] == CODE_INVALID_PARAM
        status, too_long = await send(text_body("x" * MAX_TEXT_CONTENT_BYTES))
        assert status == 400 and too_long["code"] == CODE_CONTENT_TOO_LONG
        status, ok = await send(text_body("x" * (MAX_TEXT_CONTENT_BYTES - 20)))
        assert status == 200 and ok["code"] == 0
        status, _ = await send({"msg_type": "post", "content": '{"zh_cn": {"title": "t"}}'})
        assert status == 400

        status, no_type, _ = await call(
            http, feishu, "POST", "/im/v1/messages", token, {"receive_id": "x", **text_body("a")}
        )
        assert status == 400 and no_type["code"] == 99992402
        assert len(feishu.sent) == 1


async def test_uuid_repeat_returns_the_original_and_creates_nothing(
    http: aiohttp.ClientSession, feishu: FakeFeishu
) -> None:
    async with asyncio.timeout(LIMIT):
        token = await get_token(http, feishu)
        body = {"receive_id": DEFAULT_GROUP_CHAT_ID, **text_body("once", uuid="delivery-42")}
        path = "/im/v1/messages?receive_id_type=chat_id"
        _, first, _ = await call(http, feishu, "POST", path, token, body)
        _, again, _ = await call(http, feishu, "POST", path, token, body)
        assert again["data"] == first["data"]
        assert len(feishu.sent) == 1
        assert feishu.uuid_hits == [
            {
                "uuid": "delivery-42",
                "message_id": first["data"]["message_id"],
                "path": "/open-apis/im/v1/messages",
            }
        ]
        await feishu.next_sent(timeout=1)
        await feishu.expect_nothing_sent(0.1)


async def test_reply_in_thread_gives_a_thread_id(
    http: aiohttp.ClientSession, feishu: FakeFeishu
) -> None:
    async with asyncio.timeout(LIMIT):
        token = await get_token(http, feishu)
        event = feishu.message_event(chat_type="group", text="question", mention_bot=True)
        feishu.remember(event)
        parent_id = event["event"]["message"]["message_id"]

        _, plain, _ = await call(
            http, feishu, "POST", f"/im/v1/messages/{parent_id}/reply", token, text_body("a")
        )
        assert plain["data"]["parent_id"] == parent_id and plain["data"]["root_id"] == parent_id
        assert "thread_id" not in plain["data"]

        threaded_body = text_body("b", reply_in_thread=True)
        _, threaded, _ = await call(
            http, feishu, "POST", f"/im/v1/messages/{parent_id}/reply", token, threaded_body
        )
        thread_id = threaded["data"]["thread_id"]
        assert thread_id.startswith("omt_")
        assert feishu.message(parent_id)["thread_id"] == thread_id

        # A reply to a message in a thread stays in it, reply_in_thread or not.
        child = threaded["data"]["message_id"]
        _, nested, _ = await call(
            http, feishu, "POST", f"/im/v1/messages/{child}/reply", token, text_body("c")
        )
        assert nested["data"]["thread_id"] == thread_id
        assert nested["data"]["root_id"] == parent_id

        status, missing, _ = await call(
            http, feishu, "POST", "/im/v1/messages/om_unknown/reply", token, text_body("d")
        )
        assert status == 400 and missing["code"] == CODE_MESSAGE_NOT_FOUND
        assert [sent.reply_in_thread for sent in feishu.sent] == [False, True, False]


async def test_at_tags_in_text_are_accepted_and_listed_as_mentions(
    http: aiohttp.ClientSession, feishu: FakeFeishu
) -> None:
    """A reply that mentions another bot (``<at user_id="ou_…">``) is a valid text message;
    the created message lists the mentions, named by the tag or else by the known user."""
    async with asyncio.timeout(LIMIT):
        token = await get_token(http, feishu)
        event = feishu.message_event(chat_type="group", text="who knows?", mention_bot=True)
        feishu.remember(event)
        parent_id = event["event"]["message"]["message_id"]
        text = (
            'ask <at user_id="ou_peer_bot">reviewer</at> and '
            f'<at user_id="{DEFAULT_USER_OPEN_ID}"></at>, cc <at user_id="all"></at>'
        )
        status, document, _ = await call(
            http, feishu, "POST", f"/im/v1/messages/{parent_id}/reply", token, text_body(text)
        )
        assert status == 200 and document["code"] == 0
        listed = [(m["key"], m["id"], m["name"]) for m in document["data"]["mentions"]]
        assert listed == [
            ("@_user_1", "ou_peer_bot", "reviewer"),
            ("@_user_2", DEFAULT_USER_OPEN_ID, DEFAULT_USER_NAME),
        ]
        sent = await feishu.next_sent(timeout=1)
        assert sent.text == text
        assert sent.mentions == [
            ("ou_peer_bot", "reviewer"),
            (DEFAULT_USER_OPEN_ID, DEFAULT_USER_NAME),
        ]
        assert feishu.message(sent.message_id)["mentions"] == document["data"]["mentions"]


async def test_rate_limit_fault_shapes(http: aiohttp.ClientSession, feishu: FakeFeishu) -> None:
    async with asyncio.timeout(LIMIT):
        token = await get_token(http, feishu)
        path = "/im/v1/messages?receive_id_type=chat_id"
        body = {"receive_id": DEFAULT_GROUP_CHAT_ID, **text_body("hi")}
        feishu.rate_limit_next(1, reset_seconds=2)
        status, document, headers = await call(http, feishu, "POST", path, token, body)
        assert status == 400
        assert document == {"code": CODE_RATE_LIMITED, "msg": "request trigger frequency limit"}
        assert headers["x-ogw-ratelimit-limit"] == "50"
        assert headers["x-ogw-ratelimit-reset"] == "2"
        assert feishu.sent == []

        feishu.rate_limit_next(1, http_status=429, reset_seconds=0.5)
        status, document, headers = await call(http, feishu, "POST", path, token, body)
        assert status == 429 and headers["Retry-After"] == "1"
        assert headers["x-ogw-ratelimit-reset"] == "0.5"

        status, document, _ = await call(http, feishu, "POST", path, token, body)
        assert status == 200 and len(feishu.sent) == 1


async def test_failures_drops_and_delays(http: aiohttp.ClientSession, feishu: FakeFeishu) -> None:
    async with asyncio.timeout(LIMIT):
        token = await get_token(http, feishu)
        url = f"{feishu.base_url}/open-apis/im/v1/messages?receive_id_type=chat_id"
        headers = {"Authorization": f"Bearer {token}"}
        body = {"receive_id": DEFAULT_GROUP_CHAT_ID, **text_body("hi", uuid="u-1")}

        feishu.fail_next_sends(1, status=502)
        async with http.post(url, json=body, headers=headers) as response:
            assert response.status == 502 and response.content_type == "text/html"
        assert feishu.sent == []

        feishu.drop_next_sends(1)
        with pytest.raises(aiohttp.ClientError):
            async with http.post(url, json=body, headers=headers) as response:
                await response.read()
        assert len(feishu.sent) == 1  # it landed; the answer was lost
        async with http.post(url, json=body, headers=headers) as response:
            document = await response.json()
        assert document["data"]["message_id"] == feishu.sent[0].message_id
        assert len(feishu.uuid_hits) == 1

        feishu.send_delay_seconds = 0.3
        loop = asyncio.get_running_loop()
        started = loop.time()
        retry = {"receive_id": DEFAULT_GROUP_CHAT_ID, **text_body("slow")}
        async with http.post(url, json=retry, headers=headers) as response:
            assert response.status == 200
        assert loop.time() - started >= 0.3


async def test_the_shared_fault_verbs_reach_sends_and_stay_strict(
    http: aiohttp.ClientSession, feishu: FakeFeishu
) -> None:
    """The verbs of ``tests.fakes.base.FakePlatform`` script the same failures as the older
    Feishu names, the next ``count`` sends only; a kind Feishu cannot answer is refused."""
    async with asyncio.timeout(LIMIT):
        token = await get_token(http, feishu)
        url = f"{feishu.base_url}/open-apis/im/v1/messages?receive_id_type=chat_id"
        headers = {"Authorization": f"Bearer {token}"}
        body = {"receive_id": DEFAULT_GROUP_CHAT_ID, **text_body("hi")}

        feishu.fail_next(2, 503)
        feishu.rate_limit_next(1, retry_after=3, status=429)
        statuses = []
        for _ in range(4):
            async with http.post(url, json=body, headers=headers) as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert response.headers["x-ogw-ratelimit-reset"] == "3"
                    assert response.headers["Retry-After"] == "3"
                    assert (await response.json())["code"] == 99991400
        assert statuses == [503, 503, 429, 200]
        assert len(feishu.sent) == 1

        with pytest.raises(ValueError, match="cannot inject a 'error' fault"):
            feishu.error_next(1)
        feishu.delay_next(1, 0.3)  # answered normally, late
        started = asyncio.get_running_loop().time()
        async with http.post(url, json=body, headers=headers) as response:
            assert response.status == 200
        assert asyncio.get_running_loop().time() - started >= 0.3
        assert len(feishu.sent) == 2


async def test_chats_users_and_catch_all(http: aiohttp.ClientSession, feishu: FakeFeishu) -> None:
    async with asyncio.timeout(LIMIT):
        token = await get_token(http, feishu)
        status, chat, _ = await call(
            http, feishu, "GET", f"/im/v1/chats/{DEFAULT_GROUP_CHAT_ID}", token
        )
        assert status == 200 and chat["data"]["name"] == "Team Standup"
        assert chat["data"]["chat_mode"] == "group" and chat["data"]["chat_type"] == "private"
        feishu.add_chat("oc_topic", "Topics", chat_mode="topic")
        status, topic, _ = await call(http, feishu, "GET", "/im/v1/chats/oc_topic", token)
        assert topic["data"]["chat_mode"] == "topic"
        status, unknown, _ = await call(http, feishu, "GET", "/im/v1/chats/oc_nope", token)
        assert status == 400 and unknown["code"] == CODE_CHAT_NOT_FOUND

        _, sent, _ = await call(
            http,
            feishu,
            "POST",
            "/im/v1/messages?receive_id_type=chat_id",
            token,
            {"receive_id": "oc_topic", **text_body("new topic")},
        )
        assert sent["data"]["thread_id"].startswith("omt_")  # a topic chat threads every post

        feishu.add_user("ou_bob", "Bob")
        path = "/contact/v3/users/ou_bob?user_id_type=open_id"
        status, user, _ = await call(http, feishu, "GET", path, token)
        assert status == 200 and user["data"]["user"]["name"] == "Bob"
        assert user["data"]["user"]["open_id"] == "ou_bob"
        path = "/contact/v3/users/ou_ghost?user_id_type=open_id"
        status, ghost, _ = await call(http, feishu, "GET", path, token)
        assert status == 400 and ghost["code"] == CODE_USER_NO_AUTHORITY

        status, lost, _ = await call(http, feishu, "GET", "/im/v1/nothing/here", token)
        assert status == 404 and lost == {"code": 404, "msg": "not found"}
        assert feishu.requests[-1].path == "/open-apis/im/v1/nothing/here"
        assert feishu.requests[-1].status == 404


# --- event builders ------------------------------------------------------------------------


def test_builders_match_the_fixture_shapes() -> None:
    fake = FakeFeishu()
    group = json.loads((FIXTURES / "feishu_group_message_at_bot.json").read_text())
    built = fake.message_event(
        chat_type="group", text="please summarise today's standup", mention_bot=True
    )
    assert key_shape(built) == key_shape(group)
    assert built["event"]["message"]["content"] == group["event"]["message"]["content"]
    assert (
        built["event"]["message"]["mentions"][0]["id"]
        == (group["event"]["message"]["mentions"][0]["id"])
    )
    assert built["header"]["token"] == DEFAULT_VERIFICATION_TOKEN
    assert built["header"]["create_time"].isdigit()

    p2p = json.loads((FIXTURES / "feishu_p2p_message.json").read_text())
    assert key_shape(fake.message_event(text="hi")) == key_shape(p2p)
    added = json.loads((FIXTURES / "feishu_bot_added_to_group.json").read_text())
    built_added = fake.bot_added_event(DEFAULT_GROUP_CHAT_ID, "Team Standup")
    assert key_shape(built_added) == key_shape(added)
    assert built_added["event"]["operator_id"] == added["event"]["operator_id"]


def test_message_event_mentions_and_kinds() -> None:
    fake = FakeFeishu()
    event = fake.message_event(
        chat_type="group",
        text="ask @_user_1 about it",
        mentions=[("@_user_1", "ou_bob", "Bob")],
        mention_bot=True,
        thread_id="omt_1",
    )
    message = event["event"]["message"]
    assert json.loads(message["content"]) == {"text": "@_user_2 ask @_user_1 about it"}
    assert [(m["key"], m["id"]["open_id"]) for m in message["mentions"]] == [
        ("@_user_2", DEFAULT_BOT_OPEN_ID),
        ("@_user_1", "ou_bob"),
    ]
    assert message["thread_id"] == "omt_1"
    image = fake.message_event(image_key="img_v2_1")["event"]["message"]
    assert image["message_type"] == "image" and json.loads(image["content"]) == {
        "image_key": "img_v2_1"
    }
    post = fake.message_event(post="hi", mention_bot=True)["event"]["message"]
    assert post["message_type"] == "post"
    assert json.loads(post["content"])["content"][0][0] == {
        "tag": "at",
        "user_id": "@_user_1",
        "user_name": fake.bot_name,
    }
    bot = fake.message_event(sender_type="app", text="echo")["event"]["sender"]
    assert bot["sender_type"] == "app"
    with pytest.raises(ValueError):
        fake.message_event(text="a", image_key="b")


# --- the pusher ----------------------------------------------------------------------------


async def test_encrypted_push_is_signed_and_decrypts_to_the_event(
    feishu: FakeFeishu, receiver: Receiver
) -> None:
    async with asyncio.timeout(LIMIT):
        event = feishu.message_event(chat_type="group", text="hi", mention_bot=True)
        result = await feishu.push(receiver.url, event)
        assert result.status == 200 and result.json() == {"msg": "success"}
        assert result.event_id == event["header"]["event_id"] and result.elapsed >= 0
        assert feishu.pushes == [result]

        (arrival,) = receiver.arrivals
        assert (
            arrival.body
            == json.dumps(
                {"encrypt": json.loads(arrival.body)["encrypt"]}, separators=(",", ":")
            ).encode()
        )
        stamp = arrival.headers["X-Lark-Request-Timestamp"]
        nonce = arrival.headers["X-Lark-Request-Nonce"]
        assert stamp.isdigit() and nonce
        assert arrival.headers["X-Lark-Signature"] == signature(
            stamp, nonce, DEFAULT_ENCRYPT_KEY, arrival.body
        )
        decrypted = decrypt(DEFAULT_ENCRYPT_KEY, json.loads(arrival.body)["encrypt"])
        assert json.loads(decrypted) == event

        tampered = await feishu.push(receiver.url, event, tamper_signature=True)
        assert tampered.status == 200
        last = receiver.arrivals[-1]
        assert last.headers["X-Lark-Signature"] != signature(
            last.headers["X-Lark-Request-Timestamp"],
            last.headers["X-Lark-Request-Nonce"],
            DEFAULT_ENCRYPT_KEY,
            last.body,
        )


async def test_url_verification_is_never_signed(feishu: FakeFeishu, receiver: Receiver) -> None:
    async with asyncio.timeout(LIMIT):
        handshake = feishu.url_verification("ajls384kdj")
        assert handshake == {
            "challenge": "ajls384kdj",
            "token": DEFAULT_VERIFICATION_TOKEN,
            "type": "url_verification",
        }
        await feishu.push(receiver.url, handshake)
        await feishu.push(receiver.url, handshake, encrypt=False)
        encrypted, plain = receiver.arrivals
        for arrival in (encrypted, plain):
            assert not any(name.lower().startswith("x-lark-") for name in arrival.headers)
        value = json.loads(encrypted.body)["encrypt"]
        assert json.loads(decrypt(DEFAULT_ENCRYPT_KEY, value)) == handshake
        assert json.loads(plain.body) == handshake


async def test_plain_mode_sends_plain_unsigned_json(receiver: Receiver) -> None:
    async with asyncio.timeout(LIMIT), FakeFeishu() as fake:
        event = fake.message_event(text="hi", event_id="evt-fixed")
        result = await fake.push(receiver.url, event, verification_token="wrong")
        assert result.ok
        (arrival,) = receiver.arrivals
        assert "X-Lark-Signature" not in arrival.headers
        received = json.loads(arrival.body)
        assert received["header"]["event_id"] == "evt-fixed"
        assert received["header"]["token"] == "wrong"
        assert received["event"] == event["event"]
        with pytest.raises(ValueError):
            await fake.push(receiver.url, event, encrypt=True)


async def test_pushed_events_change_the_fake(
    http: aiohttp.ClientSession, feishu: FakeFeishu, receiver: Receiver
) -> None:
    async with asyncio.timeout(LIMIT):
        token = await get_token(http, feishu)
        await feishu.push(receiver.url, feishu.bot_added_event("oc_new", "New Group"))
        assert feishu.chat("oc_new").name == "New Group"
        event = feishu.message_event(chat_id="oc_new", chat_type="group", mention_bot=True)
        await feishu.push(receiver.url, event)
        message_id = event["event"]["message"]["message_id"]
        status, _, _ = await call(
            http, feishu, "POST", f"/im/v1/messages/{message_id}/reply", token, text_body("ok")
        )
        assert status == 200

        await feishu.push(receiver.url, feishu.bot_deleted_event("oc_new"))
        status, refused, _ = await call(
            http,
            feishu,
            "POST",
            "/im/v1/messages?receive_id_type=chat_id",
            token,
            {"receive_id": "oc_new", **text_body("still here?")},
        )
        assert status == 400 and refused["code"] == CODE_BOT_NOT_IN_CHAT


async def test_redelivery_resends_the_identical_request(
    feishu: FakeFeishu, receiver: Receiver
) -> None:
    async with asyncio.timeout(LIMIT):
        receiver.status = 500
        first = await feishu.push(receiver.url, feishu.message_event(text="hi"))
        assert first.status == 500 and not first.ok
        receiver.status = 200
        again = await feishu.redeliver(receiver.url, first)
        assert again.ok and again.attempt == 1 and again.event_id == first.event_id
        one, two = receiver.arrivals
        assert one.body == two.body
        assert one.headers["X-Lark-Signature"] == two.headers["X-Lark-Signature"]


async def test_push_with_redelivery_after_a_slow_answer(
    feishu: FakeFeishu, receiver: Receiver
) -> None:
    async with asyncio.timeout(LIMIT):
        receiver.delays = [1.0]  # the first answer comes after the deadline
        event = feishu.message_event(text="slow")
        results = await feishu.push_with_redelivery(
            receiver.url, event, deadline_seconds=0.3, retry_after_seconds=(0.05, 0.05)
        )
        assert [result.status for result in results] == [0, 200]
        assert results[0].error == "timeout" and 0.3 <= results[0].elapsed < 1.0
        assert {result.event_id for result in results} == {event["header"]["event_id"]}
        assert len(receiver.arrivals) == 2
        assert receiver.arrivals[0].body == receiver.arrivals[1].body
        assert feishu.pushes == results


async def test_push_to_a_closed_port_reports_no_answer(feishu: FakeFeishu) -> None:
    async with asyncio.timeout(LIMIT):
        result = await feishu.push("http://127.0.0.1:9/feishu/x/events", feishu.url_verification())
        assert result.status == 0 and result.error is not None
        assert result.error.startswith("connection_failed")
