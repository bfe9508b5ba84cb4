"""Exactly-once delivery on Discord through the real bridge when a post lands but its answer is
lost: the real discord.py client in the bridge against the strict fake, on SQLite and
PostgreSQL.

The fake holds the first post past the bridge's send timeout, then stores it anyway (its
handler runs on after the bridge gave up and closed the connection): the message is on
Discord but the bridge never saw the answer. The delivery is then in doubt and re-sent; only
the part's stable ``nonce`` with ``enforce_nonce`` makes Discord return the stored message
instead of posting the reply a second time.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bridge.store.models import ChatMessage, MessageState
from channels.discord.outbound import part_nonce
from tests.fakes.discord import DEFAULT_USER_ID, FakeDiscord
from tests.support.discord import discord_section, restore_discord_endpoints  # noqa: F401
from tests.support.harness import RunningBridge, make_settings, running_bridge
from tests.support.processes import wait_until

POSTS = r"/api/v10/channels/\d+/messages"
SEND_TIMEOUT_SECONDS = 0.4
"""The bridge gives up on a send after this and records the delivery as in doubt."""
HELD_SECONDS = 1.0
"""The fake answers (and stores) the first post only after this: past the send timeout."""
RETRY_BASE_SECONDS = 4.0
"""The first retry comes 2 to 4 s after the timeout: after the held post is stored."""

pytestmark = pytest.mark.usefixtures("restore_discord_endpoints")


async def test_a_post_that_landed_but_lost_its_answer_is_not_posted_again(
    database_url: str,
) -> None:
    async with FakeDiscord() as fake:
        settings = make_settings(
            database_url,
            agents=[{"slug": "assistant", "discord": discord_section(fake)}],
            pipeline={
                "send_timeout_seconds": SEND_TIMEOUT_SECONDS,
                "retry_base_seconds": RETRY_BASE_SECONDS,
                "poll_interval_seconds": 0.5,
            },
        )
        async with running_bridge(settings) as bridge:
            await fake.wait_identified(timeout=10)
            dm = fake.create_dm_channel(DEFAULT_USER_ID)
            fake.post_delay_seconds = HELD_SECONDS
            asked = await fake.send_message(channel_id=dm, content="say it once")
            await wait_until(
                lambda: bool(fake.requests_to("POST", POSTS)), within=10, what="the first post"
            )
            fake.post_delay_seconds = 0.0  # only the first post is held

            [question] = [m for m in await bridge.messages() if m.role == "user"]
            assert question.external_message_id == asked["id"]

            async def retry_in_doubt() -> ChatMessage | None:
                """The reply once the timed-out attempt is recorded: waiting for its retry,
                in doubt (the claim marks every attempt in doubt; the timeout keeps it so)."""
                reply = await _reply(bridge, question.id)
                waiting = reply is not None and reply.state == MessageState.TO_DELIVER
                return reply if waiting else None

            async def timed_out() -> bool:
                return await retry_in_doubt() is not None

            await wait_until(timed_out, within=10, what="the timed-out attempt recorded")
            doubted = await retry_in_doubt()
            assert doubted is not None and doubted.delivery_in_doubt
            assert doubted.attempts == 1
            assert doubted.last_error is not None and "TimeoutError" in doubted.last_error

            landed = await fake.next_post(timeout=10)
            assert landed["channel_id"] == dm and landed["content"] == "say it once"
            assert landed["message_reference"]["message_id"] == asked["id"]

            reply = await bridge.reply_to(question.id, state=MessageState.DELIVERED)
            await fake.expect_no_post(within=0.5)

            # Discord holds the reply once: the retry was answered with the stored message.
            assert [(p["channel_id"], p["content"]) for p in fake.posts_by()] == [
                (dm, "say it once")
            ]
            assert [hit["id"] for hit in fake.nonce_hits] == [landed["id"]]
            first, retry = fake.requests_to("POST", POSTS)
            assert first.status == 200 and first.response["id"] == landed["id"]
            assert retry.status == 200 and retry.response["id"] == landed["id"]
            nonce = part_nonce(reply.delivery_key or "", 0)
            assert reply.delivery_key
            for sent in (first, retry):
                assert sent.json["nonce"] == nonce
                assert sent.json["enforce_nonce"] is True
            assert landed["nonce"] == nonce

            # The bridge records it delivered once, with the id of the one message.
            assert reply.platform_message_ids == [landed["id"]]
            assert reply.attempts == 2
            assert not reply.delivery_in_doubt
            assert reply.last_error is None
            replies = [m for m in await bridge.messages() if m.role == "assistant"]
            assert [(m.id, m.state) for m in replies] == [(reply.id, MessageState.DELIVERED)]


async def _reply(bridge: RunningBridge, message_id: int) -> ChatMessage | None:
    """The stored reply to ``message_id`` as it is now (None before the agent answered)."""
    async with bridge.sessions() as db:
        found = await db.execute(
            select(ChatMessage).where(ChatMessage.reply_to_message_id == message_id)
        )
        return found.scalar_one_or_none()
