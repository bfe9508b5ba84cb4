"""Hand-offs where two agents are two bots in one shared place, on the strict fakes of Slack
and Discord with the real slack-bolt and discord.py clients: the mentioned agent gets the
message through the bridge and answers in the same thread under its own bot identity, and two
agents that always mention each other stop at the hop budget with a visible note."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from bridge.appkeys import CHANNELS
from tests.fakes.discord import DEFAULT_CHANNEL_ID, FakeDiscord
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.discord import discord_section, restore_discord_endpoints  # noqa: F401
from tests.support.harness import WEBHOOK_SECRET, make_settings, running_bridge
from tests.support.processes import wait_until

BETA_TOKEN = "fake-beta-token"
BETA_BOT_ID = "1100000000000000002"


def webhook_backend(fake: FakeWebhookAgent) -> dict[str, Any]:
    return {"backend": "webhook", "webhook": {"url": fake.url, "secret": WEBHOOK_SECRET}}


def always_mentioning(fake: FakeWebhookAgent) -> None:
    """Each agent answers by handing over to the other, with new words every time."""
    turns = itertools.count(1)
    other = {"alpha": "beta", "beta": "alpha"}
    fake.reply_with = lambda body: f"@{other[body['agent']['slug']]} turn {next(turns)}"


@pytest.mark.usefixtures("restore_discord_endpoints")
async def test_discord_bots_that_always_mention_each_other_stop_at_the_hop_budget(
    database_url: str,
) -> None:
    async with FakeDiscord() as discord, FakeWebhookAgent(secret=WEBHOOK_SECRET) as agent:
        always_mentioning(agent)
        discord.add_bot(token=BETA_TOKEN, user_id=BETA_BOT_ID, name="betabot")
        alpha_id = discord.bot.id
        agents = [
            {
                "slug": "alpha",
                "peers": ["beta"],
                "discord": discord_section(discord),
                **webhook_backend(agent),
            },
            {
                "slug": "beta",
                "peers": ["alpha"],
                "discord": discord_section(discord, bot_token=BETA_TOKEN),
                **webhook_backend(agent),
            },
        ]
        async with running_bridge(make_settings(database_url, agents=agents)) as bridge:
            await discord.wait_identified(timeout=10)
            await discord.wait_identified(timeout=10, bot_id=BETA_BOT_ID)
            for slug in ("alpha", "beta"):
                channel = bridge.app[CHANNELS].get("discord", slug)
                assert channel is not None
                await wait_until(lambda c=channel: c.mention_id() is not None, within=10)
            await discord.send_message(content="kick off", mentions_bot=True)
            posts = [await discord.next_post(timeout=10) for _ in range(6)]
            await discord.expect_no_post(within=1.0)

        authors = [p["author"]["id"] for p in posts]
        assert authors == [alpha_id, BETA_BOT_ID] * 2 + [alpha_id, alpha_id]
        assert [p["content"] for p in posts[:5]] == [
            f"<@{BETA_BOT_ID}> turn 1",
            f"<@{alpha_id}> turn 2",
            f"<@{BETA_BOT_ID}> turn 3",
            f"<@{alpha_id}> turn 4",
            f"<@{BETA_BOT_ID}> turn 5",
        ]
        assert "hop 5, over the limit of 4" in posts[5]["content"]
        assert {p["channel_id"] for p in posts} == {DEFAULT_CHANNEL_ID}
        assert len(agent.requests) == 5
