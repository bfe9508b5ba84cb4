"""A bridge killed with SIGKILL while a reply is on its way: the platform stored the post, the
bridge never heard back. The next process finds the delivery in doubt and re-sends it with the
same idempotency key (Slack: a look-up by the post's metadata; Discord: the part's ``nonce``
with ``enforce_nonce``; Feishu: the ``uuid``), so the platform holds the reply once.

Each case runs real ``bridge serve`` processes against the platform's strict fake, on one SQLite
file (a restarted process releases every claim at once). The fake holds the post past the kill
and stores it after, as a platform that accepted the request does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bridge.store.models import ChatMessage, MessageState
from tests.fakes import slack
from tests.fakes.discord import DEFAULT_USER_ID, FakeDiscord
from tests.fakes.feishu import (
    DEFAULT_ENCRYPT_KEY,
    FakeFeishu,
)
from tests.fakes.slack import FakeSlack
from tests.support.processes import (
    BridgeProcess,
    bridge_database,
    run_cli,
    serving_bridge,
    wait_until,
    write_toml,
)

HELD_SECONDS = 2.0
"""The fake stores the first post only after this; the bridge is killed meanwhile."""
TEXT = "once, even across a crash"
PIPELINE = {
    "poll_interval_seconds": 0.5,
    "retry_base_seconds": 0.2,
    "send_timeout_seconds": 30.0,
}


@dataclass
class Platform:
    """What the test needs of one platform: its section, how a user writes, what it holds."""

    section: dict[str, Any]
    ask: Callable[[BridgeProcess], Awaitable[None]]
    hold_next_post: Callable[[], None]
    stored_posts: Callable[[], list[str]]
    """The text of every reply the platform holds."""
    idempotency_keys: Callable[[], list[str]]
    """The key each post request carried, in order."""


@asynccontextmanager
async def slack_platform() -> AsyncIterator[Platform]:
    async with FakeSlack(bot_token="xoxb-sigkill-test", signing_secret="sigkill-secret") as fake:

        async def ask(process: BridgeProcess) -> None:
            event = slack.message(channel="D0DM000001", user="U0HUMAN001", text=TEXT)
            result = await fake.push_event(f"{process.url}/slack/assistant/events", event)
            assert result.status == 200

        def keys() -> list[str]:
            found = []
            for call in fake.calls_to("chat.postMessage"):
                metadata = call.params["metadata"]
                if isinstance(metadata, str):
                    metadata = json.loads(metadata)
                found.append(str(metadata["event_payload"]["delivery_id"]))
            return found

        yield Platform(
            section={
                "bot_token": fake.bot_token,
                "signing_secret": fake.signing_secret,
                "api_base_url": fake.api_url,
            },
            ask=ask,
            hold_next_post=lambda: fake.delay_next(1, HELD_SECONDS),
            stored_posts=lambda: [post["text"] for post in fake.posts],
            idempotency_keys=keys,
        )


@asynccontextmanager
async def discord_platform() -> AsyncIterator[Platform]:
    async with FakeDiscord() as fake:

        async def ask(process: BridgeProcess) -> None:
            await fake.wait_identified(timeout=20)
            dm = fake.create_dm_channel(DEFAULT_USER_ID)
            await fake.send_message(channel_id=dm, content=TEXT)

        def hold() -> None:
            fake.post_delay_seconds = HELD_SECONDS

        def keys() -> list[str]:
            posts = fake.requests_to("POST", r"/api/v10/channels/\d+/messages")
            return [str(sent.json["nonce"]) for sent in posts]

        yield Platform(
            section={
                "bot_token": fake.token,
                "api_base_url": fake.api_base_url,
                "gateway_url": fake.gateway_url,
                "restart_max_seconds": 1,
            },
            ask=ask,
            hold_next_post=hold,
            stored_posts=lambda: [post["content"] for post in fake.posts_by()],
            idempotency_keys=keys,
        )


@asynccontextmanager
async def feishu_platform() -> AsyncIterator[Platform]:
    async with FakeFeishu(encrypt_key=DEFAULT_ENCRYPT_KEY) as fake:
        fake.add_user()

        async def ask(process: BridgeProcess) -> None:
            pushed = await fake.push(
                f"{process.url}/feishu/assistant/events", fake.message_event(text=TEXT)
            )
            assert pushed.status == 200

        def hold() -> None:
            fake.send_delay_seconds = HELD_SECONDS

        yield Platform(
            section={
                "app_id": fake.app_id,
                "app_secret": fake.app_secret,
                "verification_token": fake.verification_token,
                "base_url": fake.base_url,
                "encrypt_key": DEFAULT_ENCRYPT_KEY,
            },
            ask=ask,
            hold_next_post=hold,
            stored_posts=lambda: [sent.text for sent in fake.sent],
            idempotency_keys=lambda: [
                str(request.json["uuid"]) for request in fake.message_creates()
            ],
        )


PLATFORMS = {"slack": slack_platform, "discord": discord_platform, "feishu": feishu_platform}


async def _replies(database_url: str) -> list[ChatMessage]:
    async with (
        bridge_database(database_url, agents=[{"slug": "assistant"}]) as db,
        db.sessions() as session,
    ):
        query = select(ChatMessage).where(ChatMessage.role == "assistant")
        return list((await session.execute(query)).scalars())


@pytest.mark.parametrize("name", sorted(PLATFORMS))
async def test_sigkill_mid_delivery_ends_with_one_message_on_the_platform(
    name: str, tmp_path: Path
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
    async with PLATFORMS[name]() as platform:
        config = write_toml(
            tmp_path / "bridge.toml",
            {
                "database": {"url": database_url},
                "pipeline": PIPELINE,
                "agents": [{"slug": "assistant", name: platform.section}],
            },
        )
        migrated = run_cli("migrate", "--config", str(config), cwd=tmp_path)
        assert migrated.returncode == 0, migrated.stderr
        platform.hold_next_post()
        async with serving_bridge(config, cwd=tmp_path) as first:
            await platform.ask(first)
            await wait_until(
                lambda: bool(platform.idempotency_keys() or platform.stored_posts()),
                within=20,
                what="the first post reaching the platform",
            )
            first.kill()
            assert await first.wait() == -9
        # The platform stores the held post after the bridge died: it has the reply, the
        # database says the delivery is in doubt.
        await wait_until(
            lambda: platform.stored_posts() == [TEXT], within=10, what="the held post stored"
        )
        [reply] = await _replies(database_url)
        assert reply.state == MessageState.DELIVERING and reply.delivery_in_doubt

        async with serving_bridge(config, cwd=tmp_path):

            async def delivered() -> bool:
                replies = await _replies(database_url)
                return replies[0].state == MessageState.DELIVERED

            await wait_until(delivered, within=20, what="the reply delivered after restart")
        assert platform.stored_posts() == [TEXT]
        [reply] = await _replies(database_url)
        assert reply.attempts >= 1 and not reply.delivery_in_doubt
        keys = platform.idempotency_keys()
        assert keys and len(set(keys)) == 1, keys
