"""In-process state keyed by outside input is bounded in size and in age.

Every distinct user or chat that writes adds a key: the display-name cache (Slack, Feishu)
and Discord's typing indicators must not grow with them for ever.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

import channels.discord.adapter as discord_adapter
from bridge.store.models import ChatMessage
from channels.name_cache import NameCache
from tests.fakes.discord import FakeDiscord
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.discord import discord_section, restore_discord_endpoints  # noqa: F401
from tests.support.harness import (
    WEBHOOK_SECRET,
    RunningBridge,
    make_settings,
    running_bridge,
    webhook_agent_config,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_distinct_ids_stays_within_the_bound() -> None:
    cache = NameCache(ttl_seconds=3600)
    for number in range(50_000):
        cache.put(f"user:U{number}", f"User {number}")
    assert len(cache) == NameCache.DEFAULT_MAX_ENTRIES == 10_000
    assert cache.get("user:U49999") == "User 49999"
    assert cache.get("user:U0") is None, "the oldest entries went first"


def test_the_least_recently_used_entry_is_evicted() -> None:
    cache = NameCache(ttl_seconds=60, max_entries=3)
    cache.put("a", "A")
    cache.put("b", "B")
    cache.put("c", "C")
    assert cache.get("a") == "A"  # a is now the most recently used
    cache.put("d", "D")
    assert len(cache) == 3
    assert cache.get("b") is None
    assert [cache.get(key) for key in ("a", "c", "d")] == ["A", "C", "D"]
    cache.put("c", "C2")  # a refresh replaces, it does not grow
    assert len(cache) == 3 and cache.get("c") == "C2"


def test_entries_expire_and_are_dropped() -> None:
    clock = Clock()
    cache = NameCache(ttl_seconds=60, max_entries=10, clock=clock)
    cache.put("a", "A")
    clock.now += 30
    cache.put("b", "B")
    assert cache.get("a") == "A"
    clock.now += 31
    assert cache.get("a") is None, "expired 61 s after it was fetched"
    assert cache.get("b") == "B"
    assert len(cache) == 1, "an expired entry that was looked up is gone"
    clock.now += 60
    cache.put("c", "C")  # a write also sweeps out what has expired
    assert len(cache) == 1 and cache.get("c") == "C"


async def _user_messages(bridge: RunningBridge, count: int) -> None:
    for _ in range(500):
        async with bridge.sessions() as db:
            stored = (
                await db.execute(
                    select(func.count()).select_from(ChatMessage).where(ChatMessage.role == "user")
                )
            ).scalar_one()
        if stored >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} user messages stored")


async def _typing_settles(fake: FakeDiscord, count: int) -> list[str]:
    """The channels shown as typing, once ``count`` or nothing more has come for a while."""
    for _ in range(50):
        if len(fake.typing) >= count:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    return list(fake.typing)


@pytest.mark.usefixtures("restore_discord_endpoints")
async def test_discord_typing_indicators_are_bounded_and_end(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages in many channels while the agent is slow: at most the bound of channels show
    typing at once, and an indicator that ended frees its place for another channel."""
    monkeypatch.setattr(discord_adapter, "MAX_TYPING_CHANNELS", 3)
    monkeypatch.setattr(discord_adapter, "TYPING_MAX_SECONDS", 0.5)
    async with FakeWebhookAgent(secret=WEBHOOK_SECRET) as slow, FakeDiscord() as fake:
        slow.delay_seconds = 60  # no reply (which would end the indicator) during the test
        agent = webhook_agent_config(slow, timeout_seconds=90, discord=discord_section(fake))
        settings = make_settings(
            database_url, agents=[agent], pipeline={"shutdown_grace_seconds": 0}
        )
        async with running_bridge(settings) as bridge:
            await fake.wait_identified(timeout=10)
            first = [str(910_000_000_000_000_000 + n) for n in range(6)]
            for number, channel in enumerate(first):
                await fake.send_message(
                    channel_id=channel,
                    author_id=str(810_000_000_000_000_000 + number),
                    author_name=f"user{number}",
                    content=f"hello {number}",
                )
            await _user_messages(bridge, 6)
            typed = await _typing_settles(fake, 3)
            assert len(set(typed)) == 3 and set(typed) <= set(first)

            await asyncio.sleep(1.0)  # the indicators end (TYPING_MAX_SECONDS)
            later = str(920_000_000_000_000_000)
            await fake.send_message(
                channel_id=later, author_id="820000000000000000", author_name="late", content="hi"
            )
            await _user_messages(bridge, 7)
            typed = await _typing_settles(fake, 4)
            assert later in typed, "an ended indicator still held its place"
