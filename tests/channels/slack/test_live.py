"""Slack live replies through the real app and slack_sdk, against the strict fake: native
streams, edits, status reactions, the final delivery, Markdown. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest

from bridge.appkeys import CHANNELS
from bridge.ports.live import Draft, LiveChannel
from bridge.settings import PipelineSettings
from bridge.store.models import ChatMessage, MessageState
from channels.slack.mrkdwn import to_mrkdwn
from channels.slack.outbound import reply_parts
from tests.channels.contract_drivers import SLACK_BOT_TOKEN as BOT_TOKEN
from tests.channels.contract_drivers import SLACK_CHANNEL as CHANNEL
from tests.channels.contract_drivers import SLACK_DM as DM
from tests.channels.contract_drivers import SLACK_HUMAN as HUMAN
from tests.channels.contract_drivers import SLACK_SIGNING_SECRET as SIGNING_SECRET
from tests.channels.contract_drivers import SLACK_TEAM as TEAM
from tests.channels.contract_drivers import slack_section
from tests.fakes import slack
from tests.fakes.slack import ApiCall, FakeSlack
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.harness import RunningBridge, make_settings, running_bridge
from tests.support.harness import webhook_agent_config as agent_config
from tests.support.replies import outgoing_reply

LONG = "\n\n".join(f"Paragraph {i}: " + "word " * 150 for i in range(12))
MARKDOWN = (
    "**Bold** and [a link](https://example.com/docs)\n\n"
    "- first item\n- second item\n\n"
    "```python\nprint(1 < 2 and 3 > 2)\n```\n\n"
    "<script>alert('x')</script>"
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET) as started:
        started.add_channel(CHANNEL, "general")
        started.add_channel(DM, is_im=True, user=HUMAN)
        started.add_user(HUMAN, "ada", "Ada")
        yield started


@asynccontextmanager
async def slack_bridge(
    database_url: str, fake: FakeSlack, agent: FakeWebhookAgent | None = None, **section: Any
) -> AsyncIterator[tuple[RunningBridge, str]]:
    config: dict[str, Any] = agent_config(agent) if agent else {"slug": "assistant"}
    config.pop("inmemory", None)
    config["slack"] = slack_section(fake, **section)
    async with running_bridge(make_settings(database_url, agents=[config])) as bridge:
        yield bridge, f"{bridge.url}/slack/assistant/events"


def accepted(fake: FakeSlack, method: str) -> list[ApiCall]:
    return [call for call in fake.calls_to(method) if call.status == 200 and call.error is None]


def bot_messages(fake: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [m for m in fake.messages(channel) if m.get("bot_id") == fake.bot_id]


async def asked(bridge: RunningBridge) -> ChatMessage:
    for _ in range(500):
        users = [m for m in await bridge.messages() if m.role == "user"]
        if users:
            return users[0]
        await asyncio.sleep(0.02)
    raise AssertionError("the message was never stored")


def assert_final(message: dict[str, Any], part: str) -> None:
    """A finished part: the Markdown block, its mrkdwn fallback, no longer streaming."""
    assert message["blocks"] == [{"type": "markdown", "text": part}]
    assert message["text"] == to_mrkdwn(part)


async def test_a_native_stream_grows_then_ends_as_the_exact_reply_with_reactions(
    database_url: str, fake: FakeSlack, webhook_agent: FakeWebhookAgent
) -> None:
    webhook_agent.release = asyncio.Event()
    webhook_agent.add_stream("Hello ", "**world**, ", "and more.")
    final = "Hello **world**, and more."
    async with slack_bridge(database_url, fake, webhook_agent) as (bridge, url):
        mention = slack.app_mention(channel=CHANNEL, user=HUMAN, text="<@U0BOT00001> hi")
        root = mention["event"]["ts"]
        await fake.push_event(url, mention)
        await fake.wait_until(lambda: bool(accepted(fake, "chat.startStream")), timeout=15)
        [start] = accepted(fake, "chat.startStream")
        # The first words are shown while the agent still writes, in the mention's thread.
        assert start.params["markdown_text"] == "Hello"  # a part ends at its last word
        assert start.params["thread_ts"] == root
        assert (start.params["recipient_team_id"], start.params["recipient_user_id"]) == (
            TEAM,
            HUMAN,
        )
        assert fake.reactions_on(CHANNEL, root) == {"eyes"}
        assert {"channel_id": CHANNEL, "thread_ts": root, "status": "is thinking…"} in (
            fake.statuses
        )
        webhook_agent.release.set()
        user = await asked(bridge)
        reply = await bridge.reply_to(user.id, state=MessageState.DELIVERED)
        [message] = bot_messages(fake, CHANNEL)
        stream_ts = accepted(fake, "chat.startStream")[0].params
        assert reply.platform_message_ids == [message["ts"]]
        assert fake.streams == {(CHANNEL, message["ts"]): "stopped"}
        assert_final(message, final)
        assert message["metadata"]["event_payload"]["delivery_id"] == reply.delivery_key
        assert message["thread_ts"] == root == stream_ts["thread_ts"]
        assert fake.calls_to("chat.postMessage") == []
        assert len(accepted(fake, "chat.startStream")) == 1
        assert fake.reactions_on(CHANNEL, root) == {"white_check_mark"}


async def test_a_rate_limited_edit_is_retried_and_the_reply_ends_complete(
    database_url: str, fake: FakeSlack, webhook_agent: FakeWebhookAgent
) -> None:
    webhook_agent.release = asyncio.Event()
    webhook_agent.add_stream("Counting: ", "one, two, three.")
    fake.rate_limit_next(1, retry_after=1, method="chat.update")
    async with slack_bridge(database_url, fake, webhook_agent) as (bridge, url):
        await fake.push_event(url, slack.message(channel=DM, user=HUMAN, text="count"))
        await fake.wait_until(lambda: bool(accepted(fake, "chat.startStream")), timeout=15)
        webhook_agent.release.set()
        reply = await bridge.reply_to((await asked(bridge)).id, state=MessageState.DELIVERED)
        assert [call.status for call in fake.calls_to("chat.update")] == [429, 200]
        [message] = bot_messages(fake, DM)
        assert_final(message, "Counting: one, two, three.")
        assert reply.platform_message_ids == [message["ts"]]
        assert reply.attempts == 2
        assert fake.calls_to("chat.postMessage") == []


async def test_a_stream_that_fails_ends_as_the_apology_with_the_failed_reaction(
    database_url: str, fake: FakeSlack, webhook_agent: FakeWebhookAgent
) -> None:
    webhook_agent.release = asyncio.Event()
    webhook_agent.add_stream("I will explain ", "everything", cut="abort", cut_after=1)
    webhook_agent.fail_next(5)  # any retry of the ask fails too
    async with slack_bridge(database_url, fake, webhook_agent) as (bridge, url):
        mention = slack.app_mention(channel=CHANNEL, user=HUMAN, text="<@U0BOT00001> explain")
        root = mention["event"]["ts"]
        await fake.push_event(url, mention)
        await fake.wait_until(lambda: bool(accepted(fake, "chat.startStream")), timeout=15)
        assert accepted(fake, "chat.startStream")[0].params["markdown_text"] == "I will explain"
        webhook_agent.release.set()
        reply = await bridge.reply_to((await asked(bridge)).id, state=MessageState.DELIVERED)
        [message] = bot_messages(fake, CHANNEL)
        assert_final(message, PipelineSettings().apology_text)
        assert reply.platform_message_ids == [message["ts"]]
        assert fake.reactions_on(CHANNEL, root) == {"x"}
        assert fake.calls_to("chat.postMessage") == []


async def test_streaming_off_posts_the_markdown_reply_once_in_slack_format(
    database_url: str, fake: FakeSlack, webhook_agent: FakeWebhookAgent
) -> None:
    webhook_agent.add_reply(MARKDOWN)
    async with slack_bridge(database_url, fake, webhook_agent, streaming="off") as (bridge, url):
        event = slack.message(channel=DM, user=HUMAN, text="format please")
        await fake.push_event(url, event)
        post = await fake.next_post(timeout=15)
        reply = await bridge.reply_to((await asked(bridge)).id, state=MessageState.DELIVERED)
        assert reply.platform_message_ids == [post["ts"]]
        # Standard Markdown in the block; mrkdwn, escaped, in the notification text.
        assert post["blocks"] == [{"type": "markdown", "text": MARKDOWN}]
        text = post["text"]
        assert "*Bold*" in text and "**" not in text
        assert "<https://example.com/docs|a link>" in text
        assert "• first item\n• second item" in text
        assert "```\nprint(1 &lt; 2 and 3 &gt; 2)\n```" in text
        assert "&lt;script&gt;alert('x')&lt;/script&gt;" in text and "<script>" not in text
        for method in ("chat.startStream", "chat.appendStream", "chat.update"):
            assert fake.calls_to(method) == []
        assert len(fake.calls_to("chat.postMessage")) == 1
        assert fake.reactions_on(DM, event["event"]["ts"]) == {"white_check_mark"}


async def test_update_mode_posts_then_edits_the_same_message(
    database_url: str, fake: FakeSlack, webhook_agent: FakeWebhookAgent
) -> None:
    webhook_agent.release = asyncio.Event()
    webhook_agent.add_stream("Step one. ", "Step two.")
    async with slack_bridge(database_url, fake, webhook_agent, streaming="update") as (
        bridge,
        url,
    ):
        await fake.push_event(url, slack.message(channel=DM, user=HUMAN, text="steps"))
        first = await fake.next_post(timeout=15)
        assert first["blocks"] == [{"type": "markdown", "text": "Step one."}]
        webhook_agent.release.set()
        reply = await bridge.reply_to((await asked(bridge)).id, state=MessageState.DELIVERED)
        [message] = bot_messages(fake, DM)
        assert message["ts"] == first["ts"] and reply.platform_message_ids == [first["ts"]]
        assert_final(message, "Step one. Step two.")
        assert fake.calls_to("chat.startStream") == []
        assert len(fake.calls_to("chat.postMessage")) == 1


async def test_a_long_stream_continues_in_a_new_message_at_the_part_limit(
    database_url: str, fake: FakeSlack
) -> None:
    """Driven call by call: the live reply is shown three times as the text grows, then the
    final delivery finishes the parts it started."""
    async with slack_bridge(database_url, fake) as (bridge, _url):
        channel = bridge.app[CHANNELS].get("slack", "assistant")
        assert isinstance(channel, LiveChannel)
        root = fake.add_message(CHANNEL, text="<@U0BOT00001> write a lot", user=HUMAN)["ts"]
        target = {"channel": CHANNEL, "thread_ts": root, "message_ts": root, "user": HUMAN}
        conversation = f"slack:{TEAM}:{CHANNEL}:{root}"
        draft = Draft(
            session_id=1,
            reply_to=1,
            delivery_key="d-long-1",
            agent_slug="assistant",
            channel="slack",
            external_conv_id=conversation,
            reply_target=target,
        )
        live = await channel.begin(draft)
        assert live.interval_seconds >= 0.6
        shown = [await live.show(LONG[:n]) for n in (1200, 5000, len(LONG))]
        parts = reply_parts(LONG)
        assert len(parts) == 3
        assert [len(ids) for ids in shown] == [1, 2, 3]
        assert shown[0] == shown[1][:1] and shown[1] == shown[2][:2]  # parts never restart
        # The first part streamed its first text, then only what was added.
        appended = [c.params["markdown_text"] for c in accepted(fake, "chat.appendStream")]
        started = [c.params["markdown_text"] for c in accepted(fake, "chat.startStream")]
        assert started[0] == LONG[:1200]
        assert all(not text.startswith(started[0]) for text in appended)
        reply = replace(
            outgoing_reply(
                channel="slack",
                external_conv_id=conversation,
                text=LONG,
                reply_target=target,
                delivery_key="d-long-1",
            ),
            live_ids=tuple(shown[2]),
            outcome="answered",
        )
        ids = await channel.send(reply)
        assert list(ids) == list(shown[2])
        messages = [m for m in bot_messages(fake, CHANNEL)]
        assert [m["ts"] for m in messages] == list(ids)
        for message, part in zip(messages, parts, strict=True):
            assert_final(message, part)
            assert message["thread_ts"] == root
        assert set(fake.streams.values()) == {"stopped"}
        assert fake.calls_to("chat.postMessage") == []
        # Delivered again (a retry): the same messages, nothing new.
        assert list(await channel.send(replace(reply, attempt=2, in_doubt=True))) == list(ids)
        assert [m["ts"] for m in bot_messages(fake, CHANNEL)] == list(ids)


async def test_live_parts_beyond_the_final_reply_are_deleted(
    database_url: str, fake: FakeSlack
) -> None:
    async with slack_bridge(database_url, fake) as (bridge, _url):
        channel = bridge.app[CHANNELS].get("slack", "assistant")
        assert isinstance(channel, LiveChannel)
        root = fake.add_message(DM, text="long please", user=HUMAN)["ts"]
        target = {"channel": DM, "thread_ts": "", "message_ts": root, "user": HUMAN}
        draft = Draft(
            session_id=1,
            reply_to=1,
            delivery_key="d-short-1",
            agent_slug="assistant",
            channel="slack",
            external_conv_id=f"slack:{TEAM}:{DM}",
            reply_target=target,
        )
        live = await channel.begin(draft)
        ids = await live.show(LONG[:6000])
        assert len(ids) == 2
        reply = replace(
            outgoing_reply(
                channel="slack",
                external_conv_id=f"slack:{TEAM}:{DM}",
                text="Sorry, short after all.",
                reply_target=target,
                delivery_key="d-short-1",
            ),
            live_ids=tuple(ids),
            outcome="failed",
        )
        assert list(await channel.send(reply)) == [ids[0]]
        [message] = bot_messages(fake, DM)
        assert message["ts"] == ids[0] and message["thread_ts"] == root
        assert_final(message, "Sorry, short after all.")
        assert fake.reactions_on(DM, root) == {"x"}
