"""Hand-offs where two agents are two bots in one shared place, on the strict fakes of Slack
and Discord with the real slack-bolt and discord.py clients: the mentioned agent gets the
message through the bridge and answers in the same thread under its own bot identity, and two
agents that always mention each other stop at the hop budget with a visible note."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from bridge.appkeys import CHANNELS
from tests.fakes import slack
from tests.fakes.discord import DEFAULT_CHANNEL_ID, FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.discord import discord_section, restore_discord_endpoints  # noqa: F401
from tests.support.harness import WEBHOOK_SECRET, make_settings, running_bridge
from tests.support.processes import wait_until

BETA_TOKEN = "fake-beta-token"
BETA_BOT_ID = "1100000000000000002"

SLACK_ALPHA_TOKEN = "xoxb-alpha-token"
SLACK_BETA_TOKEN = "xoxb-beta-token"
SLACK_ALPHA_SECRET = "alpha-signing-secret"
SLACK_BETA_SECRET = "beta-signing-secret"
SLACK_BETA_USER = "U0BETABOT1"
SLACK_CHANNEL = "C0TEAM0001"
SLACK_HUMAN = "U0HUMAN001"


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


async def test_slack_a_reply_mentioning_a_peer_is_answered_once_by_the_peers_bot_in_the_thread(
    database_url: str,
) -> None:
    async with (
        FakeSlack(bot_token=SLACK_ALPHA_TOKEN, signing_secret=SLACK_ALPHA_SECRET) as fake,
        FakeWebhookAgent(secret=WEBHOOK_SECRET) as agent,
    ):
        beta_bot = fake.add_bot(
            bot_token=SLACK_BETA_TOKEN,
            bot_user_id=SLACK_BETA_USER,
            bot_id="B0BETABOT1",
            app_id="A0BETAAPP1",
            name="beta",
            signing_secret=SLACK_BETA_SECRET,
        )
        fake.add_channel(SLACK_CHANNEL, "team")
        fake.add_user(SLACK_HUMAN, "ada", "Ada")
        answers = {"alpha": "@beta can you check the numbers?", "beta": "Checked: they add up."}
        agent.reply_with = lambda body: answers[body["agent"]["slug"]]

        def section(token: str, secret: str) -> dict[str, Any]:
            return {"bot_token": token, "signing_secret": secret, "api_base_url": fake.api_url}

        agents = [
            {
                "slug": "alpha",
                "peers": ["beta"],
                "slack": section(SLACK_ALPHA_TOKEN, SLACK_ALPHA_SECRET),
                **webhook_backend(agent),
            },
            {
                "slug": "beta",
                "peers": ["alpha"],
                "slack": section(SLACK_BETA_TOKEN, SLACK_BETA_SECRET),
                **webhook_backend(agent),
            },
        ]
        async with running_bridge(make_settings(database_url, agents=agents)) as bridge:
            beta_channel = bridge.app[CHANNELS].get("slack", "beta")
            assert beta_channel is not None
            await wait_until(lambda: beta_channel.mention_id() == SLACK_BETA_USER, within=10)
            event = slack.app_mention(
                channel=SLACK_CHANNEL, user=SLACK_HUMAN, text="how did Q3 go?"
            )
            pushed = await fake.push_event(f"{bridge.url}/slack/alpha/events", event)
            assert pushed.status == 200
            thread = event["event"]["ts"]

            first = await fake.next_post(timeout=10)
            assert first["token"] == SLACK_ALPHA_TOKEN
            assert first["text"] == f"<@{SLACK_BETA_USER}> can you check the numbers?"
            assert (first["channel"], first["thread_ts"]) == (SLACK_CHANNEL, thread)

            second = await fake.next_post(timeout=10)
            assert second["token"] == SLACK_BETA_TOKEN and second["user"] == SLACK_BETA_USER
            assert second["text"] == "Checked: they add up."
            assert (second["channel"], second["thread_ts"]) == (SLACK_CHANNEL, thread)

            # Were Slack to deliver alpha's post to beta as well, beta would still answer once.
            echoed = fake.event_for_post(first, to=beta_bot.app_id)
            again = await fake.push_event(
                f"{bridge.url}/slack/beta/events", echoed, secret=SLACK_BETA_SECRET
            )
            assert again.status == 200
            await fake.expect_no_post(within=1.0)

            stored = [(m.role, m.content) for m in await bridge.messages()]
            assert stored.count(("user", "can you check the numbers?")) == 1
            assert len(agent.requests) == 2
