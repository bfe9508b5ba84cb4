"""The Slack channel end to end: the real slack-bolt and slack_sdk inside the bridge, against
the strict local fake of Slack, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import func, select

from bridge.appkeys import CHANNELS
from bridge.store.models import ChatMessage, ChatSession, MessageState
from channels.slack.outbound import reply_text
from tests.channels.contract_drivers import SLACK_BOT_TOKEN as BOT_TOKEN
from tests.channels.contract_drivers import SLACK_CHANNEL as CHANNEL
from tests.channels.contract_drivers import SLACK_DM as DM
from tests.channels.contract_drivers import SLACK_HUMAN as HUMAN
from tests.channels.contract_drivers import SLACK_SIGNING_SECRET as SIGNING_SECRET
from tests.channels.contract_drivers import SLACK_TEAM as TEAM
from tests.channels.contract_drivers import slack_section
from tests.fakes import slack
from tests.fakes.slack import FakeSlack
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.harness import (
    RunningBridge,
    make_settings,
    running_bridge,
    webhook_agent_config,
)
from tests.support.processes import wait_until
from tests.support.replies import outgoing_reply

APP_TOKEN = "xapp-test-app-token"


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(
        bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, app_token=APP_TOKEN
    ) as fake:
        fake.add_channel(CHANNEL, "general")
        fake.add_channel(DM, is_im=True, user=HUMAN)
        fake.add_user(HUMAN, "ada", "Ada")
        yield fake


@asynccontextmanager
async def slack_bridge(
    database_url: str, fake: FakeSlack, *, agent: dict[str, Any] | None = None, **section: Any
) -> AsyncIterator[tuple[RunningBridge, str]]:
    agent = dict(agent or {"slug": "assistant"})
    agent.pop("inmemory", None)
    agent["slack"] = slack_section(fake, **section)
    async with running_bridge(make_settings(database_url, agents=[agent])) as bridge:
        yield bridge, f"{bridge.url}/slack/assistant/events"


async def stored_user_messages(bridge: RunningBridge) -> list[ChatMessage]:
    return [m for m in await bridge.messages() if m.role == "user"]


async def test_a_top_level_mention_opens_a_thread_that_needs_no_further_mention(
    database_url: str, fake_slack: FakeSlack
) -> None:
    """Slack-only: the thread is made by replying to the mention itself (its ts is the root)."""
    async with slack_bridge(database_url, fake_slack) as (_bridge, url):
        mention = slack.app_mention(channel=CHANNEL, user=HUMAN, text="<@U0BOT00001> start")
        root = mention["event"]["ts"]
        await fake_slack.push_event(url, mention)
        await fake_slack.next_post()
        follow = slack.message(channel=CHANNEL, user=HUMAN, text="and more", thread_ts=root)
        assert (await fake_slack.push_event(url, follow)).status == 200
        post = await fake_slack.next_post()
        assert (post["text"], post["thread_ts"]) == ("and more", root)


async def test_without_require_mention_every_channel_message_is_answered(
    database_url: str, fake_slack: FakeSlack
) -> None:
    async with slack_bridge(
        database_url, fake_slack, require_mention=False, thread_replies=False
    ) as (_bridge, url):
        await fake_slack.push_event(url, slack.message(channel=CHANNEL, user=HUMAN, text="hi all"))
        post = await fake_slack.next_post()
        assert post["text"] == "hi all" and post.get("thread_ts") is None


async def test_mention_seen_as_app_mention_and_message_is_answered_once(
    database_url: str, fake_slack: FakeSlack
) -> None:
    async with slack_bridge(database_url, fake_slack) as (bridge, url):
        ts = slack.new_ts()
        text = "<@U0BOT00001> once please"
        mention = slack.app_mention(channel=CHANNEL, user=HUMAN, text=text, ts=ts)
        as_message = slack.message(channel=CHANNEL, user=HUMAN, text=text, ts=ts)
        results = await asyncio.gather(
            fake_slack.push_event(url, mention), fake_slack.push_event(url, as_message)
        )
        assert [r.status for r in results] == [200, 200]
        assert (await fake_slack.next_post())["text"] == "once please"
        # A later message is the next one answered: no second reply was queued before it.
        await fake_slack.push_event(url, slack.message(channel=DM, user=HUMAN, text="after"))
        assert (await fake_slack.next_post())["text"] == "after"
        assert [m.content for m in await stored_user_messages(bridge)] == ["once please", "after"]
        assert [p["text"] for p in fake_slack.posts] == ["once please", "after"]


async def test_bad_and_stale_signatures_get_401_and_store_nothing(
    database_url: str, fake_slack: FakeSlack
) -> None:
    import time

    async with slack_bridge(database_url, fake_slack) as (bridge, url):
        event = slack.message(channel=DM, user=HUMAN, text="forged")
        wrong = await fake_slack.push_event(url, event, secret="not-the-secret")
        stale = await fake_slack.push_event(url, event, timestamp=int(time.time()) - 301)
        assert (wrong.status, stale.status) == (401, 401)
        genuine = slack.message(channel=DM, user=HUMAN, text="genuine")
        assert (await fake_slack.push_event(url, genuine)).status == 200
        assert (await fake_slack.next_post())["text"] == "genuine"
        assert [m.content for m in await bridge.messages()] == ["genuine", "genuine"]
        assert [p["text"] for p in fake_slack.posts] == ["genuine"]


async def test_url_verification_is_answered(database_url: str, fake_slack: FakeSlack) -> None:
    async with slack_bridge(database_url, fake_slack) as (_bridge, url):
        result = await fake_slack.push_event(url, slack.url_verification("challenge-123"))
        assert result.status == 200 and result.json() == {"challenge": "challenge-123"}


async def test_ok_false_error_is_kept_on_the_reply(
    database_url: str, fake_slack: FakeSlack
) -> None:
    fake_slack.error_next(1, error="not_in_channel")
    async with slack_bridge(database_url, fake_slack) as (bridge, url):
        await fake_slack.push_event(url, slack.message(channel=DM, user=HUMAN, text="hi"))
        [user] = [m for m in await _wait_for_messages(bridge, 1) if m.role == "user"]
        reply = await bridge.reply_to(user.id, state=MessageState.FAILED)
        assert reply.last_error == "slack chat.postMessage: not_in_channel"
        assert reply.attempts == 1  # permanent: not retried


async def test_post_that_landed_but_lost_its_answer_is_not_posted_again(
    database_url: str, fake_slack: FakeSlack
) -> None:
    fake_slack.accept_then_drop_next(1)
    async with slack_bridge(database_url, fake_slack) as (bridge, url):
        mention = slack.app_mention(channel=CHANNEL, user=HUMAN, text="<@U0BOT00001> careful")
        await fake_slack.push_event(url, mention)
        [user] = [m for m in await _wait_for_messages(bridge, 1) if m.role == "user"]
        reply = await bridge.reply_to(user.id, state=MessageState.DELIVERED)
        bot_posts = [
            m for m in fake_slack.messages(CHANNEL) if m.get("bot_id") == fake_slack.bot_id
        ]
        assert len(bot_posts) == 1
        assert reply.platform_message_ids == [bot_posts[0]["ts"]]
        assert len(fake_slack.calls_to("chat.postMessage")) == 1
        assert len(fake_slack.calls_to("conversations.replies")) == 1


async def test_slow_agent_is_still_acknowledged_at_once(
    database_url: str, fake_slack: FakeSlack, webhook_agent: FakeWebhookAgent
) -> None:
    webhook_agent.delay_seconds = 30
    agent = webhook_agent_config(webhook_agent, timeout_seconds=60)
    async with slack_bridge(database_url, fake_slack, agent=agent) as (bridge, url):
        event = slack.message(channel=DM, user=HUMAN, text="think hard")
        results = await fake_slack.deliver(url, event, deadline=3.0)
        # One delivery, answered 200 inside Slack's deadline, while the agent is still busy.
        assert [r.status for r in results] == [200]
        assert len(await stored_user_messages(bridge)) == 1
        # The agent has the message and is still thinking: nothing posted yet.
        await wait_until(lambda: len(webhook_agent.requests) == 1, within=10)
        assert fake_slack.posts == []
        webhook_agent.delay_seconds = 0
    assert len(webhook_agent.requests) == 1


async def test_socket_mode_round_trip(database_url: str, fake_slack: FakeSlack) -> None:
    async with slack_bridge(database_url, fake_slack, app_token=APP_TOKEN) as (bridge, _url):
        await fake_slack.wait_socket_connected()
        event = slack.app_mention(channel=CHANNEL, user=HUMAN, text="<@U0BOT00001> via socket")
        envelope = await fake_slack.push_socket_event(event)
        await fake_slack.wait_ack(envelope)
        post = await fake_slack.next_post()
        assert (post["text"], post["thread_ts"]) == ("via socket", event["event"]["ts"])
        assert len(await stored_user_messages(bridge)) == 1


async def test_names_are_looked_up_once_and_cached(
    database_url: str, fake_slack: FakeSlack
) -> None:
    async with slack_bridge(database_url, fake_slack) as (bridge, url):
        for text in ("one", "two", "three"):
            await fake_slack.push_event(
                url, slack.app_mention(channel=CHANNEL, user=HUMAN, text=f"<@U0BOT00001> {text}")
            )
        for _ in range(3):
            await fake_slack.next_post()
        assert len(fake_slack.calls_to("users.info")) == 1
        assert len(fake_slack.calls_to("conversations.info")) == 1
        async with bridge.sessions() as db:
            count = (await db.execute(select(func.count()).select_from(ChatSession))).scalar()
        assert count == 4  # three threads and their channel


def test_reply_text_renders_mentioned_agents_as_slack_mentions() -> None:
    mentions = {"planner": "U0BOT00002", "critic": "U0BOT00003"}

    assert (
        reply_text("@planner, then @critic: see a@planner.io and @plannerx", mentions)
        == "<@U0BOT00002>, then <@U0BOT00003>: see a@planner.io and @plannerx"
    )
    assert reply_text("@someone else", mentions) == "@someone else"
    assert reply_text("@planner", {}) == "@planner"


async def test_mention_id_is_the_bot_user_from_auth_test(
    database_url: str, fake_slack: FakeSlack
) -> None:
    async with slack_bridge(database_url, fake_slack) as (bridge, _url):
        channel = bridge.app[CHANNELS].get("slack", "assistant")
        assert channel is not None
        assert channel.mention_id() == fake_slack.bot_user_id == slack.DEFAULT_BOT_USER_ID


async def test_mention_id_is_none_when_auth_test_fails(
    database_url: str, fake_slack: FakeSlack
) -> None:
    async with slack_bridge(database_url, fake_slack, bot_token="xoxb-revoked") as (bridge, _):
        channel = bridge.app[CHANNELS].get("slack", "assistant")
        assert channel is not None
        assert not channel.status().ready
        assert channel.mention_id() is None


async def test_reply_mentions_are_posted_as_native_mentions(
    database_url: str, fake_slack: FakeSlack
) -> None:
    planner = fake_slack.add_bot(
        bot_token="xoxb-planner", bot_user_id="U0BOT00002", bot_id="B0BOT00002", app_id="A0APP2"
    )
    async with slack_bridge(database_url, fake_slack) as (bridge, _url):
        channel = bridge.app[CHANNELS].get("slack", "assistant")
        assert channel is not None
        reply = outgoing_reply(
            channel="slack",
            external_conv_id=f"slack:{TEAM}:{CHANNEL}",
            text="@planner please take over; @nobody stays as written",
            reply_target={"channel": CHANNEL, "thread_ts": "", "message_ts": ""},
            mentions={"planner": planner.user_id},
            delivery_key="d-mention-1",
        )
        [ts] = await channel.send(reply)
        post = await fake_slack.next_post()
        assert post["ts"] == ts
        assert post["text"] == "<@U0BOT00002> please take over; @nobody stays as written"
        assert post["token"] == BOT_TOKEN  # posted by this agent's bot, not the mentioned one
        assert post["metadata"]["event_payload"] == {"delivery_id": "d-mention-1", "part": 0}
        # An in-doubt resend finds the rendered post by its metadata and posts nothing.
        assert await channel.send(replace(reply, in_doubt=True, attempt=2)) == [ts]
        assert len(fake_slack.posts) == 1 and len(fake_slack.calls_to("chat.postMessage")) == 1
        assert len(fake_slack.calls_to("conversations.history")) == 1


async def _wait_for_messages(bridge: RunningBridge, count: int) -> list[ChatMessage]:
    for _ in range(250):
        messages = await bridge.messages()
        if len([m for m in messages if m.role == "user"]) >= count:
            return messages
        await asyncio.sleep(0.02)
    raise AssertionError("messages never stored")
