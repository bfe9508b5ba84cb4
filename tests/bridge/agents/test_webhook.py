"""The webhook backend against a strict local fake agent that verifies every signature."""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bridge.agents.base import AgentError, AgentRequest, HistoryMessage
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
