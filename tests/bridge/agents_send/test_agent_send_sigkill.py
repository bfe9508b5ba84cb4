"""A bridge killed with SIGKILL while an agent's first post is on its way to Slack: the fake
stores the held post after the kill; the next process finds the delivery in doubt, looks for
it by its metadata (a post-first has no asked message to start the look-up from) and does not
post it again. Real ``bridge serve`` processes on one SQLite file."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from sqlalchemy import select

from bridge.api.tokens import create_token
from bridge.store.models import ChatMessage, MessageState
from tests.fakes.slack import DEFAULT_TEAM_ID, FakeSlack
from tests.support.api import ApiClient
from tests.support.processes import bridge_database, run_cli, serving_bridge, wait_until, write_toml

TEXT = "the nightly report, once"
PIPELINE = {"poll_interval_seconds": 0.5, "retry_base_seconds": 0.2, "send_timeout_seconds": 30.0}


async def _sent(database_url: str) -> list[ChatMessage]:
    async with (
        bridge_database(database_url, agents=[{"slug": "assistant"}]) as db,
        db.sessions() as session,
    ):
        query = select(ChatMessage).where(ChatMessage.role == "assistant")
        return list((await session.execute(query)).scalars())


async def test_sigkill_mid_post_first_ends_with_one_post(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
    async with FakeSlack(bot_token="xoxb-send-kill", signing_secret="send-kill") as fake:
        fake.add_channel("C0NEWS0001", "news")
        section = {
            "bot_token": fake.bot_token,
            "signing_secret": fake.signing_secret,
            "api_base_url": fake.api_url,
        }
        config = write_toml(
            tmp_path / "bridge.toml",
            {
                "database": {"url": database_url},
                "pipeline": PIPELINE,
                "agents": [{"slug": "assistant", "slack": section}],
            },
        )
        migrated = run_cli("migrate", "--config", str(config), cwd=tmp_path)
        assert migrated.returncode == 0, migrated.stderr
        async with bridge_database(database_url, agents=[{"slug": "assistant"}]) as db:
            token = await create_token(db.sessions, name="cron", admin=True, workspace="default")
        fake.delay_next(1, 2.0)
        async with serving_bridge(config, cwd=tmp_path) as first, aiohttp.ClientSession() as http:
            admin = ApiClient(http=http, base_url=first.url, token=token)
            body = {
                "channel": "slack",
                "external_conv_id": f"slack:{DEFAULT_TEAM_ID}:C0NEWS0001",
                "text": TEXT,
                "client_message_id": "nightly-1",
            }
            (await admin.post("/agents/assistant/send", body)).ok(202)
            await wait_until(
                lambda: bool(fake.calls_to("chat.postMessage")), within=20, what="the post"
            )
            first.kill()
            assert await first.wait() == -9
        await wait_until(
            lambda: [p["text"] for p in fake.posts] == [TEXT], within=10, what="the held post"
        )
        [message] = await _sent(database_url)
        assert message.state == MessageState.DELIVERING and message.delivery_in_doubt

        async with serving_bridge(config, cwd=tmp_path):

            async def delivered() -> bool:
                return (await _sent(database_url))[0].state == MessageState.DELIVERED

            await wait_until(delivered, within=20, what="the post delivered after restart")
        assert [p["text"] for p in fake.posts] == [TEXT]
        assert len(fake.calls_to("chat.postMessage")) == 1
        [message] = await _sent(database_url)
        assert message.platform_message_ids == [fake.posts[0]["ts"]]
