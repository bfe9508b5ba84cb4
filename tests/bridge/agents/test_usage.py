"""What an answer cost, as each backend records it on ``AgentRequest.usage`` (token budgets
and the usage API sum these): the ``openai`` backend from the API's ``usage``, the webhook
backend from an optional ``usage`` beside the reply or on the NDJSON done line."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bridge.agents.base import AgentError, AgentRequest, PeerAgent, UsageMeter
from bridge.agents.openai import OpenAIBackend
from bridge.agents.webhook import WebhookBackend
from bridge.settings import OpenAIBackendSettings, WebhookBackendSettings
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.shared_agents import agent_request, collect

KEY_ENV = "BRIDGE_TEST_USAGE_OPENAI_KEY"
API_KEY = "sk-usage-0123456789"
SECRET = "usage-webhook-secret"


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAIServer]:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    async with FakeOpenAIServer(api_key=API_KEY, expected_model="gpt-test") as server:
        yield server


@pytest.fixture
async def agent() -> AsyncIterator[FakeWebhookAgent]:
    async with FakeWebhookAgent(secret=SECRET) as server:
        yield server


def openai_backend(model: FakeOpenAIServer, http: aiohttp.ClientSession) -> OpenAIBackend:
    settings = OpenAIBackendSettings(base_url=model.url, model="gpt-test", api_key_env=KEY_ENV)
    return OpenAIBackend(settings=settings, http=http)


def webhook_backend(agent: FakeWebhookAgent, http: aiohttp.ClientSession) -> WebhookBackend:
    settings = WebhookBackendSettings(url=agent.url, secret=SecretStr(SECRET))
    return WebhookBackend(settings=settings, http=http)


def spent(request: AgentRequest) -> tuple[int, int, bool]:
    usage = request.usage
    return usage.input_tokens, usage.output_tokens, usage.reported


class Peers:
    """A peer that always answers, so the model can take a tool round."""

    peers = (PeerAgent(slug="bob", name="Bob"),)

    async def ask(self, *, agent: str, text: str) -> str:
        return f"{agent} says ok"


def test_the_meter_adds_up_and_never_goes_below_zero() -> None:
    meter = UsageMeter()
    assert (meter.input_tokens, meter.output_tokens, meter.reported) == (0, 0, False)
    meter.add(input_tokens=5, output_tokens=2)
    meter.add(input_tokens=3)
    meter.add(output_tokens=-7)
    assert (meter.input_tokens, meter.output_tokens, meter.reported) == (8, 2, True)


def test_each_request_has_its_own_meter() -> None:
    first, second = agent_request(), agent_request()
    first.usage.add(input_tokens=1)
    assert second.usage.reported is False


# --- openai -----------------------------------------------------------------------------------


async def test_openai_records_the_streamed_usage(
    model: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    model.usage = {"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38}
    model.add_reply("Four.")
    request = agent_request()

    assert await collect(openai_backend(model, http), request) == "Four."

    assert model.requests[0].json["stream_options"] == {"include_usage": True}
    assert spent(request) == (31, 7, True)


async def test_openai_sums_the_usage_of_every_tool_round(
    model: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    model.usage = {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}
    model.add_ask("bob", "ready?")
    model.add_ask("bob", "sure?")
    model.add_reply("Bob is ready.")
    request = agent_request(tools=Peers())

    assert await collect(openai_backend(model, http), request) == "Bob is ready."

    assert len(model.requests) == 3
    assert spent(request) == (60, 9, True)


async def test_openai_without_usage_records_nothing(
    model: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    model.add_reply("abcd")
    model.end_stream_next(after=3)  # role, "abcd", the finish_reason; no usage, no [DONE]
    request = agent_request()

    assert await collect(openai_backend(model, http), request) == "abcd"

    assert spent(request) == (0, 0, False)


async def test_openai_keeps_the_usage_of_rounds_before_a_failure(
    model: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    """Tokens spent before the answer failed were spent all the same."""
    model.usage = {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}
    model.add_ask("bob", "ready?")
    model.fail_next(1, status=500)
    request = agent_request(tools=Peers())

    with pytest.raises(AgentError):
        await collect(openai_backend(model, http), request)

    assert spent(request) == (9, 1, True)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        pytest.param({"prompt_tokens": 5}, (5, 0, True), id="prompt-only"),
        pytest.param({"completion_tokens": 6}, (0, 6, True), id="completion-only"),
        pytest.param(
            {"prompt_tokens": "5", "completion_tokens": None, "total_tokens": 5},
            (0, 0, False),
            id="not-numbers",
        ),
        pytest.param({"prompt_tokens": True, "completion_tokens": 2}, (0, 2, True), id="bool"),
        pytest.param({"prompt_tokens": -3, "completion_tokens": 2}, (0, 2, True), id="negative"),
    ],
)
async def test_openai_takes_only_whole_token_counts(
    model: FakeOpenAIServer,
    http: aiohttp.ClientSession,
    usage: dict[str, Any],
    expected: tuple[int, int, bool],
) -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": usage},
    ]
    body = b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks)
    model.stream_body_next(body + b"data: [DONE]\n\n")
    request = agent_request()

    assert await collect(openai_backend(model, http), request) == "Hi"

    assert spent(request) == expected


async def test_openai_records_usage_from_a_server_that_ignores_stream(
    model: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    """A compatible server that answers one JSON completion still says what it cost; a token
    budget must not be bypassed by such a server."""
    model.raw_next(
        {
            "choices": [{"message": {"role": "assistant", "content": "Whole."}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
        }
    )
    request = agent_request()

    assert await collect(openai_backend(model, http), request) == "Whole."

    assert spent(request) == (11, 2, True)


# --- webhook ----------------------------------------------------------------------------------


async def test_webhook_records_usage_beside_the_reply(
    agent: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    agent.raw_next({"reply": "pong", "usage": {"input_tokens": 12, "output_tokens": 3}})
    request = agent_request()

    assert await collect(webhook_backend(agent, http), request) == "pong"

    assert spent(request) == (12, 3, True)


async def test_webhook_records_usage_on_the_done_line(
    agent: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    agent.add_lines(
        b'{"delta": "po"}',
        b'{"delta": "ng"}',
        b'{"done": true, "usage": {"input_tokens": 40, "output_tokens": 9}}',
    )
    request = agent_request()

    assert await collect(webhook_backend(agent, http), request) == "pong"

    assert spent(request) == (40, 9, True)


@pytest.mark.parametrize(
    "usage",
    [
        pytest.param({"input_tokens": 4}, id="input-only"),
        pytest.param({"output_tokens": 4}, id="output-only"),
        pytest.param({}, id="empty"),
    ],
)
async def test_webhook_counts_missing_as_zero(
    agent: FakeWebhookAgent, http: aiohttp.ClientSession, usage: dict[str, int]
) -> None:
    agent.raw_next({"reply": "pong", "usage": usage})
    request = agent_request()

    assert await collect(webhook_backend(agent, http), request) == "pong"

    assert (request.usage.input_tokens, request.usage.output_tokens) == (
        usage.get("input_tokens", 0),
        usage.get("output_tokens", 0),
    )


async def test_webhook_without_usage_records_nothing(
    agent: FakeWebhookAgent, http: aiohttp.ClientSession
) -> None:
    agent.add_reply("pong")
    agent.add_stream("p", "ong")
    json_request, stream_request = agent_request(), agent_request()

    assert await collect(webhook_backend(agent, http), json_request) == "pong"
    assert await collect(webhook_backend(agent, http), stream_request) == "pong"

    assert spent(json_request) == spent(stream_request) == (0, 0, False)


MALFORMED = [
    pytest.param({"input_tokens": "12", "output_tokens": 3}, id="text"),
    pytest.param({"input_tokens": 1.5, "output_tokens": 3}, id="fraction"),
    pytest.param({"input_tokens": -1, "output_tokens": 3}, id="negative"),
    pytest.param({"input_tokens": False, "output_tokens": 3}, id="bool"),
    pytest.param({"input_tokens": 1, "output_tokens": 3, "cost": 0.2}, id="extra-key"),
    pytest.param([1, 3], id="list"),
    pytest.param("12", id="string"),
    pytest.param(None, id="null"),
]


@pytest.mark.parametrize("usage", MALFORMED)
async def test_webhook_ignores_a_malformed_usage_and_keeps_the_reply(
    agent: FakeWebhookAgent, http: aiohttp.ClientSession, usage: Any
) -> None:
    agent.raw_next({"reply": "pong", "usage": usage})
    agent.add_lines(b'{"delta": "pong"}', json.dumps({"done": True, "usage": usage}).encode())
    for _ in range(2):
        request = agent_request()
        assert await collect(webhook_backend(agent, http), request) == "pong"
        assert spent(request) == (0, 0, False)


@pytest.mark.parametrize("usage", [p for p in MALFORMED if p.values[0] is not None])
async def test_webhook_logs_a_malformed_usage(
    agent: FakeWebhookAgent,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    usage: Any,
) -> None:
    """The agent's author learns why their figures do not count (``null`` is as if absent)."""
    caplog.set_level(logging.WARNING, logger="bridge.agents.webhook")
    agent.raw_next({"reply": "pong", "usage": usage})
    agent.add_lines(b'{"delta": "pong"}', json.dumps({"done": True, "usage": usage}).encode())
    for _ in range(2):
        await collect(webhook_backend(agent, http), agent_request())
    ignored = [r for r in caplog.records if r.getMessage() == "webhook.usage_ignored"]
    assert len(ignored) == 2
    assert getattr(ignored[0], "fields", {}).get("agent") == "helper"
