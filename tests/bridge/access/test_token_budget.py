"""Token budgets through the real app on both databases: the backends report what answers
cost, the answer step stores it on the answered message, and a user whose day has reached
the budget is limited like any other limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.access.limits import limit_error
from bridge.store.models import ChatMessage, MessageState
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.harness import RunningBridge, make_settings, running_bridge, webhook_agent_config
from tests.support.metrics import metric
from tests.support.processes import wait_until

KEY_ENV = "BRIDGE_TEST_BUDGET_OPENAI_KEY"
API_KEY = "sk-budget-test"
LIMITED_TEXT = "That is enough for today."


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAIServer]:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    async with FakeOpenAIServer(api_key=API_KEY, expected_model="gpt-test") as server:
        yield server


def openai_agent(model: FakeOpenAIServer, **limits: Any) -> dict[str, Any]:
    return {
        "slug": "assistant",
        "backend": "openai",
        "openai": {"base_url": model.url, "model": "gpt-test", "api_key_env": KEY_ENV},
        "inmemory": {},
        "limits": {**limits, "limited_text": LIMITED_TEXT},
    }


async def finished(bridge: RunningBridge, message_id: int) -> ChatMessage:
    """The user message ``message_id`` once answered (or failed) and its reply delivered."""
    await bridge.reply_to(message_id, state=MessageState.DELIVERED)
    (message,) = [m for m in await bridge.messages() if m.id == message_id]
    return message


async def test_an_openai_agent_stops_answering_once_the_day_budget_is_reached(
    database_url: str, model: FakeOpenAIServer
) -> None:
    model.usage = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
    model.add_reply("first answer", "second answer")
    settings = make_settings(database_url, agents=[openai_agent(model, user_tokens_per_day=30)])
    async with running_bridge(settings) as bridge:
        memory = bridge.memory()
        first = await memory.receive("one", message_id="t1")
        assert first.limited is None
        answered = await finished(bridge, first.message_id)
        assert answered.state == MessageState.ANSWERED
        assert (answered.input_tokens, answered.output_tokens) == (12, 8)

        # 20 of 30 used: still under the budget.
        second = await memory.receive("two", message_id="t2")
        assert second.limited is None
        answered = await finished(bridge, second.message_id)
        assert (answered.input_tokens, answered.output_tokens) == (12, 8)

        # 40 used: the budget is reached, the next message is stored but never sent.
        third = await memory.receive("three", message_id="t3")
        assert third.limited == "user_tokens_per_day"
        fourth = await memory.receive("four", message_id="t4")
        assert fourth.limited == "user_tokens_per_day"
        note = await bridge.reply_to(third.message_id, state=MessageState.DELIVERED)
        assert (note.role, note.content) == ("system", LIMITED_TEXT)

        await wait_until(lambda: len(memory.sent) == 3, within=10, what="three sends")
        assert [r.text for r in memory.sent] == ["first answer", "second answer", LIMITED_TEXT]
        assert len(model.requests) == 2, "limited messages never reach the model"
        stored = {m.id: m for m in await bridge.messages()}
        for limited in (third, fourth):
            message = stored[limited.message_id]
            assert message.state == MessageState.LIMITED
            assert message.last_error == limit_error("user_tokens_per_day")
            assert (message.input_tokens, message.output_tokens) == (None, None)
        assert [m.reply_to_message_id for m in stored.values() if m.role == "system"] == [
            third.message_id
        ]
        # Another user has a budget of their own.
        other = await memory.receive("hello", message_id="o1", sender="user-2")
        assert other.limited is None
        await finished(bridge, other.message_id)
        tokens = 'bridge_model_tokens_total{agent="assistant",kind='
        assert await metric(bridge, tokens + '"input"}') == 36
        assert await metric(bridge, tokens + '"output"}') == 24
        assert (
            await metric(
                bridge, 'bridge_limited_total{agent="assistant",limit="user_tokens_per_day"}'
            )
            == 2
        )


async def test_tool_rounds_count_towards_the_budget(
    database_url: str, model: FakeOpenAIServer
) -> None:
    """An answer that asked a peer cost two model calls: both are counted."""
    model.usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    model.add_ask("beta", "are you there?")
    model.add_reply("beta is there")
    alpha = {**openai_agent(model, user_tokens_per_day=25), "slug": "alpha", "peers": ["beta"]}
    beta = {"slug": "beta", "peers": ["alpha"], "inmemory": {}}
    settings = make_settings(database_url, agents=[alpha, beta])
    async with running_bridge(settings) as bridge:
        memory = bridge.memory("alpha")
        first = await memory.receive("ask beta", message_id="a1")
        answered = await finished(bridge, first.message_id)
        assert (answered.input_tokens, answered.output_tokens) == (20, 10)
        over = await memory.receive("again", message_id="a2")
        assert over.limited == "user_tokens_per_day"


async def test_tokens_spent_on_a_failed_answer_count_too(
    database_url: str, model: FakeOpenAIServer
) -> None:
    """The model round before the failure was paid for: the failed message keeps its cost."""
    model.usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    model.add_ask("beta", "are you there?")
    model.fail_next(1, status=500)
    alpha = {**openai_agent(model, user_tokens_per_day=15), "slug": "alpha", "peers": ["beta"]}
    beta = {"slug": "beta", "peers": ["alpha"], "inmemory": {}}
    settings = make_settings(database_url, agents=[alpha, beta])
    async with running_bridge(settings) as bridge:
        memory = bridge.memory("alpha")
        first = await memory.receive("ask beta", message_id="f1")
        failed = await finished(bridge, first.message_id)
        assert failed.state == MessageState.FAILED
        assert (failed.input_tokens, failed.output_tokens) == (10, 5)
        over = await memory.receive("again", message_id="f2")
        assert over.limited == "user_tokens_per_day"


async def test_a_backend_without_usage_is_never_over_a_token_budget(database_url: str) -> None:
    agent = {"slug": "assistant", "inmemory": {}, "limits": {"user_tokens_per_day": 1}}
    async with running_bridge(make_settings(database_url, agents=[agent])) as bridge:
        memory = bridge.memory()
        for n in range(3):
            result = await memory.receive(f"echo {n}", message_id=f"e{n}")
            assert result.limited is None
            answered = await finished(bridge, result.message_id)
            assert (answered.input_tokens, answered.output_tokens) == (None, None)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param("json", id="json-reply"),
        pytest.param("ndjson", id="ndjson-done-line"),
    ],
)
async def test_a_webhook_agent_reports_usage_in_either_reply_form(
    database_url: str, webhook_agent: FakeWebhookAgent, answer: str
) -> None:
    usage = {"input_tokens": 17, "output_tokens": 4}
    if answer == "json":
        webhook_agent.raw_next({"reply": "counted", "usage": usage})
    else:
        webhook_agent.add_lines(
            b'{"delta": "coun"}',
            b'{"delta": "ted"}',
            b'{"done": true, "usage": {"input_tokens": 17, "output_tokens": 4}}',
        )
    agent = {**webhook_agent_config(webhook_agent), "limits": {"user_tokens_per_day": 21}}
    async with running_bridge(make_settings(database_url, agents=[agent])) as bridge:
        memory = bridge.memory()
        first = await memory.receive("how much?", message_id="w1")
        answered = await finished(bridge, first.message_id)
        assert answered.state == MessageState.ANSWERED
        assert (answered.input_tokens, answered.output_tokens) == (17, 4)
        assert (await memory.next_sent()).text == "counted"
        over = await memory.receive("more?", message_id="w2")
        assert over.limited == "user_tokens_per_day"
        assert len(webhook_agent.requests) == 1


@pytest.mark.parametrize(
    "usage",
    [
        pytest.param({"input_tokens": "17", "output_tokens": 4}, id="text-count"),
        pytest.param({"input_tokens": -1, "output_tokens": 4}, id="negative"),
        pytest.param({"input_tokens": 1.5, "output_tokens": 4}, id="fraction"),
        pytest.param({"input_tokens": True, "output_tokens": 4}, id="boolean"),
        pytest.param({"prompt_tokens": 17}, id="other-keys"),
        pytest.param([17, 4], id="not-an-object"),
        pytest.param(None, id="null"),
    ],
)
async def test_a_malformed_webhook_usage_is_ignored_and_the_reply_kept(
    database_url: str, webhook_agent: FakeWebhookAgent, usage: Any
) -> None:
    webhook_agent.raw_next({"reply": "still here", "usage": usage})
    agent = {**webhook_agent_config(webhook_agent), "limits": {"user_tokens_per_day": 1}}
    async with running_bridge(make_settings(database_url, agents=[agent])) as bridge:
        memory = bridge.memory()
        first = await memory.receive("hi", message_id="x1")
        answered = await finished(bridge, first.message_id)
        assert answered.state == MessageState.ANSWERED
        assert (answered.input_tokens, answered.output_tokens) == (None, None)
        assert (await memory.next_sent()).text == "still here"
        # Nothing was counted, so the budget of one token is not reached.
        second = await memory.receive("again", message_id="x2")
        assert second.limited is None
        assert (await memory.next_sent()).text == "echo: again"
