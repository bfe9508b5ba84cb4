"""The webhook backend against a strict local fake agent that verifies every signature."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bridge.agents.base import UNUSABLE_ANSWER, AgentError, AgentRequest, HistoryMessage
from bridge.agents.http import BROKEN_ANSWER, MAX_LINE_BYTES, MAX_RESPONSE_BYTES
from bridge.agents.webhook import WebhookBackend, sign
from bridge.ports.events import Sender
from bridge.settings import WebhookBackendSettings
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.shared_agents import agent_request, collect

SECRET = "webhook-shared-secret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeWebhookAgent]:
    async with FakeWebhookAgent(secret=SECRET) as server:
        yield server


def make_backend(
    http: aiohttp.ClientSession, url: str, *, secret: str = SECRET, timeout_seconds: float = 5.0
) -> WebhookBackend:
    settings = WebhookBackendSettings(
        url=url, secret=SecretStr(secret), timeout_seconds=timeout_seconds
    )
    return WebhookBackend(settings=settings, http=http)


def make_request(**overrides: Any) -> AgentRequest:
    """A group chat on Slack with some history."""
    group_chat: dict[str, Any] = {
        "system_prompt": "Be brief.",
        "external_conv_id": "slack:T1:C1",
        "channel": "slack",
        "is_group": True,
        "group_name": "general",
        "sender": Sender(external_id="U42", display_name="Alice", kind="user"),
        "message_id": 99,
        "text": "ping ✓",
        "history": (
            HistoryMessage(role="user", content="earlier", sender_name="Bob"),
            HistoryMessage(role="assistant", content="noted"),
        ),
    }
    return agent_request(**{**group_chat, **overrides})


async def test_signed_body_carries_the_whole_request(
    fake: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    fake.add_reply("  pong  ")
    backend = make_backend(http, fake.url)

    assert await collect(backend, make_request()) == "pong"

    (recorded,) = fake.requests
    assert recorded.status == 200
    assert recorded.error is None
    assert recorded.json == {
        "agent": {"slug": "helper", "name": "Helper"},
        "session": {
            "id": 7,
            "external_conv_id": "slack:T1:C1",
            "channel": "slack",
            "is_group": True,
            "group_name": "general",
        },
        "sender": {"external_id": "U42", "display_name": "Alice", "kind": "user"},
        "message": {"id": 99, "text": "ping ✓"},
        "history": [
            {"role": "user", "content": "earlier", "sender_name": "Bob"},
            {"role": "assistant", "content": "noted", "sender_name": None},
        ],
        "system_prompt": "Be brief.",
    }
    timestamp = recorded.headers["X-Bridge-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    assert recorded.headers["X-Bridge-Signature"] == sign(SECRET.encode(), timestamp, recorded.body)
    assert recorded.headers["Content-Type"].startswith("application/json")


async def test_empty_history_and_direct_chat(
    fake: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    backend = make_backend(http, fake.url)
    request = make_request(is_group=False, group_name=None, history=(), text="hello")

    assert await collect(backend, request) == "echo: hello"
    assert fake.requests[0].json["history"] == []
    assert fake.requests[0].json["session"]["group_name"] is None


async def test_wrong_secret_is_refused_by_the_agent(
    fake: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    backend = make_backend(http, fake.url, secret="not-the-secret")

    with pytest.raises(AgentError, match="HTTP 401") as caught:
        await collect(backend, make_request())
    assert "not-the-secret" not in str(caught.value)
    assert fake.requests[0].error == "bad signature"


async def test_stale_timestamp_is_refused_by_the_agent(http: aiohttp.ClientSession) -> None:
    async with FakeWebhookAgent(secret=SECRET, clock=lambda: time.time() + 301) as fake:
        backend = make_backend(http, fake.url)

        with pytest.raises(AgentError, match="HTTP 401"):
            await collect(backend, make_request())
        assert fake.requests[0].error == "stale timestamp"


async def test_tampered_body_is_refused_by_the_agent(
    fake: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    timestamp = str(int(time.time()))
    body = b'{"message":{"id":1,"text":"hi"}}'
    headers = {
        "Content-Type": "application/json",
        "X-Bridge-Timestamp": timestamp,
        "X-Bridge-Signature": sign(SECRET.encode(), timestamp, body),
    }
    async with http.post(fake.url, data=body + b" ", headers=headers) as response:
        assert response.status == 401
    assert fake.requests[0].error == "bad signature"


async def test_server_error_is_an_agent_error_with_status_and_body(
    fake: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    fake.fail_next(status=503, error="agent is restarting")
    backend = make_backend(http, fake.url + "?token=hunter2")

    with pytest.raises(AgentError, match="HTTP 503") as caught:
        await collect(backend, make_request())
    assert "agent is restarting" in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_non_json_body_is_an_agent_error(
    fake: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    fake.garbage_next()
    backend = make_backend(http, fake.url)

    with pytest.raises(AgentError, match="not JSON"):
        await collect(backend, make_request())


@pytest.mark.parametrize(
    "document", [{"answer": "hi"}, {"reply": ""}, {"reply": "   "}, {"reply": 5}, ["hi"], None]
)
async def test_missing_or_unusable_reply_is_an_agent_error(
    fake: FakeWebhookAgent, http: aiohttp.ClientSession, document: Any
) -> None:
    fake.raw_next(document)
    backend = make_backend(http, fake.url)

    with pytest.raises(AgentError, match="reply"):
        await collect(backend, make_request())


async def test_slow_agent_is_an_agent_error(
    fake: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    fake.delay_seconds = 30
    backend = make_backend(http, fake.url, timeout_seconds=0.2)

    with pytest.raises(AgentError, match="no answer"):
        await collect(backend, make_request())


async def test_unreachable_agent_is_an_agent_error(http: aiohttp.ClientSession) -> None:
    async with FakeWebhookAgent(secret=SECRET) as gone:
        url = gone.url
    backend = make_backend(http, url)

    with pytest.raises(AgentError, match="failed"):
        await collect(backend, make_request())


def test_sign_matches_an_independent_hmac() -> None:
    secret, timestamp = b"top-secret", "1700000000"
    body = json.dumps({"message": {"id": 1, "text": "hi"}}, separators=(",", ":")).encode()

    # HMAC-SHA256 built by hand (RFC 2104), not through the hmac module.
    key = secret.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + f"{timestamp}.".encode() + body)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key) + inner.digest())

    assert sign(secret, timestamp, body) == f"sha256={outer.hexdigest()}"
    # The same vector from `openssl dgst -sha256 -hmac top-secret`.
    assert sign(secret, timestamp, body) == (
        "sha256=1d56181c0618c728dedc1bc5332b5df068ad831bdde07795390ba9cb28c8cb45"
    )


async def test_answer_is_an_async_generator_and_aclose_leaves_the_session_open(
    fake: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    backend = make_backend(http, fake.url)
    assert inspect.isasyncgenfunction(WebhookBackend.answer)

    await backend.aclose()

    assert not http.closed
    assert await collect(backend, make_request(text="x")) == "echo: x"


# --- streamed replies (NDJSON) ---------------------------------------------------------------


async def test_ndjson_deltas_are_yielded_as_they_arrive(
    fake: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    fake.release = asyncio.Event()
    fake.add_stream("Hel", "lo ", "world")
    answer = make_backend(http, fake.url).answer(make_request())

    # The fake holds the rest of the stream until the first delta has reached the test.
    first = await asyncio.wait_for(anext(answer), 5)
    (stream,) = fake.streams
    assert first == "Hel"
    assert stream.sent == 1
    fake.release.set()
    rest = [chunk async for chunk in answer]

    assert rest == ["lo", " world"]
    assert stream.sent == 4
    assert fake.requests[0].error is None


async def test_ndjson_with_pauses_and_blank_lines_joins_to_the_stripped_reply(
    fake: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    fake.add_lines(
        b'{"delta": "  "}',
        b'{"delta": " pong"}',
        b"",
        b'{"delta": " \\u2713 "}',
        b'{"delta": ""}',
        b'{"delta": "  "}',
        b'{"delta": "done\\n"}',
        b'{"done": true}',
        pause_seconds=0.01,
    )

    assert await collect(make_backend(http, fake.url), make_request()) == "pong ✓   done"


@pytest.mark.parametrize(
    ("script", "before_error", "detail", "reason"),
    [
        (
            {"deltas": ("a", "b", "c"), "cut": "abort", "cut_after": 2},
            ["a", "b"],
            "broke off",
            BROKEN_ANSWER,
        ),
        ({"deltas": ("a", "b"), "done": False}, ["a", "b"], "without", BROKEN_ANSWER),
        ({"deltas": ("a", "b"), "cut": "end", "cut_after": 1}, ["a"], "without", BROKEN_ANSWER),
        ({"lines": (b'{"delta": "a"}', b"{oops")}, ["a"], "not JSON", UNUSABLE_ANSWER),
        ({"lines": (b'{"delta": "a"}', b'{"text": "b"}')}, ["a"], "neither", UNUSABLE_ANSWER),
        ({"lines": (b'{"delta": 5}',)}, [], "neither", UNUSABLE_ANSWER),
        ({"lines": (b'{"done": false}',)}, [], "neither", UNUSABLE_ANSWER),
        ({"lines": (b'["a"]',)}, [], "neither", UNUSABLE_ANSWER),
        ({"lines": (b'{"delta": "  "}', b'{"done": true}')}, [], "empty", None),
    ],
)
async def test_a_broken_ndjson_stream_is_an_agent_error(
    fake: FakeWebhookAgent,
    http: aiohttp.ClientSession,
    script: dict[str, Any],
    before_error: list[str],
    detail: str,
    reason: str | None,
) -> None:
    if "lines" in script:
        fake.add_lines(*script.pop("lines"))
    else:
        fake.add_stream(*script.pop("deltas"), **script)
    chunks: list[str] = []

    with pytest.raises(AgentError, match=detail) as caught:
        async for chunk in make_backend(http, fake.url).answer(make_request()):
            chunks.append(chunk)

    assert chunks == before_error
    assert caught.value.reason == (reason or "the agent gave an empty answer")


async def test_an_ndjson_line_quoting_the_secret_is_shown_redacted(
    fake: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    fake.add_lines(f"oops, secret {SECRET}".encode())

    with pytest.raises(AgentError, match="not JSON") as caught:
        await collect(make_backend(http, fake.url), make_request())
    assert SECRET not in str(caught.value)


async def test_an_overlong_ndjson_line_is_an_agent_error(
    fake: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    fake.add_lines(b'{"delta": "' + b"x" * (MAX_LINE_BYTES + 1) + b'"}', b'{"done": true}')

    with pytest.raises(AgentError, match="longer than") as caught:
        await collect(make_backend(http, fake.url), make_request())
    assert caught.value.reason == UNUSABLE_ANSWER


async def test_an_oversized_ndjson_stream_is_an_agent_error(
    fake: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    line = json.dumps({"delta": "x" * 1000}).encode()
    fake.add_lines(*[line] * (MAX_RESPONSE_BYTES // len(line) + 2), b'{"done": true}')

    with pytest.raises(AgentError, match="larger than"):
        await collect(make_backend(http, fake.url), make_request())
