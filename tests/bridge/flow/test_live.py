"""Live replies through the real app: shown while written, recorded, finished once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bridge.store.models import ChatMessage, MessageState
from tests.bridge.flow.test_pipeline import memory_bridge
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.harness import WEBHOOK_SECRET, make_settings, webhook_agent_config

TEXT = "the quick brown fox jumps over the lazy dog " * 3


def streaming_agent(**memory: Any) -> dict[str, Any]:
    """The echo agent streaming its reply 4 characters at a time, 10 ms apart."""
    return {
        "slug": "assistant",
        "echo_stream_chunk_chars": 4,
        "echo_stream_delay_ms": 10,
        "inmemory": {"live": True, "live_interval_seconds": 0.02, **memory},
    }


async def test_a_streamed_reply_is_shown_growing_then_delivered_once(database_url: str) -> None:
    settings = make_settings(database_url, agents=[streaming_agent()])
    async with memory_bridge(settings) as (bridge, memory):
        result = await memory.receive(TEXT)
        reply = await memory.next_sent()
        shown = [text for message, text in memory.shown if message == result.message_id]
        assert reply.text == TEXT
        assert len(shown) >= 2, "the reply was never shown before it was complete"
        assert all(TEXT.startswith(text) for text in shown)
        assert [len(text) for text in shown] == sorted(len(text) for text in shown)
        assert shown[0] != TEXT
        # The final delivery finishes the message the live reply started, with its key.
        assert reply.live_ids == (f"memory-live-{result.message_id}",)
        assert reply.outcome == "answered"
        async with bridge.sessions() as db:
            rows = (
                await db.scalars(
                    select(ChatMessage)
                    .where(ChatMessage.session_id == result.session_id)
                    .order_by(ChatMessage.id)
                )
            ).all()
        user, answer = rows  # one stored reply: no row per chunk
        assert user.live_message_ids == [f"memory-live-{result.message_id}"]
        assert answer.delivery_key == user.reply_key
        assert answer.content == TEXT
        assert len(memory.sent) == 1


async def test_many_chunks_cost_few_calls(database_url: str) -> None:
    """Chunks are coalesced: 400 one-character chunks cost calls by the channel's interval,
    not one each (the bound leaves room for a slow machine)."""
    agent = streaming_agent(live_interval_seconds=0.2)
    agent |= {"echo_stream_chunk_chars": 1, "echo_stream_delay_ms": 2}
    text = "x" * 400
    async with memory_bridge(make_settings(database_url, agents=[agent])) as (_bridge, memory):
        result = await memory.receive(text)
        reply = await memory.next_sent()
        assert reply.text == text
        calls = [shown for message, shown in memory.shown if message == result.message_id]
        assert 1 <= len(calls) <= 40


async def test_a_channel_that_does_not_show_live_gets_no_calls(database_url: str) -> None:
    agent = streaming_agent(live=False)
    async with memory_bridge(make_settings(database_url, agents=[agent])) as (bridge, memory):
        result = await memory.receive(TEXT)
        reply = await memory.next_sent()
        assert reply.text == TEXT
        assert memory.shown == []
        assert reply.live_ids == ()
        stored = await bridge.reply_to(result.message_id, state=MessageState.DELIVERED)
        assert stored.content == TEXT


async def test_an_agent_failing_mid_stream_ends_with_the_apology(database_url: str) -> None:
    """The live message showed part of a reply; the final delivery replaces it with the apology,
    marked failed (for the status reaction), and nothing half-written is stored as a reply."""
    async with FakeWebhookAgent(secret=WEBHOOK_SECRET) as agent:
        agent.add_stream(
            "Half of ", "an answer ", "never finished", cut="abort", cut_after=2, pause_seconds=0.1
        )
        config = webhook_agent_config(agent, memory={"live": True, "live_interval_seconds": 0.02})
        settings = make_settings(database_url, agents=[config])
        async with memory_bridge(settings) as (bridge, memory):
            result = await memory.receive("question")
            reply = await memory.next_sent()
            shown = [text for message, text in memory.shown if message == result.message_id]
            assert shown and shown[0].startswith("Half of")
            assert reply.text == settings.pipeline.apology_text
            assert reply.outcome == "failed"
            assert reply.live_ids == (f"memory-live-{result.message_id}",)
            user, answer = await bridge.messages(result.session_id)
            assert user.state == MessageState.FAILED
            assert (answer.role, answer.content) == ("system", settings.pipeline.apology_text)
