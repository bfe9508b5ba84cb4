"""The Slack fake is strict and speaks Slack's protocol: proven with the real slack_sdk and Bolt.

If these pass, a service test that runs against :class:`tests.fakes.slack.FakeSlack` exercises
the same requests, errors and event deliveries the service would meet at Slack.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.say.async_say import AsyncSay
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import (
    DEFAULT_BOT_USER_ID,
    FakeSlack,
    app_mention,
    bot_message,
    message,
    message_changed,
    message_deleted,
    new_ts,
    sign,
    url_verification,
)

BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-test-app-token"
SECRET = "slack-signing-secret"
CHANNEL = "C0CHAN0001"
DELIVERY = {"event_type": "bridge_delivery", "event_payload": {"delivery_id": "d-42"}}


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=BOT_TOKEN, signing_secret=SECRET, app_token=APP_TOKEN) as fake:
        fake.add_channel(CHANNEL, "general")
        yield fake


@pytest.fixture
async def client(slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    web_client = AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url, retry_handlers=[])
    yield web_client
    if web_client.session is not None:
        await web_client.session.close()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Serves a handler at ``/slack/events`` on a free port: the service side of a push."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/slack/events", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/slack/events"

    yield start
    for runner in runners:
        await runner.cleanup()


# --- signing and factories -----------------------------------------------------------------


def test_sign_matches_the_slack_docs_test_vector() -> None:
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
        b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
        b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com"
        b"%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    assert (
        sign("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body)
        == "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    )


# The golden payloads of the shared reference (§5), minus the values that are random in the
# factories (client_msg_id, block ids).
MENTION_IN_THREAD_FIXTURE: dict[str, Any] = {
    "token": "XXYYZZ",
    "team_id": "T0TEAM0001",
    "context_team_id": "T0TEAM0001",
    "context_enterprise_id": None,
    "api_app_id": "A0APP00001",
    "event": {
        "type": "app_mention",
        "user": "U0HUMAN001",
        "text": "<@U0BOT00001> can you summarise this thread?",
        "ts": "1716900123.456789",
        "thread_ts": "1716900000.000100",
        "parent_user_id": "U0HUMAN002",
        "team": "T0TEAM0001",
        "channel": "C0CHAN0001",
        "event_ts": "1716900123.456789",
        "blocks": [
            {
                "type": "rich_text",
                "elements": [
                    {
                        "type": "rich_text_section",
                        "elements": [
                            {"type": "user", "user_id": "U0BOT00001"},
                            {"type": "text", "text": " can you summarise this thread?"},
                        ],
                    }
                ],
            }
        ],
    },
    "type": "event_callback",
    "event_id": "Ev07ABCDEF12",
    "event_time": 1716900123,
    "authorizations": [
        {
            "enterprise_id": None,
            "team_id": "T0TEAM0001",
            "user_id": "U0BOT00001",
            "is_bot": True,
            "is_enterprise_install": False,
        }
    ],
    "is_ext_shared_channel": False,
    "event_context": "4-eyJldCI6ImFwcF9tZW50aW9uIiwidGlkIjoiVDBURUFNMDAwMSIsImFpZCI6IkEwQVBQMD"
    "AwMDEiLCJjaWQiOiJDMENIQU4wMDAxIn0",
}
DM_EVENT_FIXTURE: dict[str, Any] = {
    "type": "message",
    "user": "U0HUMAN001",
    "text": "hello bot, what's the status of ticket 42?",
    "ts": "1716900200.000200",
    "team": "T0TEAM0001",
    "channel": "D0DM000001",
    "event_ts": "1716900200.000200",
    "channel_type": "im",
    "blocks": [
        {
            "type": "rich_text",
            "elements": [
                {
                    "type": "rich_text_section",
                    "elements": [
                        {"type": "text", "text": "hello bot, what's the status of ticket 42?"}
                    ],
                }
            ],
        }
    ],
}
BOT_EVENT_FIXTURE: dict[str, Any] = {
    "type": "message",
    "subtype": "bot_message",
    "text": "echo: hello",
    "ts": "1716900300.000300",
    "bot_id": "B0OTHER001",
    "app_id": "A0OTHERAPP",
    "username": "otherbot",
    "channel": "C0CHAN0001",
    "event_ts": "1716900300.000300",
    "channel_type": "channel",
}


def _without_random(event: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(event))
    copy.pop("client_msg_id", None)
    for block in copy.get("blocks", []):
        block.pop("block_id")
    return copy


def test_factories_reproduce_the_golden_payloads() -> None:
    mention = app_mention(
        text="<@U0BOT00001> can you summarise this thread?",
        ts="1716900123.456789",
        thread_ts="1716900000.000100",
        parent_user_id="U0HUMAN002",
        event_id="Ev07ABCDEF12",
    )
    assert list(mention) == list(MENTION_IN_THREAD_FIXTURE)
    assert list(mention["event"]) == [
        "type", "user", "text", "ts", "thread_ts", "parent_user_id", "client_msg_id",
        "team", "channel", "event_ts", "blocks",
    ]  # fmt: skip
    assert mention["event"]["client_msg_id"]
    assert {**mention, "event": _without_random(mention["event"])} == MENTION_IN_THREAD_FIXTURE

    dm = message(
        channel="D0DM000001",
        text="hello bot, what's the status of ticket 42?",
        ts="1716900200.000200",
        event_id="Ev07ABCDEF34",
    )
    assert _without_random(dm["event"]) == DM_EVENT_FIXTURE
    assert dm["event_context"].startswith("4-")

    bot = message(text="echo: hello", ts="1716900300.000300", bot_id="B0OTHER001")
    assert bot["event"] == BOT_EVENT_FIXTURE
    assert bot_message(text="echo: hello", ts="1716900300.000300")["event"] == BOT_EVENT_FIXTURE


def test_factories_cover_channel_kinds_edits_and_deletions() -> None:
    first, second = message(), message()
    assert first["event_id"] != second["event_id"]
    assert float(first["event"]["ts"]) < float(second["event"]["ts"])
    assert first["event_time"] == int(float(first["event"]["ts"]))
    assert "channel_type" not in app_mention()["event"]
    assert app_mention(text="hi")["event"]["text"] == f"<@{DEFAULT_BOT_USER_ID}> hi"
    assert message(channel="G0PRIV0001", channel_type="group")["event"]["channel_type"] == "group"
    assert message(channel="C0MPIM0001", channel_type="mpim")["event"]["channel_type"] == "mpim"
    with pytest.raises(ValueError, match="DM"):
        message(channel="C0CHAN0001", channel_type="im")

    reply = message(thread_ts="1716900000.000100")["event"]
    assert reply["thread_ts"] == "1716900000.000100"
    assert reply["parent_user_id"] == reply["user"]

    own = bot_message(user=DEFAULT_BOT_USER_ID, bot_id="B0BOT00001", subtype=None)["event"]
    assert "subtype" not in own
    assert own["user"] == DEFAULT_BOT_USER_ID

    changed = message_changed(ts="1716900000.000100", text="new", previous_text="old")["event"]
    assert changed["subtype"] == "message_changed"
    assert changed["hidden"] is True
    assert changed["message"]["text"] == "new"
    assert changed["message"]["ts"] == "1716900000.000100"
    assert changed["message"]["edited"]["user"] == changed["message"]["user"]
    assert changed["previous_message"]["text"] == "old"
    assert changed["channel_type"] == "channel"

    deleted = message_deleted(ts="1716900000.000100", channel="D0DM000001")["event"]
    assert deleted["subtype"] == "message_deleted"
    assert deleted["deleted_ts"] == "1716900000.000100"
    assert deleted["hidden"] is True
    assert deleted["channel_type"] == "im"
    assert deleted["previous_message"]["ts"] == "1716900000.000100"

    challenge = url_verification("abc")
    assert challenge == {"token": "XXYYZZ", "challenge": "abc", "type": "url_verification"}


# --- Web API -------------------------------------------------------------------------------


async def test_auth_test_answers_the_bot_identity(slack: FakeSlack, client: AsyncWebClient) -> None:
    response = await client.auth_test()

    assert response["user_id"] == "U0BOT00001"
    assert response["bot_id"] == "B0BOT00001"
    assert response["team_id"] == "T0TEAM0001"
    assert response["is_enterprise_install"] is False
    assert response.headers["x-oauth-scopes"]
    (call,) = slack.calls_to("auth.test")
    assert call.verb == "POST"
    assert call.headers["Authorization"] == f"Bearer {BOT_TOKEN}"


async def test_post_message_is_stored_returned_and_queued(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    response = await client.chat_postMessage(
        channel=CHANNEL, text="hello", thread_ts="1716900000.000100", metadata=DELIVERY
    )

    assert response["channel"] == CHANNEL
    assert response["message"]["text"] == "hello"
    assert response["message"]["bot_id"] == "B0BOT00001"
    assert response["message"]["metadata"] == DELIVERY
    post = await slack.next_post(timeout=1)
    assert post["ts"] == response["ts"]
    assert post["thread_ts"] == "1716900000.000100"
    assert post["thread_known"] is False  # accepted anyway, as Slack does
    assert post["metadata"] == DELIVERY
    assert slack.posts == [post]
    (call,) = slack.calls_to("chat.postMessage")
    assert call.verb == "POST"
    assert call.headers["Content-Type"].startswith("application/json")
    assert call.json["channel"] == CHANNEL


async def test_form_encoded_posts_and_dm_channels_are_accepted(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    await client.api_call(
        "chat.postMessage",
        data={"channel": "D0DM000009", "text": "hi", "metadata": json.dumps(DELIVERY)},
    )

    post = await slack.next_post(timeout=1)
    assert post["channel"] == "D0DM000009"
    assert post["metadata"] == DELIVERY
    info = await client.conversations_info(channel="D0DM000009")
    assert info["channel"]["is_im"] is True
    assert "name" not in info["channel"]


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"channel": CHANNEL}, "no_text"),
        ({"channel": CHANNEL, "text": ""}, "no_text"),
        ({"channel": "C0UNKNOWN1", "text": "hi"}, "channel_not_found"),
        ({"channel": CHANNEL, "text": "x" * 40_001}, "msg_too_long"),
        (
            {"channel": CHANNEL, "text": "hi", "metadata": {"event_type": 1}},
            "invalid_metadata_format",
        ),
    ],
)
async def test_post_message_refuses_what_slack_refuses(
    slack: FakeSlack, client: AsyncWebClient, arguments: dict[str, Any], error: str
) -> None:
    with pytest.raises(SlackApiError) as raised:
        await client.api_call("chat.postMessage", json=arguments)

    assert raised.value.response.status_code == 200
    assert raised.value.response["error"] == error
    assert slack.posts == []
    assert slack.calls_to("chat.postMessage")[0].error == error


async def test_exactly_40000_characters_are_accepted(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    await client.chat_postMessage(channel=CHANNEL, text="x" * 40_000)
    assert len(slack.posts) == 1


async def test_every_call_needs_the_right_token(slack: FakeSlack) -> None:
    cases = [
        (AsyncWebClient(token="xoxb-wrong", base_url=slack.api_url), "invalid_auth"),
        (AsyncWebClient(base_url=slack.api_url), "not_authed"),
        (AsyncWebClient(token=APP_TOKEN, base_url=slack.api_url), "not_allowed_token_type"),
    ]
    for web_client, error in cases:
        with pytest.raises(SlackApiError) as raised:
            await web_client.chat_postMessage(channel=CHANNEL, text="hi")
        assert raised.value.response["error"] == error
        assert raised.value.response.status_code == 200
    with pytest.raises(SlackApiError) as raised:
        await cases[2][0].apps_connections_open(app_token=BOT_TOKEN)
    assert raised.value.response["error"] == "not_allowed_token_type"
    assert slack.posts == []
    assert len(slack.calls) == 4


async def test_rate_limit_answers_429_with_retry_after(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.rate_limit_next(1, retry_after=7)

    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel=CHANNEL, text="hi")

    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "7"
    assert raised.value.response["error"] == "ratelimited"
    assert slack.posts == []
    await client.chat_postMessage(channel=CHANNEL, text="hi")
    assert len(slack.posts) == 1


async def test_scripted_failures_errors_and_delays(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.fail_next(1, status=503)
    slack.error_next(1, error="not_in_channel")
    slack.delay_next(1, 0.3)

    with pytest.raises(SlackApiError) as failed:
        await client.chat_postMessage(channel=CHANNEL, text="one")
    assert failed.value.response.status_code == 503
    with pytest.raises(SlackApiError) as refused:
        await client.chat_postMessage(channel=CHANNEL, text="two")
    assert refused.value.response["error"] == "not_in_channel"
    started = time.monotonic()
    await client.chat_postMessage(channel=CHANNEL, text="three")
    assert time.monotonic() - started >= 0.3
    assert [post["text"] for post in slack.posts] == ["three"]


async def test_a_dropped_answer_still_leaves_the_post_in_the_channel(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.accept_then_drop_next(1)

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.chat_postMessage(channel=CHANNEL, text="in doubt", metadata=DELIVERY)

    assert (await slack.next_post(timeout=1))["text"] == "in doubt"
    history = await client.conversations_history(channel=CHANNEL, include_all_metadata=True)
    assert [item["metadata"] for item in history["messages"]] == [DELIVERY]


async def test_replies_and_history_include_metadata_only_when_asked(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    parent = slack.add_message(CHANNEL, text="question")
    await client.chat_postMessage(channel=CHANNEL, text="first", thread_ts=parent["ts"])
    await client.chat_postMessage(
        channel=CHANNEL, text="second", thread_ts=parent["ts"], metadata=DELIVERY
    )
    await client.chat_postMessage(channel=CHANNEL, text="top level")

    plain = await client.conversations_replies(channel=CHANNEL, ts=parent["ts"])
    assert [item["text"] for item in plain["messages"]] == ["question", "first", "second"]
    assert all("metadata" not in item for item in plain["messages"])
    assert plain["messages"][0]["reply_count"] == 2

    rich = await client.conversations_replies(
        channel=CHANNEL, ts=parent["ts"], include_all_metadata=True
    )
    assert [item.get("metadata") for item in rich["messages"]] == [None, None, DELIVERY]
    assert rich["messages"][2]["bot_id"] == "B0BOT00001"
    (call,) = slack.calls_to("conversations.replies")[1:]
    assert call.verb == "GET"
    assert call.query["include_all_metadata"] == "1"

    history = await client.conversations_history(channel=CHANNEL)
    assert [item["text"] for item in history["messages"]] == ["top level", "question"]

    pages = [
        [item["text"] for item in page["messages"]]
        async for page in await client.conversations_replies(
            channel=CHANNEL, ts=parent["ts"], limit=2
        )
    ]
    assert pages == [["question", "first"], ["second"]]

    with pytest.raises(SlackApiError) as raised:
        await client.conversations_replies(channel=CHANNEL, ts=new_ts())
    assert raised.value.response["error"] == "thread_not_found"


async def test_users_and_conversations_info_are_served_and_counted(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.add_user("U0HUMAN001", "alice", "Alice A.")
    slack.add_channel("G0PRIV0001", "secret", is_private=True)

    user = await client.users_info(user="U0HUMAN001")
    assert user["user"]["name"] == "alice"
    assert user["user"]["profile"]["display_name"] == "Alice A."
    channel = await client.conversations_info(channel=CHANNEL)
    assert channel["channel"]["name"] == "general"
    assert channel["channel"]["is_channel"] is True
    assert channel["channel"]["is_private"] is False
    private = await client.conversations_info(channel="G0PRIV0001")
    assert private["channel"]["is_private"] is True
    for method, arguments, error in [
        ("users.info", {"user": "U0NOBODY01"}, "user_not_found"),
        ("conversations.info", {"channel": "C0NOWHERE1"}, "channel_not_found"),
    ]:
        with pytest.raises(SlackApiError) as raised:
            await client.api_call(method, http_verb="GET", params=arguments)
        assert raised.value.response["error"] == error

    assert len(slack.calls_to("users.info")) == 2
    assert len(slack.calls_to("conversations.info")) == 3
    assert {call.verb for call in slack.calls_to("users.info")} == {"GET"}


async def test_unknown_methods_are_refused_and_recorded(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    with pytest.raises(SlackApiError) as raised:
        await client.api_call("chat.teleport", json={"channel": CHANNEL})

    assert raised.value.response["error"] == "unknown_method"
    assert [call.method for call in slack.calls] == ["chat.teleport"]


async def test_pushed_events_change_the_channel_as_they_would_at_slack(
    slack: FakeSlack, client: AsyncWebClient, serve: Callable[[Handler], Awaitable[str]]
) -> None:
    async def service(request: web.Request) -> web.Response:
        return web.Response(status=200)

    url = await serve(service)
    typed = message(channel="C0ELSE0001", text="typo")
    ts = typed["event"]["ts"]

    await slack.push_event(url, typed)
    await slack.push_event(
        url, message_changed(channel="C0ELSE0001", ts=ts, text="fixed", previous_text="typo")
    )
    assert [item["text"] for item in slack.messages("C0ELSE0001")] == ["fixed"]
    info = await client.conversations_info(channel="C0ELSE0001")
    assert info["channel"]["is_channel"] is True  # known since an event came from it
    await slack.push_event(url, message_deleted(channel="C0ELSE0001", ts=ts))
    assert slack.messages("C0ELSE0001") == []


# --- Socket Mode ---------------------------------------------------------------------------


async def test_socket_mode_client_connects_receives_and_acks(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    socket_client = SocketModeClient(app_token=APP_TOKEN, web_client=client, ping_interval=1)
    received: list[SocketModeRequest] = []

    async def on_request(sm: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        received.append(request)
        await sm.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))

    socket_client.socket_mode_request_listeners.append(on_request)
    try:
        await socket_client.connect()  # type: ignore[no-untyped-call]  # untyped in the SDK
        await slack.wait_socket_connected(timeout=5)
        body = app_mention(text="hi")
        envelope_id = await slack.push_socket_event(body, retry_attempt=1)

        ack = await slack.wait_ack(envelope_id, timeout=5)
        assert ack == {"envelope_id": envelope_id}
        (request,) = received
        assert request.type == "events_api"
        assert request.payload == body
        assert request.retry_attempt == 1
        (opened,) = slack.calls_to("apps.connections.open")
        assert opened.verb == "POST"
        assert opened.headers["Authorization"] == f"Bearer {APP_TOKEN}"

        await slack.send_disconnect()
        await slack.wait_socket_connected(timeout=5, connections=2)
        assert len(slack.calls_to("apps.connections.open")) == 2
        second = await slack.push_socket_event(app_mention(text="again"))
        assert (await slack.wait_ack(second, timeout=5))["envelope_id"] == second
    finally:
        await socket_client.close()  # type: ignore[no-untyped-call]


# --- event delivery ------------------------------------------------------------------------


async def test_pushed_signatures_verify_only_with_the_right_secret(
    slack: FakeSlack, serve: Callable[[Handler], Awaitable[str]]
) -> None:
    verifier = SignatureVerifier(SECRET)
    seen: list[bool] = []

    async def service(request: web.Request) -> web.Response:
        seen.append(verifier.is_valid_request(await request.read(), dict(request.headers)))
        return web.Response(status=200 if seen[-1] else 401)

    url = await serve(service)
    body = message(text="héllo ✓")

    good = await slack.push_event(url, body)
    wrong = await slack.push_event(url, body, secret="not-the-secret")
    stale = await slack.push_event(url, body, timestamp=int(time.time()) - 301)
    raw = await slack.push_event(url, body, raw_signature="v0=00")

    assert seen == [True, False, False, False]
    assert [good.status, wrong.status, stale.status, raw.status] == [200, 401, 401, 401]
    assert good.request_body == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    assert good.request_headers["Content-Type"] == "application/json"
    assert "X-Slack-Retry-Num" not in good.request_headers


async def test_deliver_redelivers_until_a_timely_2xx(
    slack: FakeSlack, serve: Callable[[Handler], Awaitable[str]]
) -> None:
    attempts: list[dict[str, str]] = []

    async def service(request: web.Request) -> web.Response:
        attempts.append(dict(request.headers))
        if len(attempts) == 1:
            await asyncio.sleep(0.5)  # too slow for the deadline
        if len(attempts) == 2:
            return web.Response(status=500)
        return web.Response(status=200)

    url = await serve(service)
    body = message()

    results = await slack.deliver(url, body, deadline=0.2)

    assert [result.status for result in results] == [0, 500, 200]
    assert [result.retry_num for result in results] == [None, 1, 2]
    assert results[0].error == "http_timeout"
    assert "X-Slack-Retry-Num" not in attempts[0]
    assert (attempts[1]["X-Slack-Retry-Num"], attempts[1]["X-Slack-Retry-Reason"]) == (
        "1",
        "http_timeout",
    )
    assert (attempts[2]["X-Slack-Retry-Num"], attempts[2]["X-Slack-Retry-Reason"]) == (
        "2",
        "http_error",
    )
    assert len({result.request_body for result in results}) == 1


async def test_deliver_gives_up_after_max_retries_or_no_retry(
    slack: FakeSlack, serve: Callable[[Handler], Awaitable[str]]
) -> None:
    async def failing(request: web.Request) -> web.Response:
        return web.Response(status=500)

    async def refusing(request: web.Request) -> web.Response:
        return web.Response(status=400, headers={"X-Slack-No-Retry": "1"})

    assert len(await slack.deliver(await serve(failing), message(), max_retries=3)) == 4
    assert len(await slack.deliver(await serve(refusing), message())) == 1


async def test_real_bolt_app_verifies_pushes_and_replies_through_the_fake(
    slack: FakeSlack, serve: Callable[[Handler], Awaitable[str]]
) -> None:
    bolt_client = AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url, retry_handlers=[])
    bolt = AsyncApp(client=bolt_client, signing_secret=SECRET)

    @bolt.event("app_mention")
    async def on_mention(event: dict[str, Any], say: AsyncSay) -> None:
        await say(text="on it", thread_ts=event.get("thread_ts") or event["ts"])

    async def service(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    url = await serve(service)

    challenge = await slack.push_event(url, url_verification("c-123"))
    assert challenge.json() == {"challenge": "c-123"}
    forged = await slack.push_event(url, app_mention(), secret="forged")
    assert forged.status == 401
    assert slack.calls == []

    mention = app_mention(thread_ts="1716900000.000100")
    (result,) = await slack.deliver(url, mention)
    assert result.status == 200
    post = await slack.next_post(timeout=5)
    assert (post["channel"], post["thread_ts"], post["text"]) == (
        CHANNEL,
        "1716900000.000100",
        "on it",
    )
    assert post["params"]["team_id"] == "T0TEAM0001"  # Bolt's per-request default param
    assert len(slack.calls_to("auth.test")) == 1
    # The pushed mention is now a message of the channel, as it would be at Slack.
    assert mention["event"]["ts"] in [item["ts"] for item in slack.messages(CHANNEL)]
    if bolt_client.session is not None:
        await bolt_client.session.close()


# --- several bots in one workspace ---------------------------------------------------------

OTHER_TOKEN = "xoxb-other-bot-token"
OTHER_SECRET = "other-signing-secret"
OTHER_USER = "U0BOT00002"
OTHER_BOT = "B0BOT00002"
OTHER_APP = "A0APP00002"


@pytest.fixture
async def other_client(slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    """A second app's client: its bot is installed in the same workspace."""
    slack.add_bot(
        bot_token=OTHER_TOKEN,
        bot_user_id=OTHER_USER,
        bot_id=OTHER_BOT,
        app_id=OTHER_APP,
        name="planner",
        signing_secret=OTHER_SECRET,
    )
    web_client = AsyncWebClient(token=OTHER_TOKEN, base_url=slack.api_url, retry_handlers=[])
    yield web_client
    if web_client.session is not None:
        await web_client.session.close()


async def test_auth_test_answers_each_token_with_its_own_bot(
    slack: FakeSlack, client: AsyncWebClient, other_client: AsyncWebClient
) -> None:
    first, second = await client.auth_test(), await other_client.auth_test()

    assert (first["user_id"], first["bot_id"]) == ("U0BOT00001", "B0BOT00001")
    assert (second["user_id"], second["bot_id"]) == (OTHER_USER, OTHER_BOT)
    assert second["team_id"] == first["team_id"] == "T0TEAM0001"
    assert second["user"] == "planner-bot"
    assert [bot.user_id for bot in slack.bots] == ["U0BOT00001", OTHER_USER]
    assert slack.bot(OTHER_TOKEN) == slack.bot(OTHER_USER) == slack.bot(OTHER_APP)
    assert slack.bot(OTHER_TOKEN).signing_secret == OTHER_SECRET
    assert slack.bot(BOT_TOKEN).signing_secret == SECRET


async def test_posts_are_attributed_to_the_bot_whose_token_made_them(
    slack: FakeSlack, client: AsyncWebClient, other_client: AsyncWebClient
) -> None:
    mine = await client.chat_postMessage(channel=CHANNEL, text="first", metadata=DELIVERY)
    theirs = await other_client.chat_postMessage(channel=CHANNEL, text="<@U0BOT00001> second")

    assert theirs["message"]["bot_id"] == OTHER_BOT
    assert theirs["message"]["bot_profile"]["app_id"] == OTHER_APP
    assert theirs["message"]["bot_profile"]["name"] == "planner"
    first, second = await slack.next_post(timeout=1), await slack.next_post(timeout=1)
    assert (first["token"], first["user"], first["bot_id"], first["app_id"]) == (
        BOT_TOKEN,
        "U0BOT00001",
        "B0BOT00001",
        "A0APP00001",
    )
    assert (second["token"], second["user"], second["bot_id"], second["app_id"]) == (
        OTHER_TOKEN,
        OTHER_USER,
        OTHER_BOT,
        OTHER_APP,
    )
    assert slack.posts == [first, second]
    # Either bot finds its own posts in the history by bot_id (the in-doubt lookup's filter).
    history = await other_client.conversations_history(channel=CHANNEL, include_all_metadata=True)
    by_bot = {item["bot_id"]: item for item in history["messages"]}
    assert by_bot["B0BOT00001"]["ts"] == mine["ts"]
    assert by_bot["B0BOT00001"]["metadata"] == DELIVERY
    assert by_bot[OTHER_BOT]["ts"] == theirs["ts"]
    assert by_bot[OTHER_BOT]["user"] == OTHER_USER
    thread = await other_client.chat_postMessage(channel=CHANNEL, text="re", thread_ts=mine["ts"])
    replies = await client.conversations_replies(channel=CHANNEL, ts=mine["ts"])
    assert [(m["ts"], m["bot_id"]) for m in replies["messages"]] == [
        (mine["ts"], "B0BOT00001"),
        (thread["ts"], OTHER_BOT),
    ]
    assert replies["messages"][0]["reply_users"] == [OTHER_USER]


async def test_concurrent_calls_of_two_bots_keep_their_own_identity(
    slack: FakeSlack, client: AsyncWebClient, other_client: AsyncWebClient
) -> None:
    slack.delay_next(1, 0.3)  # whichever post comes first waits while the other is served

    mine, theirs = await asyncio.gather(
        client.chat_postMessage(channel=CHANNEL, text="slow"),
        other_client.chat_postMessage(channel=CHANNEL, text="fast"),
    )

    assert (mine["message"]["bot_id"], theirs["message"]["bot_id"]) == ("B0BOT00001", OTHER_BOT)
    assert {post["text"]: post["token"] for post in slack.posts} == {
        "slow": BOT_TOKEN,
        "fast": OTHER_TOKEN,
    }


async def test_unknown_and_wrong_kind_tokens_are_refused_with_several_bots(
    slack: FakeSlack, other_client: AsyncWebClient
) -> None:
    cases = [
        (AsyncWebClient(token="xoxb-unknown", base_url=slack.api_url), "invalid_auth"),
        (AsyncWebClient(token=APP_TOKEN, base_url=slack.api_url), "not_allowed_token_type"),
    ]
    for web_client, error in cases:
        with pytest.raises(SlackApiError) as raised:
            await web_client.auth_test()
        assert raised.value.response["error"] == error
    with pytest.raises(SlackApiError) as raised:
        await other_client.apps_connections_open(app_token=OTHER_TOKEN)
    assert raised.value.response["error"] == "not_allowed_token_type"
    assert slack.posts == []


def test_add_bot_refuses_a_clash_with_a_known_bot(slack: FakeSlack) -> None:
    taken = {"bot_token": BOT_TOKEN, "bot_user_id": DEFAULT_BOT_USER_ID}
    for field_name, value in taken.items():
        identity = {
            "bot_token": "xoxb-new",
            "bot_user_id": "U0NEW00001",
            "bot_id": "B0NEW00001",
            "app_id": "A0NEW00001",
        }
        identity[field_name] = value
        with pytest.raises(ValueError, match=field_name):
            slack.add_bot(**identity)
    assert len(slack.bots) == 1


async def test_users_info_knows_the_bot_users(
    slack: FakeSlack, client: AsyncWebClient, other_client: AsyncWebClient
) -> None:
    user = (await client.users_info(user=OTHER_USER))["user"]

    assert (user["is_bot"], user["name"], user["profile"]["bot_id"]) == (
        True,
        "planner",
        OTHER_BOT,
    )


async def test_a_bots_mention_reaches_the_other_app_through_real_bolt(
    slack: FakeSlack,
    client: AsyncWebClient,
    other_client: AsyncWebClient,
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    """The first bot mentions the second; the second app's Bolt, with its own token and
    signing secret, hears it and answers as itself."""
    bolt_client = AsyncWebClient(token=OTHER_TOKEN, base_url=slack.api_url, retry_handlers=[])
    bolt = AsyncApp(client=bolt_client, signing_secret=OTHER_SECRET)
    heard: list[dict[str, Any]] = []

    @bolt.event("app_mention")
    async def on_mention(event: dict[str, Any], say: AsyncSay) -> None:
        heard.append(event)
        await say(text="handing back", thread_ts=event["ts"])

    async def service(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    url = await serve(service)
    await client.chat_postMessage(channel=CHANNEL, text=f"<@{OTHER_USER}> your turn")
    handoff = await slack.next_post(timeout=1)
    envelope = slack.event_for_post(handoff, to=OTHER_TOKEN)

    assert envelope["api_app_id"] == OTHER_APP
    assert envelope["authorizations"][0]["user_id"] == OTHER_USER
    event = envelope["event"]
    assert (event["type"], event["user"], event["bot_id"], event["text"]) == (
        "app_mention",
        "U0BOT00001",
        "B0BOT00001",
        f"<@{OTHER_USER}> your turn",
    )
    assert "subtype" not in event and "thread_ts" not in event
    as_message = slack.event_for_post(handoff, to=OTHER_USER, event_type="message")
    assert as_message["event"]["channel_type"] == "channel"
    assert (await slack.push_event(url, envelope)).status == 401  # the fake's secret
    (result,) = await slack.deliver(url, envelope, secret=OTHER_SECRET)
    assert result.status == 200
    answer = await slack.next_post(timeout=5)
    assert [item["ts"] for item in heard] == [handoff["ts"]]
    assert (answer["token"], answer["user"], answer["thread_ts"]) == (
        OTHER_TOKEN,
        OTHER_USER,
        handoff["ts"],
    )
    assert [call.headers["Authorization"] for call in slack.calls_to("auth.test")] == [
        f"Bearer {OTHER_TOKEN}"
    ]
    if bolt_client.session is not None:
        await bolt_client.session.close()


# --- live replies: streams, edits, reactions, status, tiers --------------------------------


async def _api_error(call: Awaitable[Any]) -> str:
    with pytest.raises(SlackApiError) as refused:
        await call
    return str(refused.value.response["error"])


async def test_streams_follow_their_state_machine(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.add_user("U0HUMAN001", "ada")
    root = slack.add_message(CHANNEL, text="question")["ts"]
    start = {"channel": CHANNEL, "thread_ts": root, "recipient_team_id": slack.team_id}
    assert await _api_error(client.chat_startStream(**start)) == "missing_recipient_user_id"
    start["recipient_user_id"] = "U0HUMAN001"
    del start["recipient_team_id"]
    assert await _api_error(client.chat_startStream(**start)) == "missing_recipient_team_id"
    start["recipient_team_id"] = slack.team_id
    too_long = "x" * 12_001
    assert await _api_error(client.chat_startStream(**start, markdown_text=too_long)) == (
        "msg_too_long"
    )
    ts = (await client.chat_startStream(**start, markdown_text="Hel"))["ts"]
    assert slack.streams == {(CHANNEL, ts): "streaming"}
    await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="lo")
    # slack_sdk's helper sends chunks instead of markdown_text: both are text.
    await client.chat_appendStream(
        channel=CHANNEL, ts=ts, chunks=[{"type": "markdown_text", "text": " there"}]
    )
    update = client.chat_update(channel=CHANNEL, ts=ts, text="edited")
    assert await _api_error(update) == "streaming_state_conflict"
    await client.chat_stopStream(channel=CHANNEL, ts=ts, markdown_text="!")
    assert slack.streams == {(CHANNEL, ts): "stopped"}
    [streamed] = [m for m in slack.messages(CHANNEL) if m["ts"] == ts]
    assert (streamed["text"], streamed["thread_ts"]) == ("Hello there!", root)
    append = client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="more")
    assert await _api_error(append) == "message_not_in_streaming_state"
    stop = client.chat_stopStream(channel=CHANNEL, ts=ts)
    assert await _api_error(stop) == "message_not_in_streaming_state"
    unknown = client.chat_appendStream(channel=CHANNEL, ts="1.000001", markdown_text="x")
    assert await _api_error(unknown) == "message_not_found"


async def test_update_checks_length_blocks_and_owner_and_history_shows_it(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    ts = (await client.chat_postMessage(channel=CHANNEL, text="first"))["ts"]
    long_update = client.chat_update(channel=CHANNEL, ts=ts, text="x" * 4001)
    assert await _api_error(long_update) == "msg_too_long"
    big_block = [{"type": "markdown", "text": "y" * 12_001}]
    too_big = client.chat_update(channel=CHANNEL, ts=ts, text="ok", blocks=big_block)
    assert await _api_error(too_big) == "msg_blocks_too_long"
    human = slack.add_message(CHANNEL, text="mine")["ts"]
    foreign = client.chat_update(channel=CHANNEL, ts=human, text="hijack")
    assert await _api_error(foreign) == "cant_update_message"
    gone = client.chat_update(channel=CHANNEL, ts="1.000001", text="x")
    assert await _api_error(gone) == "message_not_found"
    await client.chat_update(
        channel=CHANNEL,
        ts=ts,
        text="x" * 4000,
        blocks=[{"type": "markdown", "text": "**final**"}],
        metadata=DELIVERY,
    )
    history = await client.conversations_history(channel=CHANNEL, include_all_metadata=True)
    [final] = [m for m in history["messages"] if m["ts"] == ts]
    assert final["text"] == "x" * 4000
    assert final["blocks"] == [{"type": "markdown", "text": "**final**"}]
    assert final["metadata"] == DELIVERY
    await client.chat_delete(channel=CHANNEL, ts=ts)
    assert await _api_error(client.chat_delete(channel=CHANNEL, ts=ts)) == "message_not_found"


async def test_reactions_and_status_are_strict(slack: FakeSlack, client: AsyncWebClient) -> None:
    ts = slack.add_message(CHANNEL, text="hi")["ts"]
    await client.reactions_add(channel=CHANNEL, timestamp=ts, name="eyes")
    again = client.reactions_add(channel=CHANNEL, timestamp=ts, name="eyes")
    assert await _api_error(again) == "already_reacted"
    odd = client.reactions_add(channel=CHANNEL, timestamp=ts, name="no_such_emoji")
    assert await _api_error(odd) == "invalid_name"
    assert slack.reactions_on(CHANNEL, ts) == {"eyes"}
    await client.reactions_remove(channel=CHANNEL, timestamp=ts, name="eyes")
    absent = client.reactions_remove(channel=CHANNEL, timestamp=ts, name="eyes")
    assert await _api_error(absent) == "no_reaction"
    nowhere = client.reactions_add(channel=CHANNEL, timestamp="1.000001", name="eyes")
    assert await _api_error(nowhere) == "message_not_found"
    await client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=ts, status="busy")
    assert slack.statuses == [{"channel_id": CHANNEL, "thread_ts": ts, "status": "busy"}]
    bad = client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts="1.0", status="x")
    assert await _api_error(bad) == "invalid_thread_ts"


async def test_tiers_throttle_with_retry_after_and_injection_works_on_new_methods(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    ts = (await client.chat_postMessage(channel=CHANNEL, text="a"))["ts"]
    slack.limit_rates({"chat.update": (2, 60.0)})
    await client.chat_update(channel=CHANNEL, ts=ts, text="b")
    await client.chat_update(channel=CHANNEL, ts=ts, text="c")
    with pytest.raises(SlackApiError) as throttled:
        await client.chat_update(channel=CHANNEL, ts=ts, text="d")
    assert throttled.value.response.status_code == 429
    assert throttled.value.response["error"] == "ratelimited"
    assert int(throttled.value.response.headers["Retry-After"]) >= 1
    assert [m["text"] for m in slack.messages(CHANNEL)] == ["c"]
    slack.error_next(1, "missing_scope", method="chat.startStream")
    start = client.chat_startStream(
        channel=CHANNEL, thread_ts=ts, recipient_team_id=slack.team_id, recipient_user_id="U1"
    )
    assert await _api_error(start) == "missing_scope"
    slack.rate_limit_next(1, retry_after=3, method="reactions.add")
    with pytest.raises(SlackApiError) as limited:
        await client.reactions_add(channel=CHANNEL, timestamp=ts, name="eyes")
    assert limited.value.response.headers["Retry-After"] == "3"
