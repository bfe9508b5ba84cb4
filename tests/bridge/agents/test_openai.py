"""The OpenAI-compatible backend against a strict local fake of ``/v1/chat/completions``."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from bridge.agents.base import AgentError, AgentRequest, AgentTools, HistoryMessage, PeerAgent
from bridge.agents.http import BROKEN_ANSWER
from bridge.agents.openai import MAX_TOOL_ROUNDS, OpenAIBackend, build_payload
from bridge.ports.events import Sender
from bridge.settings import OpenAIBackendSettings
from tests.fakes.openai_server import FakeOpenAIServer, ScriptedCall
from tests.support.shared_agents import agent_request, collect

KEY_ENV = "BRIDGE_TEST_OPENAI_KEY"
API_KEY = "sk-test-0123456789"


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


@pytest.mark.parametrize(
    ("request_fields", "expected_turns"),
    [
        pytest.param(
            {
                "history": (
                    HistoryMessage(role="user", content="Hello"),
                    HistoryMessage(role="assistant", content="Hi! How can I help?"),
                )
            },
            [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi! How can I help?"},
                {"role": "user", "content": "What is 2 + 2?"},
            ],
            id="direct-chat-in-order",
        ),
        pytest.param(
            {
                "is_group": True,
                "group_name": "team",
                "sender": Sender(external_id="u2", display_name="Bob"),
                "history": (
                    HistoryMessage(role="user", content="Morning all", sender_name="Alice"),
                    HistoryMessage(role="assistant", content="Good morning!", sender_name="Helper"),
                    HistoryMessage(role="user", content="Anyone there?"),
                ),
                "text": "Summarise please",
            },
            # A group chat names the speakers of user turns (where it knows them).
            [
                {"role": "user", "content": "Alice: Morning all"},
                {"role": "assistant", "content": "Good morning!"},
                {"role": "user", "content": "Anyone there?"},
                {"role": "user", "content": "Bob: Summarise please"},
            ],
            id="group-chat-names-speakers",
        ),
    ],
)
async def test_system_prompt_history_and_message_arrive_in_order(
    fake: FakeOpenAIServer,
    http: aiohttp.ClientSession,
    request_fields: dict[str, Any],
    expected_turns: list[dict[str, str]],
) -> None:
    fake.add_reply("  It is 4.  ")
    backend = make_backend(fake, http)

    assert await collect(backend, agent_request(**request_fields)) == "It is 4."

    (recorded,) = fake.requests
    assert recorded.status == 200
    assert recorded.path == "/v1/chat/completions"
    assert recorded.json == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            *expected_turns,
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_no_system_message_without_a_prompt_and_options_sent_when_set(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    backend = make_backend(fake, http, temperature=0.3, max_tokens=256)

    await collect(backend, agent_request(system_prompt=""))

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

    assert await collect(backend, agent_request()) == "Hello from the fake model."

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
        await collect(backend, agent_request())
    assert fake.requests == []


async def test_rejected_key_is_an_agent_error_that_hides_the_key(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key")
    backend = make_backend(fake, http)

    with pytest.raises(AgentError, match="401") as caught:
        await collect(backend, agent_request())
    assert "sk-wrong-key" not in str(caught.value)
    assert fake.requests[0].status == 401


async def test_server_error_is_an_agent_error_with_status_and_body(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.fail_next(status=500, message="The engine is overloaded " + "x" * 1000)
    backend = make_backend(fake, http)

    with pytest.raises(AgentError, match="HTTP 500") as caught:
        await collect(backend, agent_request())
    message = str(caught.value)
    assert "The engine is overloaded" in message
    assert len(message) < 400


async def test_garbage_body_is_an_agent_error(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.garbage_next()
    backend = make_backend(fake, http)

    with pytest.raises(AgentError, match="not JSON"):
        await collect(backend, agent_request())


@pytest.mark.parametrize("content", ["", "  \n ", None])
async def test_empty_or_missing_content_is_an_agent_error(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession, content: str | None
) -> None:
    fake.add_reply(content)
    backend = make_backend(fake, http)

    with pytest.raises(AgentError):
        await collect(backend, agent_request())


@pytest.mark.parametrize("document", [{"choices": []}, {"id": "x"}, [1, 2], {"choices": [{}]}])
async def test_unexpected_document_is_an_agent_error(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession, document: Any
) -> None:
    fake.raw_next(document)
    backend = make_backend(fake, http)

    with pytest.raises(AgentError, match=r"choices\[0\]"):
        await collect(backend, agent_request())


async def test_slow_server_is_an_agent_error(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.delay_seconds = 30
    backend = make_backend(fake, http, timeout_seconds=0.2)

    with pytest.raises(AgentError, match="no answer"):
        await collect(backend, agent_request())


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
        await collect(backend, agent_request())


async def test_answer_is_an_async_generator_and_aclose_leaves_the_session_open(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    backend = make_backend(fake, http)
    assert inspect.isasyncgenfunction(OpenAIBackend.answer)

    await backend.aclose()

    assert not http.closed
    assert await collect(backend, agent_request()) == "Hello from the fake model."


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


# --- asking other agents: the ask_agent tool ------------------------------------------------

ALICE = PeerAgent(slug="alice", name="Alice")
BOB = PeerAgent(slug="bob", name="Bob the Builder")


@dataclass
class RecordingTools:
    """AgentTools that records each ask and answers from ``answers`` (peer slug -> text)."""

    peers: tuple[PeerAgent, ...] = (ALICE, BOB)
    answers: dict[str, str] = field(default_factory=dict)
    asks: list[tuple[str, str]] = field(default_factory=list)

    async def ask(self, *, agent: str, text: str) -> str:
        self.asks.append((agent, text))
        return self.answers.get(agent, f"{agent} answers: ok")


def with_tools(tools: AgentTools, **overrides: Any) -> AgentRequest:
    return agent_request(tools=tools, **overrides)


def tool_results(recorded: Any) -> list[tuple[str, str]]:
    """(tool_call_id, content) of every tool message in a recorded request, in order."""
    return [
        (message["tool_call_id"], message["content"])
        for message in recorded.json["messages"]
        if message["role"] == "tool"
    ]


async def test_no_tools_are_offered_when_there_are_no_peers(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    backend = make_backend(fake, http)

    await collect(backend, with_tools(RecordingTools(peers=())))

    assert fake.requests[0].json == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is 2 + 2?"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_ask_agent_is_offered_with_the_peer_slugs(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    backend = make_backend(fake, http)

    assert await collect(backend, with_tools(RecordingTools())) == "Hello from the fake model."

    (recorded,) = fake.requests
    assert recorded.status == 200
    assert "tool_choice" not in recorded.json
    (tool,) = recorded.json["tools"]
    assert tool["type"] == "function"
    function = tool["function"]
    assert function["name"] == "ask_agent"
    assert "alice (Alice), bob (Bob the Builder)" in function["description"]
    parameters = function["parameters"]
    assert parameters["required"] == ["agent", "text"]
    assert parameters["additionalProperties"] is False
    assert parameters["properties"]["agent"]["enum"] == ["alice", "bob"]
    assert parameters["properties"]["text"]["type"] == "string"


async def test_a_tool_call_is_run_and_its_result_sent_back_for_the_final_answer(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    call_id = fake.add_ask("bob", "Can you build it?")
    fake.add_reply("  Bob says yes, he can.  ")
    tools = RecordingTools(answers={"bob": "Yes we can!"})
    backend = make_backend(fake, http)

    assert await collect(backend, with_tools(tools)) == "Bob says yes, he can."

    assert tools.asks == [("bob", "Can you build it?")]
    first, second = fake.requests
    assert [first.status, second.status] == [200, 200]
    assert second.json["messages"][: len(first.json["messages"])] == first.json["messages"]
    assert second.json["messages"][len(first.json["messages"]) :] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": "ask_agent",
                        "arguments": json.dumps({"agent": "bob", "text": "Can you build it?"}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "Yes we can!"},
    ]
    assert second.json["tools"] == first.json["tools"]
    assert "tool_choice" not in second.json


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("ask_agent", {"agent": "mallory", "text": "hi"}, "'mallory' is not an agent you may ask"),
        ("ask_agent", {"agent": "helper", "text": "hi"}, "You may ask: alice, bob."),
        ("ask_agent", '{"agent": "bob", "text": ', "not valid JSON"),
        ("ask_agent", "[1, 2]", "must be a JSON object"),
        ("ask_agent", {"agent": "bob"}, '"agent" and "text" are both required'),
        ("ask_agent", {"agent": "bob", "text": 7}, "must be strings"),
        ("ask_agent", {"agent": "bob", "text": "   "}, '"text" is empty'),
        ("search_web", {"query": "weather"}, "there is no tool named 'search_web'"),
    ],
)
async def test_a_call_the_bridge_cannot_run_gets_an_error_result_and_no_ask(
    fake: FakeOpenAIServer,
    http: aiohttp.ClientSession,
    name: str,
    arguments: Any,
    expected: str,
) -> None:
    (call_id,) = fake.add_tool_calls(ScriptedCall(name, arguments))
    fake.add_reply("Sorry, I could not ask.")
    tools = RecordingTools()
    backend = make_backend(fake, http)

    assert await collect(backend, with_tools(tools)) == "Sorry, I could not ask."

    assert tools.asks == []
    ((answered_id, content),) = tool_results(fake.requests[1])
    assert answered_id == call_id
    assert content.startswith("Error: ")
    assert expected in content


async def test_several_calls_in_one_message_are_all_answered_in_order(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    ids = fake.add_tool_calls(
        ScriptedCall("ask_agent", {"agent": "bob", "text": "First?"}),
        ScriptedCall("ask_agent", {"agent": "nobody", "text": "Second?"}),
        ScriptedCall("ask_agent", {"agent": "alice", "text": "Third?"}),
        content="Let me ask around.",
    )
    fake.add_reply("Both answered.")
    tools = RecordingTools(answers={"alice": "A", "bob": "B"})
    backend = make_backend(fake, http)

    # The text beside the calls has streamed to the user already; the answer follows it.
    assert await collect(backend, with_tools(tools)) == "Let me ask around.\n\nBoth answered."

    assert tools.asks == [("bob", "First?"), ("alice", "Third?")]
    results = tool_results(fake.requests[1])
    assert [call_id for call_id, _ in results] == ids
    assert results[0][1] == "B"
    assert results[1][1].startswith("Error: 'nobody' is not an agent")
    assert results[2][1] == "A"
    assistant = fake.requests[1].json["messages"][-4]
    assert assistant["content"] == "Let me ask around."
    assert [call["id"] for call in assistant["tool_calls"]] == ids


async def test_tool_rounds_accumulate_across_requests(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    first = fake.add_ask("alice", "One?")
    second = fake.add_ask("bob", "Two?")
    fake.add_reply("Done.")
    tools = RecordingTools()
    backend = make_backend(fake, http)

    assert await collect(backend, with_tools(tools)) == "Done."

    assert [r.status for r in fake.requests] == [200, 200, 200]
    assert tool_results(fake.requests[2]) == [
        (first, "alice answers: ok"),
        (second, "bob answers: ok"),
    ]


async def test_after_the_round_limit_the_last_request_allows_no_tool_call(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    for number in range(MAX_TOOL_ROUNDS):
        fake.add_ask("bob", f"Again {number}?")
    fake.add_reply("Enough asking: here is my answer.")
    tools = RecordingTools()
    backend = make_backend(fake, http)

    assert await collect(backend, with_tools(tools)) == "Enough asking: here is my answer."

    assert len(tools.asks) == MAX_TOOL_ROUNDS
    assert len(fake.requests) == MAX_TOOL_ROUNDS + 1
    assert all("tool_choice" not in r.json for r in fake.requests[:-1])
    last = fake.requests[-1].json
    assert last["tool_choice"] == "none"
    assert last["tools"] == fake.requests[0].json["tools"]
    assert len(tool_results(fake.requests[-1])) == MAX_TOOL_ROUNDS


async def test_a_model_that_keeps_calling_tools_is_an_agent_error(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    """A server that ignores ``tool_choice: none`` and still gives no text: no answer."""
    for _ in range(MAX_TOOL_ROUNDS + 3):
        fake.add_ask("bob", "Again?", ignore_tool_choice=True)
    tools = RecordingTools()
    backend = make_backend(fake, http)

    with pytest.raises(AgentError, match=r"^openai backend: .*only more tool calls"):
        await collect(backend, with_tools(tools))

    assert len(fake.requests) == MAX_TOOL_ROUNDS + 1
    assert len(tools.asks) == MAX_TOOL_ROUNDS


async def test_text_beside_tool_calls_on_the_last_request_is_the_answer(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    for _ in range(MAX_TOOL_ROUNDS):
        fake.add_ask("bob", "Again?")
    fake.add_tool_calls(
        ScriptedCall("ask_agent", {"agent": "bob", "text": "Once more?"}),
        content="Here is what I found.",
        ignore_tool_choice=True,
    )
    tools = RecordingTools()
    backend = make_backend(fake, http)

    assert await collect(backend, with_tools(tools)) == "Here is what I found."
    assert len(tools.asks) == MAX_TOOL_ROUNDS


async def test_tool_calls_are_not_run_when_no_tools_were_offered(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.add_tool_calls(
        ScriptedCall("ask_agent", {"agent": "bob", "text": "?"}),
        content="Plain text after all.",
        ignore_tool_choice=True,
    )
    fake.add_ask("bob", "?", ignore_tool_choice=True)
    backend = make_backend(fake, http)

    assert await collect(backend, agent_request()) == "Plain text after all."
    with pytest.raises(AgentError, match="empty reply"):
        await collect(backend, agent_request())
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    "tool_calls",
    [
        [{"type": "function", "function": {"name": "ask_agent", "arguments": "{}"}}],
        [{"id": "call_1", "type": "function"}],
        ["call_1"],
        "call_1",
    ],
)
async def test_a_malformed_tool_call_is_an_agent_error(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession, tool_calls: Any
) -> None:
    fake.raw_next(
        {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": tool_calls}}]}
    )
    tools = RecordingTools()
    backend = make_backend(fake, http)

    with pytest.raises(AgentError, match=r"^openai backend: .*tool.call"):
        await collect(backend, with_tools(tools))
    assert tools.asks == []


def test_build_payload_adds_the_exchange_and_tool_choice_only_with_peers() -> None:
    settings = OpenAIBackendSettings(model="m")
    exchange = [{"role": "tool", "tool_call_id": "c", "content": "x"}]
    plain = agent_request(system_prompt="")

    assert build_payload(settings, plain, final=True) == {
        "model": "m",
        "messages": [{"role": "user", "content": "What is 2 + 2?"}],
    }
    payload = build_payload(settings, with_tools(RecordingTools(), system_prompt=""), final=True)
    assert payload["tool_choice"] == "none"
    assert payload["tools"][0]["function"]["name"] == "ask_agent"
    with_exchange = build_payload(settings, plain, exchange=exchange)
    assert with_exchange["messages"][-1] == exchange[0]


async def test_the_fake_refuses_a_scripted_tool_call_the_request_does_not_allow(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.add_ask("bob", "?")
    backend = make_backend(fake, http)

    with pytest.raises(AgentError, match="HTTP 500"):
        await collect(backend, agent_request())
    assert fake.requests[0].error is not None
    assert "scripted" in fake.requests[0].error


def _call(call_id: str) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "ask_agent", "arguments": "{}"},
    }


def _result(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": "r"}


_TOOL = {
    "type": "function",
    "function": {
        "name": "ask_agent",
        "description": "d",
        "parameters": {
            "type": "object",
            "properties": {"agent": {"type": "string", "enum": ["a"]}},
            "required": ["agent"],
            "additionalProperties": False,
        },
    },
}
_ASKED = [
    {"role": "user", "content": "x"},
    {"role": "assistant", "content": None, "tool_calls": [_call("c1"), _call("c2")]},
]


@pytest.mark.parametrize(
    ("extra", "status", "error"),
    [
        ({"messages": [*_ASKED, _result("c1"), _result("c2")], "tools": [_TOOL]}, 200, None),
        ({"messages": [*_ASKED, _result("c2"), _result("c1")]}, 200, None),
        ({"messages": [*_ASKED, _result("c1")]}, 400, "did not have response messages: c2"),
        (
            {"messages": [*_ASKED, _result("c1"), {"role": "user", "content": "y"}]},
            400,
            "did not have response messages",
        ),
        ({"messages": [*_ASKED, _result("c9")]}, 400, "'c9' not found"),
        (
            {"messages": [{"role": "user", "content": "x"}, _result("c1")]},
            400,
            "must be a response to a preceeding message",
        ),
        (
            {
                "messages": [
                    *_ASKED,
                    _result("c1"),
                    _result("c2"),
                    {"role": "user", "content": "y"},
                    _result("c1"),
                ]
            },
            400,
            "preceeding",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": None},
                ]
            },
            400,
            "content must be a string",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
                    },
                ]
            },
            400,
            "tool_calls[0]",
        ),
        ({"tool_choice": "none"}, 400, "only allowed when 'tools' are specified"),
        ({"tools": []}, 400, "non-empty"),
        ({"tools": [{"type": "function", "name": "ask_agent"}]}, 400, "tools[0]"),
        ({"tools": [{"type": "function", "function": {"name": "ask agent!"}}]}, 400, "pattern"),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "string"}},
                    }
                ]
            },
            400,
            "Invalid schema",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {}, "required": ["x"]},
                        },
                    }
                ]
            },
            400,
            "required",
        ),
        ({"tools": [_TOOL], "tool_choice": "sometimes"}, 400, "tool_choice"),
        ({"tools": [_TOOL], "tool_choice": "none"}, 200, None),
    ],
)
async def test_the_fake_checks_function_calling_like_the_real_api(
    fake: FakeOpenAIServer,
    http: aiohttp.ClientSession,
    extra: dict[str, Any],
    status: int,
    error: str | None,
) -> None:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], **extra}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with http.post(fake.url + "/chat/completions", json=body, headers=headers) as response:
        assert response.status == status
        document = await response.json()
    if error is None:
        assert "choices" in document
    else:
        assert error in document["error"]["message"]
        assert document["error"]["type"] == "invalid_request_error"


# --- streaming --------------------------------------------------------------------------------


async def test_chunks_are_yielded_as_the_stream_arrives(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.release = asyncio.Event()
    fake.add_reply("Hello streaming world")
    answer = make_backend(fake, http).answer(agent_request())

    # The fake holds the rest of the stream until the first chunk has reached the test.
    first = await asyncio.wait_for(anext(answer), 5)
    (stream,) = fake.streams
    assert first == "Hell"
    assert stream.sent == 2  # the role event and the first delta; the rest is held back
    fake.release.set()
    rest = [chunk async for chunk in answer]

    assert rest == ["o st", "ream", "ing", " worl", "d"]  # trailing spaces wait for more text
    assert stream.sent == len(stream.parts)
    assert fake.requests[0].json["stream"] is True


async def test_the_stream_joins_to_the_stripped_text(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.add_chunks("", "  \n", " Hi", " ", " ", "there ", "\n", "", "again", "  \n ")

    chunks = [chunk async for chunk in make_backend(fake, http).answer(agent_request())]

    assert "".join(chunks) == "Hi  there \nagain"
    assert chunks[0] == "Hi"


@pytest.mark.parametrize(
    ("cut", "after", "before_error", "detail"),
    [
        ("abort", 3, ["abcd", "efgh"], "broke off"),
        ("end", 3, ["abcd", "efgh"], "no finish_reason"),
        ("end", 1, [], "no finish_reason"),
    ],
)
async def test_a_broken_stream_is_an_agent_error_after_what_it_yielded(
    fake: FakeOpenAIServer,
    http: aiohttp.ClientSession,
    cut: str,
    after: int,
    before_error: list[str],
    detail: str,
) -> None:
    fake.add_reply("abcdefghijkl")
    if cut == "abort":
        fake.break_stream_next(after=after)
    else:
        fake.end_stream_next(after=after)
    chunks: list[str] = []

    with pytest.raises(AgentError, match=detail) as caught:
        async for chunk in make_backend(fake, http).answer(agent_request()):
            chunks.append(chunk)

    assert chunks == before_error
    assert caught.value.reason == BROKEN_ANSWER


async def test_a_finish_reason_without_done_is_a_complete_answer(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.add_reply("abcd")
    fake.end_stream_next(after=3)  # role, "abcd", the finish_reason; no usage, no [DONE]

    assert await collect(make_backend(fake, http), agent_request()) == "abcd"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"data: {not json\n\n", "not JSON"),
        (b'data: {"choices": [{"index": 0, "delta": {"content": 5}}]}\n\n', "not text"),
        (b'data: {"choices": {"index": 0}}\n\n', "not a list"),
        (
            b'data: {"error": {"message": "overloaded, key sk-test-0123456789"}}\n\n',
            "reported an error",
        ),
    ],
)
async def test_an_unusable_stream_event_is_an_agent_error_that_hides_the_key(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession, body: bytes, detail: str
) -> None:
    fake.stream_body_next(b": keep-alive comment\n\n" + body + b"data: [DONE]\n\n")

    with pytest.raises(AgentError, match=detail) as caught:
        await collect(make_backend(fake, http), agent_request())
    assert API_KEY not in str(caught.value)


async def test_multi_line_events_and_other_fields_are_read_as_sse(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]}
    encoded = json.dumps(chunk, indent=1).replace("\n", "\r\ndata: ").encode()
    fake.stream_body_next(b"event: message\r\nid: 1\r\ndata: " + encoded + b"\r\n\r\ndata:[DONE]")

    assert await collect(make_backend(fake, http), agent_request()) == "Hi"


async def test_a_server_that_ignores_stream_is_read_as_one_completion(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.raw_next({"choices": [{"message": {"role": "assistant", "content": " Whole. "}}]})

    assert await collect(make_backend(fake, http), agent_request()) == "Whole."


async def test_streamed_tool_calls_are_put_together_and_run(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession
) -> None:
    fake.chunk_chars = 1  # every character of the arguments in its own fragment
    first, second = fake.add_tool_calls(
        ScriptedCall("ask_agent", {"agent": "bob", "text": "Can you build it?"}),
        ScriptedCall("ask_agent", {"agent": "alice", "text": "And you?"}),
    )
    fake.add_chunks("Bob ", "says ", "yes.")
    tools = RecordingTools(answers={"bob": "Yes we can!", "alice": "Me too."})

    chunks = [c async for c in make_backend(fake, http).answer(with_tools(tools))]

    assert chunks == ["Bob", " says", " yes."]
    assert tools.asks == [("bob", "Can you build it?"), ("alice", "And you?")]
    assert len(fake.streams[0].parts) > 40
    assistant = fake.requests[1].json["messages"][-3]
    assert assistant["content"] is None
    assert [call["function"]["arguments"] for call in assistant["tool_calls"]] == [
        json.dumps({"agent": "bob", "text": "Can you build it?"}),
        json.dumps({"agent": "alice", "text": "And you?"}),
    ]
    assert tool_results(fake.requests[1]) == [(first, "Yes we can!"), (second, "Me too.")]
    assert all(request.json["stream"] is True for request in fake.requests)


async def test_usage_is_logged_for_each_response(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    fake.usage = {"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38}
    fake.add_ask("bob", "?")
    fake.add_reply("Done.")
    caplog.set_level(logging.INFO, logger="bridge.agents.openai")

    await collect(make_backend(fake, http), with_tools(RecordingTools()))

    usage = [getattr(r, "fields", None) for r in caplog.records if r.getMessage() == "agent usage"]
    expected = {
        "agent": "helper",
        "session_id": 7,
        "message_id": 42,
        "model": "gpt-test",
        "prompt_tokens": 31,
        "completion_tokens": 7,
        "total_tokens": 38,
    }
    assert usage == [expected, expected]


async def test_no_usage_is_logged_when_the_server_sends_none(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add_reply("abcd")
    fake.end_stream_next(after=3)
    caplog.set_level(logging.INFO, logger="bridge.agents.openai")

    await collect(make_backend(fake, http), agent_request())

    assert [r for r in caplog.records if r.getMessage() == "agent usage"] == []


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"stream_options": {"include_usage": True}}, "only allowed when 'stream' is enabled"),
        ({"stream": "yes"}, "'stream' must be a boolean"),
        ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options"),
        ({"stream": True, "stream_options": {"other": True}}, "stream_options"),
    ],
)
async def test_the_fake_checks_the_stream_options_like_the_real_api(
    fake: FakeOpenAIServer, http: aiohttp.ClientSession, extra: dict[str, Any], error: str
) -> None:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], **extra}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with http.post(fake.url + "/chat/completions", json=body, headers=headers) as response:
        assert response.status == 400
        document = await response.json()
    assert error in document["error"]["message"]
