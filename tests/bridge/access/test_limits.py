"""Rate limits through the real app on both databases: counted in the ingest transaction, a
limited message stored but never answered, one note per window, and no trace of it in the
history the agent is sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from bridge.access.limits import limit_error
from bridge.settings import Settings
from bridge.store.models import ChatMessage, MessageState
from channels.inmemory import MemoryChannel
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.harness import RunningBridge, make_settings, running_bridge, webhook_agent_config
from tests.support.metrics import metric
from tests.support.processes import wait_until

LIMITED_TEXT = "Easy there: try again later."
GROUP = "inmemory:group-1"
UNFINISHED = (
    MessageState.PENDING,
    MessageState.ANSWERING,
    MessageState.TO_DELIVER,
    MessageState.DELIVERING,
)


def limited_agent(base: dict[str, Any] | None = None, **limits: int) -> dict[str, Any]:
    """The echo agent ``assistant`` on the memory channel (or ``base``), with ``limits``."""
    agent = base or {"slug": "assistant", "inmemory": {}}
    return {**agent, "limits": {**limits, "limited_text": LIMITED_TEXT}}


@asynccontextmanager
async def memory_bridge(settings: Settings) -> AsyncIterator[tuple[RunningBridge, MemoryChannel]]:
    async with running_bridge(settings) as bridge:
        yield bridge, bridge.memory()


async def settled(bridge: RunningBridge, *, answered: int) -> list[ChatMessage]:
    """Every message, once ``answered`` user messages are answered and nothing is left to do."""

    async def done() -> bool:
        stored = await bridge.messages()
        return sum(m.state == MessageState.ANSWERED for m in stored) >= answered and not any(
            m.state in UNFINISHED for m in stored
        )

    await wait_until(done, within=15, what=f"{answered} answers and nothing left to deliver")
    return await bridge.messages()


def notes(stored: list[ChatMessage]) -> list[ChatMessage]:
    return [m for m in stored if m.role == "system"]


async def test_three_an_hour_answers_three_of_five_and_notes_once(database_url: str) -> None:
    settings = make_settings(database_url, agents=[limited_agent(user_messages_per_hour=3)])
    async with memory_bridge(settings) as (bridge, memory):
        results = [await memory.receive(f"message {n}", message_id=f"m{n}") for n in range(5)]

        assert [r.limited for r in results] == [None] * 3 + ["user_messages_per_hour"] * 2
        assert [r.to_answer for r in results] == [True] * 3 + [False] * 2
        assert all(not r.duplicate and r.refused is None and r.message_id for r in results)
        stored = await settled(bridge, answered=3)

        users = [m for m in stored if m.role == "user"]
        assert [(m.content, m.state) for m in users] == [
            ("message 0", MessageState.ANSWERED),
            ("message 1", MessageState.ANSWERED),
            ("message 2", MessageState.ANSWERED),
            ("message 3", MessageState.LIMITED),
            ("message 4", MessageState.LIMITED),
        ]
        error = limit_error("user_messages_per_hour")
        assert [m.last_error for m in users[3:]] == [error, error]
        assert error.splitlines()[-1] == "user_messages_per_hour"
        (note,) = notes(stored)
        assert note.content == LIMITED_TEXT
        assert note.reply_to_message_id == results[3].message_id
        assert note.state == MessageState.DELIVERED
        replies = [m for m in stored if m.role == "assistant"]
        assert sorted(m.reply_to_message_id or 0 for m in replies) == [
            r.message_id for r in results[:3]
        ]
        # On the platform: three answers and the one note, nothing else.
        assert sorted(r.text for r in memory.sent) == sorted(
            ["message 0", "message 1", "message 2", LIMITED_TEXT]
        )
        (sent_note,) = [r for r in memory.sent if r.text == LIMITED_TEXT]
        assert sent_note.reply_target == {"conversation": "inmemory:conv-1"}
        assert (
            await metric(
                bridge,
                'bridge_limited_total{agent="assistant",limit="user_messages_per_hour"}',
            )
            == 2
        )


async def test_the_hourly_limit_counts_one_user_across_conversations(database_url: str) -> None:
    settings = make_settings(database_url, agents=[limited_agent(user_messages_per_hour=2)])
    async with memory_bridge(settings) as (bridge, memory):
        first = await memory.receive("in a dm", message_id="a1")
        second = await memory.receive("in a group", message_id="a2", conversation=GROUP)
        third = await memory.receive(
            "in another group", message_id="a3", conversation="inmemory:group-2", is_group=True
        )
        other_user = await memory.receive("me too", message_id="b1", sender="user-2")
        assert [first.limited, second.limited, other_user.limited] == [None, None, None]
        assert third.limited == "user_messages_per_hour"
        stored = await settled(bridge, answered=3)
        (note,) = notes(stored)
        assert note.reply_to_message_id == third.message_id
        assert note.session_id == third.session_id, "the note goes where the message came from"


async def test_a_busy_group_is_limited_per_minute_whoever_writes(database_url: str) -> None:
    settings = make_settings(
        database_url, agents=[limited_agent(conversation_messages_per_minute=2)]
    )
    async with memory_bridge(settings) as (bridge, memory):
        in_group: dict[str, Any] = {"conversation": GROUP, "is_group": True}
        one = await memory.receive("one", message_id="g1", sender="user-1", **in_group)
        two = await memory.receive("two", message_id="g2", sender="user-2", **in_group)
        three = await memory.receive("three", message_id="g3", sender="user-2", **in_group)
        four = await memory.receive("four", message_id="g4", sender="user-1", **in_group)
        # Other conversations have their own minute.
        elsewhere = await memory.receive("hello", message_id="d1", sender="user-1")
        assert [m.limited for m in (one, two, elsewhere)] == [None, None, None]
        assert three.limited == four.limited == "conversation_messages_per_minute"

        stored = await settled(bridge, answered=3)
        (note,) = notes(stored)
        assert note.reply_to_message_id == three.message_id
        assert note.content == LIMITED_TEXT
        assert sorted(r.text for r in memory.sent) == sorted(["one", "two", "hello", LIMITED_TEXT])
        by_id = {m.id: m for m in stored}
        assert by_id[four.message_id].last_error == limit_error("conversation_messages_per_minute")


async def test_limited_messages_are_left_out_of_the_history(
    database_url: str, webhook_agent: FakeWebhookAgent
) -> None:
    """In a group, one person over their limit does not stop the others; what was limited
    never reaches the agent, not even as history of a later answer."""
    agent = limited_agent(webhook_agent_config(webhook_agent), user_messages_per_hour=1)
    settings = make_settings(database_url, agents=[agent])
    async with memory_bridge(settings) as (bridge, memory):
        in_group: dict[str, Any] = {"conversation": GROUP, "is_group": True}
        first = await memory.receive("first", message_id="h1", sender="user-1", **in_group)
        await settled(bridge, answered=1)
        limited = await memory.receive("secret", message_id="h2", sender="user-1", **in_group)
        assert limited.limited == "user_messages_per_hour"
        later = await memory.receive("later", message_id="h3", sender="user-2", **in_group)
        assert later.limited is None
        stored = await settled(bridge, answered=2)

        assert [r.json["message"]["text"] for r in webhook_agent.requests] == ["first", "later"]
        history = webhook_agent.requests[-1].json["history"]
        assert [(h["role"], h["content"]) for h in history] == [
            ("user", "first"),
            ("assistant", "echo: first"),
        ]
        assert all("secret" not in r.body.decode() for r in webhook_agent.requests)
        # The limited message stays in the record, shown as limited.
        by_id = {m.id: m for m in stored}
        assert by_id[limited.message_id].state == MessageState.LIMITED
        assert by_id[first.message_id].state == MessageState.ANSWERED
        assert notes(stored)[0].reply_to_message_id == limited.message_id


async def test_the_window_slides(database_url: str) -> None:
    """Once the counted messages are more than an hour old, the user is answered again, and
    a new window earns a new note."""
    settings = make_settings(database_url, agents=[limited_agent(user_messages_per_hour=1)])
    async with memory_bridge(settings) as (bridge, memory):
        await memory.receive("one", message_id="w1")
        over = await memory.receive("two", message_id="w2")
        assert over.limited == "user_messages_per_hour"
        await settled(bridge, answered=1)
        async with bridge.sessions() as db, db.begin():
            for message in await bridge.messages():
                await db.execute(
                    update(ChatMessage)
                    .where(ChatMessage.id == message.id)
                    .values(created_at=message.created_at - timedelta(hours=2))
                )
        again = await memory.receive("three", message_id="w3")
        assert again.limited is None
        over_again = await memory.receive("four", message_id="w4")
        assert over_again.limited == "user_messages_per_hour"
        stored = await settled(bridge, answered=2)
        assert [n.reply_to_message_id for n in notes(stored)] == [
            over.message_id,
            over_again.message_id,
        ]
        assert sorted(r.text for r in memory.sent) == sorted(
            ["one", "three", LIMITED_TEXT, LIMITED_TEXT]
        )


async def test_a_redelivered_message_counts_once(database_url: str) -> None:
    settings = make_settings(database_url, agents=[limited_agent(user_messages_per_hour=3)])
    async with memory_bridge(settings) as (bridge, memory):
        first = await memory.receive("one", message_id="r1")
        again = await memory.receive("one", message_id="r1")
        assert again.duplicate and again.message_id == first.message_id and again.limited is None
        await memory.receive("two", message_id="r2")
        await memory.receive("two", message_id="r2")
        await memory.receive("one", message_id="r1")
        third = await memory.receive("three", message_id="r3")
        assert third.limited is None, "three messages, however often the platform sent them"
        fourth = await memory.receive("four", message_id="r4")
        assert fourth.limited == "user_messages_per_hour"
        # A redelivered limited message stays one limited message, with its one note.
        fourth_again = await memory.receive("four", message_id="r4")
        assert fourth_again.duplicate and fourth_again.message_id == fourth.message_id
        stored = await settled(bridge, answered=3)
        assert len([m for m in stored if m.role == "user"]) == 4
        (note,) = notes(stored)
        assert note.reply_to_message_id == fourth.message_id
        assert sorted(r.text for r in memory.sent) == sorted(["one", "two", "three", LIMITED_TEXT])


async def test_a_redelivery_in_the_same_batch_as_a_new_message_counts_once(
    database_url: str,
) -> None:
    """Concurrent events share one ingest transaction: a duplicate in it must not use up the
    user's allowance in place of the new message beside it."""
    settings = make_settings(database_url, agents=[limited_agent(user_messages_per_hour=3)])
    async with memory_bridge(settings) as (bridge, memory):
        await memory.receive("one", message_id="b1")
        await memory.receive("two", message_id="b2")
        again, third = await asyncio.gather(
            memory.receive("one", message_id="b1"), memory.receive("three", message_id="b3")
        )
        assert again.duplicate
        assert third.limited is None, "only two messages were stored before it"
        stored = await settled(bridge, answered=3)
        assert notes(stored) == []


async def test_a_redelivery_in_the_same_batch_does_not_take_the_note(database_url: str) -> None:
    """The first message limited in the window gets the note, even when a redelivered one
    (never stored again) comes in the same transaction before it."""
    settings = make_settings(database_url, agents=[limited_agent(user_messages_per_hour=3)])
    async with memory_bridge(settings) as (bridge, memory):
        for n in range(3):
            await memory.receive(f"m{n}", message_id=f"n{n}")
        again, fourth = await asyncio.gather(
            memory.receive("m0", message_id="n0"), memory.receive("over", message_id="n3")
        )
        assert again.duplicate
        assert fourth.limited == "user_messages_per_hour"
        stored = await settled(bridge, answered=3)
        assert [n.reply_to_message_id for n in notes(stored)] == [fourth.message_id]
        assert LIMITED_TEXT in [r.text for r in memory.sent]


async def test_concurrent_messages_of_one_user_are_limited_exactly(database_url: str) -> None:
    settings = make_settings(database_url, agents=[limited_agent(user_messages_per_hour=3)])
    async with memory_bridge(settings) as (bridge, memory):
        results = await asyncio.gather(
            *(memory.receive(f"burst {n}", message_id=f"c{n}") for n in range(8))
        )
        assert sum(r.limited is None for r in results) == 3
        assert sum(r.limited == "user_messages_per_hour" for r in results) == 5
        stored = await settled(bridge, answered=3)
        assert len(notes(stored)) == 1
        assert len(memory.sent) == 4


async def test_zero_means_no_limit(database_url: str) -> None:
    agent = limited_agent(
        user_messages_per_hour=0, conversation_messages_per_minute=0, user_tokens_per_day=0
    )
    settings = make_settings(database_url, agents=[agent])
    async with memory_bridge(settings) as (bridge, memory):
        results = [
            await memory.receive(f"free {n}", message_id=f"z{n}", conversation=GROUP)
            for n in range(8)
        ]
        assert all(r.limited is None for r in results)
        stored = await settled(bridge, answered=8)
        assert notes(stored) == []
        assert sorted(r.text for r in memory.sent) == sorted(f"free {n}" for n in range(8))
