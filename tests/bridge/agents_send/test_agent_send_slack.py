"""An agent posts first on Slack: the real slack-bolt and slack_sdk inside the bridge, against
the strict local fake of Slack, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from bridge.api.tokens import create_token
from bridge.store.models import MessageState
from tests.bridge.agents_send.test_agent_send import delivered
from tests.channels.contract_drivers import (
    SLACK_BOT_TOKEN,
    SLACK_HUMAN,
    SLACK_SIGNING_SECRET,
    slack_section,
)
from tests.channels.contract_drivers import SLACK_TEAM as TEAM
from tests.fakes import slack
from tests.fakes.base import Fault
from tests.fakes.slack import FakeSlack
from tests.support.api import ApiClient
from tests.support.harness import RunningBridge, make_settings, running_bridge

NEWS = "C0NEWS0001"
"""A channel the bot is in but the bridge has never received a message from."""


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=SLACK_BOT_TOKEN, signing_secret=SLACK_SIGNING_SECRET) as fake:
        fake.add_channel(NEWS, "news")
        fake.add_user(SLACK_HUMAN, "ada", "Ada")
        yield fake


@asynccontextmanager
async def slack_bridge(
    database_url: str, fake: FakeSlack
) -> AsyncIterator[tuple[RunningBridge, ApiClient, str]]:
    agent = {"slug": "assistant", "slack": slack_section(fake)}
    async with (
        running_bridge(make_settings(database_url, agents=[agent])) as bridge,
        aiohttp.ClientSession() as http,
    ):
        token = await create_token(bridge.sessions, name="ops", admin=True, workspace="default")
        admin = ApiClient(http=http, base_url=bridge.url, token=token)
        yield bridge, admin, f"{bridge.url}/slack/assistant/events"


async def test_post_first_into_a_channel_never_seen_then_into_a_thread_people_answer_in(
    database_url: str, fake_slack: FakeSlack
) -> None:
    async with slack_bridge(database_url, fake_slack) as (bridge, admin, events):
        body = {
            "channel": "slack",
            "external_conv_id": f"slack:{TEAM}:{NEWS}",
            "text": "Release 2.1 is out",
            "client_message_id": "release-2.1",
        }
        sent = (await admin.post("/agents/assistant/send", body)).ok(202)
        post = await fake_slack.next_post()
        row = await delivered(bridge, sent["id"])
        assert (post["channel"], post["thread_ts"], post["text"]) == (
            NEWS,
            None,
            "Release 2.1 is out",
        )
        assert post["metadata"]["event_payload"]["delivery_id"] == row.delivery_key
        assert row.platform_message_ids == [post["ts"]]
        assert (await admin.post("/agents/assistant/send", body)).ok(200)["id"] == sent["id"]
        history = (await admin.get(f"/sessions/{sent['session_id']}/messages")).ok()["items"]
        assert [(m["id"], m["role"], m["delivery"]) for m in history] == [
            (sent["id"], "assistant", "delivered")
        ]

        # Into a thread: its own session under the channel's, where a follow-up lands.
        root = fake_slack.add_message(NEWS, text="2.1 feedback here", user=SLACK_HUMAN)["ts"]
        threaded = {**body, "thread": root, "client_message_id": "release-2.1-thread"}
        in_thread = (await admin.post("/agents/assistant/send", threaded)).ok(202)
        post = await fake_slack.next_post()
        assert (post["channel"], post["thread_ts"]) == (NEWS, root)
        session = (await admin.get(f"/sessions/{in_thread['session_id']}")).ok()
        assert (session["external_conv_id"], session["parent_session"]) == (
            f"slack:{TEAM}:{NEWS}:{root}",
            sent["session_id"],
        )
        follow = slack.message(channel=NEWS, user=SLACK_HUMAN, text="works for me", thread_ts=root)
        assert (await fake_slack.push_event(events, follow)).status == 200
        answer = await fake_slack.next_post()
        assert (answer["text"], answer["thread_ts"]) == ("works for me", root)
        history = (await admin.get(f"/sessions/{in_thread['session_id']}/messages")).ok()["items"]
        assert [m["content"] for m in history] == [
            "Release 2.1 is out",
            "works for me",
            "works for me",
        ]
        assert len(fake_slack.calls_to("chat.postMessage")) == 3


async def test_a_channel_slack_refuses_ends_failed_with_slacks_reason(
    database_url: str, fake_slack: FakeSlack
) -> None:
    async with slack_bridge(database_url, fake_slack) as (bridge, admin, _events):
        fake_slack.inject(Fault("error", error="not_in_channel"))
        body = {"channel": "slack", "external_conv_id": f"slack:{TEAM}:{NEWS}", "text": "hi all"}
        sent = (await admin.post("/agents/assistant/send", body)).ok(202)
        row = await delivered(bridge, sent["id"], MessageState.FAILED)
        assert row.last_error == "slack chat.postMessage: not_in_channel"
        assert row.attempts == 1
        (shown,) = (await admin.get(f"/sessions/{sent['session_id']}/messages")).ok()["items"]
        assert (shown["delivery"], shown["error"]) == (
            "failed",
            "slack chat.postMessage: not_in_channel",
        )
        assert fake_slack.posts == []


async def test_a_conversation_id_the_bot_cannot_post_to_is_refused_unstored(
    database_url: str, fake_slack: FakeSlack
) -> None:
    async with slack_bridge(database_url, fake_slack) as (bridge, admin, _events):
        for conversation, thread in (
            (f"slack:T0OTHER999:{NEWS}", None),  # another team's workspace
            (f"slack:{TEAM}:not-an-id", None),
            (f"slack:{TEAM}:{NEWS}", "yesterday"),
            ("discord:1:2", None),
        ):
            body = {"channel": "slack", "external_conv_id": conversation, "text": "hi"}
            if thread:
                body["thread"] = thread
            (await admin.post("/agents/assistant/send", body)).error(422, "cannot_post")
        assert await bridge.messages() == []
        assert fake_slack.posts == []
