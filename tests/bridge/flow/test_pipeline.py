"""The flow of one message through the real app: ingest, answer, deliver, on both dialects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bridge.ports.errors import DeliveryError
from bridge.ports.events import MessageEdit, Reply
from bridge.settings import Settings
from bridge.store.models import ChatMessage, ChatSession, MessageState
from channels.inmemory import MemoryChannel
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.core import core, memory_message
from tests.support.harness import RunningBridge, make_settings, running_bridge, webhook_agent_config
from tests.support.processes import wait_until


@asynccontextmanager
async def memory_bridge(settings: Settings) -> AsyncIterator[tuple[RunningBridge, MemoryChannel]]:
    """The real app on ``settings``, and the memory channel of its agent ``assistant``."""
    async with running_bridge(settings) as bridge:
        yield bridge, bridge.memory()


async def exchange(memory: MemoryChannel, text: str, **event: Any) -> Reply:
    """``text`` received on ``memory`` (with ``event``'s details), and the next reply sent."""
    await memory.receive(text, **event)
    return await memory.next_sent()


async def test_echo_reply_is_stored_and_delivered(database_url: str) -> None:
    async with memory_bridge(make_settings(database_url)) as (bridge, memory):
        result = await memory.receive("hello there", sender_name="Ada")
        reply = await memory.next_sent()
        assert reply.text == "hello there"
        assert reply.in_doubt is False
        assert reply.reply_target == {"conversation": "inmemory:conv-1"}
        stored = await bridge.reply_to(result.message_id, state=MessageState.DELIVERED)
        user, answer = await bridge.messages(result.session_id)
        assert (user.role, user.state) == ("user", MessageState.ANSWERED)
        assert stored.role == "assistant"
        assert stored.reply_to_message_id == user.id
        assert stored.platform_message_ids == [f"memory-{answer.id}"]
        async with bridge.sessions() as db:
            session = await db.get(ChatSession, result.session_id)
        assert session is not None and session.message_count == 2


async def test_same_event_twice_is_stored_once_and_answered_once(database_url: str) -> None:
    async with memory_bridge(make_settings(database_url)) as (bridge, memory):
        first = await memory.receive("only once", message_id="evt-1")
        second = await memory.receive("only once", message_id="evt-1")
        assert first.duplicate is False and second.duplicate is True
        assert second.message_id == first.message_id
        await memory.next_sent()
        await exchange(memory, "next", message_id="evt-2")
        texts = [m.content for m in await bridge.messages() if m.role == "user"]
        assert texts == ["only once", "next"]
        assert [r.text for r in memory.sent] == ["only once", "next"]


async def test_concurrent_redeliveries_store_one_message(database_url: str) -> None:
    async with memory_bridge(make_settings(database_url)) as (bridge, memory):
        results = await asyncio.gather(
            *(memory.receive("racing", message_id="evt-race") for _ in range(20))
        )
        assert sum(not r.duplicate for r in results) == 1
        await memory.next_sent()
        # A later message of the same session is answered after any duplicate would be.
        await exchange(memory, "after the race", message_id="evt-after")
        assert [r.text for r in memory.sent] == ["racing", "after the race"]
        users = [m.content for m in await bridge.messages() if m.role == "user"]
        assert users == ["racing", "after the race"]


async def test_messages_of_one_session_are_answered_in_order(
    database_url: str, webhook_agent: FakeWebhookAgent
) -> None:
    settings = make_settings(database_url, agents=[webhook_agent_config(webhook_agent)])
    async with memory_bridge(settings) as (_bridge, memory):
        for index in range(6):
            await memory.receive(f"message {index}", message_id=f"m{index}")
        for _ in range(6):
            await memory.next_sent()
        assert [r.text for r in memory.sent] == [f"echo: message {i}" for i in range(6)]
        # Each call saw the previous exchange: strictly one at a time, in order.
        last_history = webhook_agent.requests[-1].json["history"]
        assert [h["content"] for h in last_history][-2:] == ["message 4", "echo: message 4"]


async def test_delivery_waits_for_retry_after_then_delivers_once(database_url: str) -> None:
    async with memory_bridge(make_settings(database_url)) as (bridge, memory):
        memory.fail_next(
            DeliveryError("rate limited", retry_after=0.3),
            DeliveryError("rate limited", retry_after=0.3),
        )
        result = await memory.receive("patience")
        reply = await memory.next_sent()
        assert reply.text == "patience"
        times = [at for at, _ in memory.attempts]
        assert len(times) == 3
        assert times[1] - times[0] >= 0.3 and times[2] - times[1] >= 0.3
        assert len(memory.sent) == 1
        assert [r.attempt for _, r in memory.attempts] == [1, 2, 3]
        stored = await bridge.reply_to(result.message_id, state=MessageState.DELIVERED)
        assert stored.attempts == 3


async def test_in_doubt_flag_reaches_the_next_attempt(database_url: str) -> None:
    async with memory_bridge(make_settings(database_url)) as (_bridge, memory):
        memory.fail_next(
            DeliveryError("connection reset after sending", in_doubt=True, retry_after=0),
            DeliveryError("429", retry_after=0),
        )
        await exchange(memory, "careful")
        flags = [r.in_doubt for _, r in memory.attempts]
        keys = {r.delivery_key for _, r in memory.attempts}
        assert flags == [False, True, False]
        assert len(keys) == 1 and len(keys.pop()) <= 25


async def test_delivery_gives_up_after_max_attempts_and_keeps_the_error(database_url: str) -> None:
    settings = make_settings(database_url, pipeline={"max_delivery_attempts": 3})
    async with memory_bridge(settings) as (bridge, memory):
        memory.fail_next(*(DeliveryError(f"boom {i}") for i in range(3)))
        result = await memory.receive("doomed")
        failed = await bridge.reply_to(result.message_id, state=MessageState.FAILED)
        assert failed.attempts == 3
        assert failed.last_error == "boom 2"
        assert memory.sent == []


async def test_permanent_delivery_error_is_not_retried(database_url: str) -> None:
    async with memory_bridge(make_settings(database_url)) as (bridge, memory):
        memory.fail_next(DeliveryError("channel_not_found", permanent=True))
        result = await memory.receive("nowhere")
        failed = await bridge.reply_to(result.message_id, state=MessageState.FAILED)
        assert failed.attempts == 1 and failed.last_error == "channel_not_found"


@pytest.mark.parametrize("fault", ["error", "garbage", "timeout"])
async def test_agent_failure_gives_apology_and_recorded_failure(
    database_url: str, webhook_agent: FakeWebhookAgent, fault: str
) -> None:
    agents = [webhook_agent_config(webhook_agent)]
    agents[0]["webhook"]["timeout_seconds"] = 0.3
    if fault == "error":
        webhook_agent.fail_next(1, status=500)
    elif fault == "garbage":
        webhook_agent.garbage_next(1)
    else:
        webhook_agent.delay_seconds = 2
    settings = make_settings(database_url, agents=agents)
    async with memory_bridge(settings) as (bridge, memory):
        result = await memory.receive("are you there?")
        apology = await memory.next_sent()
        assert apology.text == settings.pipeline.apology_text
        user, note = await bridge.messages(result.session_id)
        assert user.content == "are you there?"
        assert user.state == MessageState.FAILED
        assert user.last_error
        expected = {"error": "HTTP 500", "garbage": "not JSON", "timeout": "within"}[fault]
        assert expected in user.last_error
        assert note.role == "system"
        webhook_agent.delay_seconds = 0
        await memory.receive("and now?")
        assert (await memory.next_sent()).text == "echo: and now?"
        # The apology is a bridge note, not the agent's words: it is not sent back as history.
        history = webhook_agent.requests[-1].json["history"]
        assert [h["content"] for h in history] == ["are you there?"]


async def test_history_window_is_bounded_by_count_and_characters(
    database_url: str, webhook_agent: FakeWebhookAgent
) -> None:
    agents = [webhook_agent_config(webhook_agent, history_messages=4, history_chars=60)]
    async with memory_bridge(make_settings(database_url, agents=agents)) as (_bridge, memory):
        for index in range(5):
            await exchange(memory, f"m{index}")
        history = webhook_agent.requests[-1].json["history"]
        assert [h["content"] for h in history] == ["m2", "echo: m2", "m3", "echo: m3"]
        assert [h["role"] for h in history] == ["user", "assistant", "user", "assistant"]
        await exchange(memory, "x" * 50)
        await exchange(memory, "last")
        history = webhook_agent.requests[-1].json["history"]
        # 50 + "echo: " + 50 is over 60 characters: only the newest message fits.
        assert [h["content"] for h in history] == ["echo: " + "x" * 50]


async def test_reset_cuts_the_history_sent_to_the_agent(
    database_url: str, webhook_agent: FakeWebhookAgent
) -> None:
    settings = make_settings(database_url, agents=[webhook_agent_config(webhook_agent)])
    async with memory_bridge(settings) as (bridge, memory):
        await exchange(memory, "remember the word apple")
        note = await exchange(memory, "/reset")
        assert "fresh" in note.text
        calls_before = len(webhook_agent.requests)
        await exchange(memory, "what was the word?")
        assert len(webhook_agent.requests) == calls_before + 1  # /reset never reached the agent
        assert webhook_agent.requests[-1].json["history"] == []
        await exchange(memory, "and again?")
        history = [h["content"] for h in webhook_agent.requests[-1].json["history"]]
        assert history == ["what was the word?", "echo: what was the word?"]
        everything = [m.content for m in await bridge.messages()]
        assert "remember the word apple" in everything  # kept, just not sent


async def test_idle_timeout_starts_a_fresh_context(
    database_url: str, webhook_agent: FakeWebhookAgent
) -> None:
    agents = [webhook_agent_config(webhook_agent, idle_reset_hours=2)]
    async with memory_bridge(make_settings(database_url, agents=agents)) as (bridge, memory):
        first = await memory.receive("old topic")
        await memory.next_sent()
        await exchange(memory, "still old topic")
        assert len(webhook_agent.requests[-1].json["history"]) == 2
        async with bridge.sessions() as db, db.begin():
            session = await db.get(ChatSession, first.session_id)
            assert session is not None
            await db.execute(
                update(ChatSession)
                .where(ChatSession.id == first.session_id)
                .values(last_message_at=session.last_message_at - timedelta(hours=3))
            )
        await exchange(memory, "new topic after lunch")
        assert webhook_agent.requests[-1].json["history"] == []
        await exchange(memory, "follow-up")
        history = [h["content"] for h in webhook_agent.requests[-1].json["history"]]
        assert history == ["new topic after lunch", "echo: new topic after lunch"]


async def test_stop_hands_unfinished_work_back(
    database_url: str, webhook_agent: FakeWebhookAgent
) -> None:
    webhook_agent.delay_seconds = 30
    settings = make_settings(
        database_url,
        agents=[webhook_agent_config(webhook_agent)],
        pipeline={"shutdown_grace_seconds": 0.2},
    )
    async with running_bridge(settings) as bridge:
        result = await bridge.memory().receive("slow one")
        await wait_until(lambda: bool(webhook_agent.requests), within=5, what="the agent call")
        sessions = bridge.sessions
    async with sessions() as db:
        message = (
            await db.execute(select(ChatMessage).where(ChatMessage.id == result.message_id))
        ).scalar_one()
    assert message.state == MessageState.PENDING
    assert message.claimed_by is None


async def test_shutdown_lets_an_in_flight_delivery_finish(database_url: str) -> None:
    settings = make_settings(database_url, pipeline={"shutdown_grace_seconds": 10})
    async with memory_bridge(settings) as (bridge, memory):
        memory.send_delay_seconds = 0.5
        result = await memory.receive("finish me")
        await wait_until(lambda: bool(memory.attempts), within=5, what="the delivery to start")
        sessions = bridge.sessions
    # The channel stayed up until the pipeline had finished its work.
    assert [r.text for r in memory.sent] == ["finish me"]
    async with sessions() as db:
        reply = (
            await db.execute(
                select(ChatMessage).where(ChatMessage.reply_to_message_id == result.message_id)
            )
        ).scalar_one()
    assert reply.state == MessageState.DELIVERED


async def test_message_for_an_agent_no_longer_configured_fails_visibly(database_url: str) -> None:
    async with core(database_url, agents=["assistant", "retired"]) as old:
        result = await old.ingest(memory_message("anyone?", message_id="r1", agent="retired"))
    async with running_bridge(make_settings(database_url)) as bridge:

        async def stored() -> ChatMessage | None:
            async with bridge.sessions() as db:
                return await db.get(ChatMessage, result.message_id)

        async def failed() -> bool:
            message = await stored()
            return message is not None and message.state == MessageState.FAILED

        await wait_until(failed, within=5, what="the message to fail")
        message = await stored()
        assert message is not None and message.state == MessageState.FAILED
        assert "unknown agent" in (message.last_error or "")
        assert message.claimed_by is None


async def test_deleted_message_is_no_longer_sent_as_history(
    database_url: str, webhook_agent: FakeWebhookAgent
) -> None:
    settings = make_settings(database_url, agents=[webhook_agent_config(webhook_agent)])
    async with memory_bridge(settings) as (bridge, memory):
        await exchange(memory, "my password is hunter2", message_id="secret")
        edit = {
            "channel": "inmemory",
            "agent_slug": "assistant",
            "external_conv_id": "inmemory:conv-1",
        }
        assert await bridge.pipeline.dispatch(
            MessageEdit(**edit, external_message_id="secret", text=None)
        )
        await exchange(memory, "what did I say?")
        history = [h["content"] for h in webhook_agent.requests[-1].json["history"]]
        assert "my password is hunter2" not in history


async def test_reply_with_nul_is_stored_without_it(
    database_url: str, webhook_agent: FakeWebhookAgent
) -> None:
    webhook_agent.add_reply("zero\x00byte")
    settings = make_settings(database_url, agents=[webhook_agent_config(webhook_agent)])
    async with running_bridge(settings) as bridge:
        await bridge.memory().receive("say something odd")
        assert (await bridge.memory().next_sent()).text == "zerobyte"
