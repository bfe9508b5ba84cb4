"""The Discord channel end to end: the real discord.py client in the bridge against a strict
local fake of Discord's REST API and gateway, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bridge.appkeys import CHANNELS
from bridge.store.models import ChatSession
from channels.discord.adapter import DiscordChannel
from tests.fakes.discord import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    shard_for,
)
from tests.support.discord import discord_section, restore_discord_endpoints  # noqa: F401
from tests.support.harness import RunningBridge, make_settings, running_bridge
from tests.support.processes import bridge_database, serving_bridge, wait_until, write_toml
from tests.support.replies import outgoing_reply

BOT_MENTION_FREE = "what's the weather in Berlin?"
HELPER_TOKEN = "fake-helper-token"
HELPER_BOT_ID = "1100000000000000002"


pytestmark = pytest.mark.usefixtures("restore_discord_endpoints")


@asynccontextmanager
async def discord_bridge(
    database_url: str, fake: FakeDiscord, **extra: Any
) -> AsyncIterator[RunningBridge]:
    settings = make_settings(
        database_url, agents=[{"slug": "assistant", "discord": discord_section(fake, **extra)}]
    )
    async with running_bridge(settings) as bridge:
        await fake.wait_identified(timeout=10)
        yield bridge


def _discord_channel(bridge: RunningBridge, agent: str = "assistant") -> DiscordChannel:
    channel = bridge.app[CHANNELS].get("discord", agent)
    assert isinstance(channel, DiscordChannel)
    return channel


async def _sessions(bridge: RunningBridge) -> dict[str, ChatSession]:
    async with bridge.sessions() as db:
        found = (await db.execute(select(ChatSession))).scalars()
        return {session.external_conv_id: session for session in found}


async def _reported_not_ready(bridge: RunningBridge, reason: str) -> None:
    """/readyz says 503 with ``reason`` in the Discord channel's detail."""
    async with aiohttp.ClientSession() as http:

        async def reported() -> bool:
            async with http.get(bridge.url + "/readyz") as response:
                detail = (await response.json())["channels"]["discord/assistant"]["detail"]
                return response.status == 503 and reason in detail

        await wait_until(reported, within=10)


async def _stored(bridge: RunningBridge) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in await bridge.messages()]


async def test_a_missing_privileged_intent_is_reported_in_readyz(database_url: str) -> None:
    async with FakeDiscord(message_content_allowed=False) as fake:
        settings = make_settings(
            database_url, agents=[{"slug": "assistant", "discord": discord_section(fake)}]
        )
        async with running_bridge(settings) as bridge:
            await _reported_not_ready(bridge, "MESSAGE CONTENT")
            identifies = fake.identify_count()
            await fake.expect_no_post(within=1.5)
            assert fake.identify_count() == identifies, "a fatal close is not retried"


async def test_two_shards_in_two_processes_each_answer_only_their_guilds(
    postgres_url: str, tmp_path: Path
) -> None:
    guilds = []
    for shard in (0, 1):
        guild_id = next(
            str(candidate << 22)
            for candidate in range(1000 + shard * 7, 10_000)
            if shard_for(candidate << 22, 2) == shard
        )
        guilds.append(
            FakeGuild(
                id=guild_id,
                name=f"guild {shard}",
                channels=[FakeChannel(id=str(int(guild_id) + 1), name=f"general-{shard}")],
            )
        )
    agents = [{"slug": "assistant"}]
    async with FakeDiscord(guilds=guilds) as fake, bridge_database(postgres_url, agents):
        configs = [
            write_toml(
                tmp_path / f"shard{shard}.toml",
                {
                    "database": {"url": postgres_url},
                    "agents": [
                        {
                            "slug": "assistant",
                            "discord": discord_section(fake, shard_ids=[shard], shard_count=2),
                        }
                    ],
                },
            )
            for shard in (0, 1)
        ]
        async with (
            serving_bridge(configs[0], cwd=tmp_path) as first,
            serving_bridge(configs[1], cwd=tmp_path) as second,
        ):
            await fake.wait_identified(shard_id=0, timeout=15)
            await fake.wait_identified(shard_id=1, timeout=15)
            for guild in guilds:
                await fake.send_message(
                    channel_id=guild.channels[0].id,
                    content=f"hello {guild.name}",
                    mentions_bot=True,
                )
            posts = [await fake.next_post(timeout=15) for _ in guilds]
            await fake.expect_no_post(within=1.0)
            assert sorted(p["content"] for p in posts) == ["hello guild 0", "hello guild 1"]
            for process, guild in ((first, guilds[0]), (second, guilds[1])):
                await process.wait_for_log(f"conversation=discord:{guild.id}:")
                other = guilds[1] if guild is guilds[0] else guilds[0]
                assert f"conversation=discord:{other.id}:" not in process.log


async def test_a_crashed_client_is_restarted_and_answers_again(database_url: str) -> None:
    async with FakeDiscord() as fake, discord_bridge(database_url, fake):
        broken = dict(fake.dispatched(0, "GUILD_CREATE")[0]["d"]["channels"][0])
        # A MESSAGE_CREATE without its hard-required "type" ends discord.py's start().
        await fake.dispatch_event(
            "MESSAGE_CREATE",
            {"id": "1", "channel_id": broken["id"], "content": "x", "author": fake.bot.to_dict()},
        )
        await fake.wait_identified(timeout=15, count=2)
        await fake.send_message(content="still there?", mentions_bot=True)
        assert (await fake.next_post(timeout=10))["content"] == "still there?"


async def test_a_refused_token_is_reported_and_not_retried(database_url: str) -> None:
    async with FakeDiscord() as fake:
        section = discord_section(fake, bot_token="not-the-token")
        settings = make_settings(database_url, agents=[{"slug": "assistant", "discord": section}])
        async with running_bridge(settings) as bridge:
            await _reported_not_ready(bridge, "token was refused")
            attempts = len(fake.requests_to("GET", r"/api/v10/users/@me"))
            await fake.expect_no_post(within=1.5)
            assert len(fake.requests_to("GET", r"/api/v10/users/@me")) == attempts


async def test_mention_id_is_the_bots_id_and_peer_mentions_are_posted_natively(
    database_url: str,
) -> None:
    async with FakeDiscord() as fake:
        fake.add_bot(token=HELPER_TOKEN, user_id=HELPER_BOT_ID, name="helperbot")
        async with discord_bridge(database_url, fake) as bridge:
            channel = _discord_channel(bridge)
            await wait_until(lambda: channel.mention_id() is not None, within=10)
            assert channel.mention_id() == fake.bot.id
            reply = outgoing_reply(
                channel="discord",
                external_conv_id=f"discord:{DEFAULT_GUILD_ID}:{DEFAULT_CHANNEL_ID}",
                text="@helper, over to you (not @someone)",
                reply_target={"channel_id": DEFAULT_CHANNEL_ID, "guild_id": DEFAULT_GUILD_ID},
                mentions={"helper": HELPER_BOT_ID},
                delivery_key="handoff-1",
            )
            ids = await channel.send(reply)
            post = await fake.next_post(timeout=10)
            assert ids == [post["id"]] and post["channel_id"] == DEFAULT_CHANNEL_ID
            assert post["content"] == f"<@{HELPER_BOT_ID}>, over to you (not @someone)"
            assert post["author"]["id"] == fake.bot.id
            assert [m["id"] for m in post["mentions"]] == [HELPER_BOT_ID]
            (request,) = fake.requests_to("POST", r"/api/v10/channels/\d+/messages")
            assert "users" in request.json["allowed_mentions"]["parse"]
            assert request.bot_id == fake.bot.id


async def test_two_agents_are_two_bots_and_each_answers_only_its_own_mentions(
    database_url: str,
) -> None:
    async with FakeDiscord() as fake:
        fake.add_bot(token=HELPER_TOKEN, user_id=HELPER_BOT_ID, name="helperbot")
        agents = [
            {"slug": "assistant", "discord": discord_section(fake)},
            {"slug": "helper", "discord": discord_section(fake, bot_token=HELPER_TOKEN)},
        ]
        async with running_bridge(make_settings(database_url, agents=agents)) as bridge:
            await fake.wait_identified(timeout=10)
            await fake.wait_identified(timeout=10, bot_id=HELPER_BOT_ID)
            helper = _discord_channel(bridge, "helper")
            await wait_until(lambda: helper.mention_id() == HELPER_BOT_ID, within=10)
            asked = await fake.send_message(
                content="can you help?", mentions_bot=True, bot_id=HELPER_BOT_ID
            )
            post = await fake.next_post(timeout=10)
            assert post["author"]["id"] == HELPER_BOT_ID and post["content"] == "can you help?"
            assert post["channel_id"] == DEFAULT_CHANNEL_ID
            assert post["message_reference"]["message_id"] == asked["id"]
            # The first bot saw the question and the helper's answer, and let both be.
            await wait_until(
                lambda: (
                    post["id"] in [p["d"]["id"] for p in fake.dispatched(event="MESSAGE_CREATE")]
                ),
                within=10,
            )
            await fake.expect_no_post(within=0.7)
            (request,) = fake.requests_to("POST", r"/api/v10/channels/\d+/messages")
            assert request.bot_id == HELPER_BOT_ID
            assert request.headers["Authorization"] == f"Bot {HELPER_TOKEN}"
            assert await _stored(bridge) == [
                ("user", "can you help?"),
                ("assistant", "can you help?"),
            ]
            assert _discord_channel(bridge).mention_id() == fake.bot.id
