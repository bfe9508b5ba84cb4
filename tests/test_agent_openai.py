"""The OpenAI-compatible backend against a strict local fake of ``/v1/chat/completions``."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.agents.base import AgentError, AgentRequest, HistoryMessage
from bridge.agents.openai import OpenAIBackend
from bridge.events import Sender
from bridge.settings import OpenAIBackendSettings
from tests.fakes.openai_server import FakeOpenAIServer

KEY_ENV = "BRIDGE_TEST_OPENAI_KEY"
API_KEY = "sk-test-0123456789"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAIServer]:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    async with FakeOpenAIServer(api_key=API_KEY, expected_model="gpt-test") as server:
        yield server


def make_backend(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession, **options: Any
) -> OpenAIBackend:
    settings = OpenAIBackendSettings(
        base_url=options.pop("base_url", fake.url),
        model="gpt-test",
        api_key_env=options.pop("api_key_env", KEY_ENV),
        **options,
    )
    return OpenAIBackend(settings=settings, http=http)


def make_request(**overrides: Any) -> AgentRequest:
    fields: dict[str, Any] = {
        "agent_slug": "helper",
        "agent_name": "Helper",
        "system_prompt": "You are a helpful assistant.",
        "session_id": 7,
        "external_conv_id": "web:abc",
        "channel": "web",
        "is_group": False,
        "group_name": None,
        "sender": Sender(external_id="u1", display_name="Alice"),
        "message_id": 42,
        "text": "What is 2 + 2?",
        "history": (),
    }
    fields.update(overrides)
    return AgentRequest(**fields)


async def collect(backend: OpenAIBackend, request: AgentRequest) -> str:
    return "".join([chunk async for chunk in backend.answer(request)])


async def test_system_prompt_history_and_message_arrive_in_order(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.add_reply("  It is 4.  ")
    backend = make_backend(fake, http)
    request = make_request(
        history=(
            HistoryMessage(role="user", content="Hello"),
            HistoryMessage(role="assistant", content="Hi! How can I help?"),
        )
    )

    assert await collect(backend, request) == "It is 4."

    (recorded,) = fake.requests
    assert recorded.status == 200
    assert recorded.path == "/v1/chat/completions"
    assert recorded.json == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi! How can I help?"},
            {"role": "user", "content": "What is 2 + 2?"},
        ],
    }


async def test_group_chat_names_the_speakers_of_user_turns(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    backend = make_backend(fake, http)
    request = make_request(
        is_group=True,
        group_name="team",
        sender=Sender(external_id="u2", display_name="Bob"),
        history=(
            HistoryMessage(role="user", content="Morning all", sender_name="Alice"),
            HistoryMessage(role="assistant", content="Good morning!", sender_name="Helper"),
            HistoryMessage(role="user", content="Anyone there?"),
        ),
        text="Summarise please",
    )

    await collect(backend, request)

    assert fake.requests[0].json["messages"][1:] == [
        {"role": "user", "content": "Alice: Morning all"},
        {"role": "assistant", "content": "Good morning!"},
        {"role": "user", "content": "Anyone there?"},
        {"role": "user", "content": "Bob: Summarise please"},
    ]


async def test_no_system_message_without_a_prompt_and_options_sent_when_set(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    backend = make_backend(fake, http, temperature=0.3, max_tokens=256)

    await collect(backend, make_request(system_prompt=""))

    sent = fake.requests[0].json
    assert sent["messages"] == [{"role": "user", "content": "What is 2 + 2?"}]
    assert sent["temperature"] == 0.3
    assert sent["max_tokens"] == 256


async def test_api_key_comes_from_the_named_env_var(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTHER_KEY_VAR", API_KEY)
    monkeypatch.delenv(KEY_ENV)
    backend = make_backend(fake, http, api_key_env="OTHER_KEY_VAR", base_url=fake.url + "/")

    assert await collect(backend, make_request()) == "Hello from the fake model."

    headers = fake.requests[0].headers
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("value", [None, "", "   "])
async def test_missing_or_empty_env_var_is_an_agent_error(
    fake: FakeOpenAIServer,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    value: str | None,
) -> None:
    if value is None:
        monkeypatch.delenv(KEY_ENV)
    else:
        monkeypatch.setenv(KEY_ENV, value)
    backend = make_backend(fake, http)

    with pytest.raises(AgentError, match=KEY_ENV):
        await collect(backend, make_request())
    assert fake.requests == []


async def test_rejected_key_is_an_agent_error_that_hides_the_key(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key")
    backend = make_backend(fake, http)

    with pytest.raises(AgentError, match="401") as caught:
        await collect(backend, make_request())
    assert "sk-wrong-key" not in str(caught.value)
    assert fake.requests[0].status == 401


async def test_server_error_is_an_agent_error_with_status_and_body(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.fail_next(status=500, message="The engine is overloaded " + "x" * 1000)
    backend = make_backend(fake, http)

    with pytest.raises(AgentError, match="HTTP 500") as caught:
        await collect(backend, make_request())
    message = str(caught.value)
    assert "The engine is overloaded" in message
    assert len(message) < 400


async def test_garbage_body_is_an_agent_error(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.garbage_next()
    backend = make_backend(fake, http)

    with pytest.raises(AgentError, match="not JSON"):
        await collect(backend, make_request())


@pytest.mark.parametrize("content", ["", "  \n ", None])
async def test_empty_or_missing_content_is_an_agent_error(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession, content: str | None
) -> None:
    fake.add_reply(content)
    backend = make_backend(fake, http)

    with pytest.raises(AgentError):
        await collect(backend, make_request())


@pytest.mark.parametrize("document", [{"choices": []}, {"id": "x"}, [1, 2], {"choices": [{}]}])
async def test_unexpected_document_is_an_agent_error(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession, document: Any
) -> None:
    fake.raw_next(document)
    backend = make_backend(fake, http)

    with pytest.raises(AgentError, match=r"choices\[0\]"):
        await collect(backend, make_request())


async def test_slow_server_is_an_agent_error(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.delay_seconds = 30
    backend = make_backend(fake, http, timeout_seconds=0.2)

    with pytest.raises(AgentError, match="no answer"):
        await collect(backend, make_request())


async def test_unreachable_server_is_an_agent_error(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    async with FakeOpenAIServer() as gone:
        url = gone.url
    backend = OpenAIBackend(
        settings=OpenAIBackendSettings(base_url=url, model="m", api_key_env=KEY_ENV), http=http
    )

    with pytest.raises(AgentError, match="failed"):
        await collect(backend, make_request())


async def test_answer_is_an_async_generator_and_aclose_leaves_the_session_open(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    backend = make_backend(fake, http)
    assert inspect.isasyncgenfunction(OpenAIBackend.answer)

    await backend.aclose()

    assert not http.closed
    assert await collect(backend, make_request()) == "Hello from the fake model."


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        (
            {},
            {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]},
            401,
            "invalid_api_key",
        ),
        ({"Authorization": f"Bearer {API_KEY}"}, {"model": "gpt-test", "messages": []}, 400, None),
        (
            {"Authorization": f"Bearer {API_KEY}"},
            {"messages": [{"role": "user", "content": "x"}]},
            400,
            None,
        ),
        (
            {"Authorization": f"Bearer {API_KEY}"},
            {"model": "gpt-test", "messages": [{"role": "tool", "content": "x"}]},
            400,
            None,
        ),
        (
            {"Authorization": f"Bearer {API_KEY}"},
            {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], "foo": 1},
            400,
            None,
        ),
    ],
)
async def test_the_fake_refuses_what_the_real_api_would(
    fake: FakeOpenAIServer,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    body: dict[str, Any],
    status: int,
    code: str | None,
) -> None:
    async with http.post(fake.url + "/chat/completions", json=body, headers=headers) as response:
        assert response.status == status
        error = (await response.json())["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["code"] == code
    assert fake.requests[0].status == status
