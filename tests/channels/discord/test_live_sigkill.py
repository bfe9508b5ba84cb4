"""A bridge killed with SIGKILL while a Discord reply streams: the live message was posted
and recorded, then the process died. The next process answers again, continues that same
message (``Draft.started``) and finishes it: one complete reply, no second message.

Real ``bridge serve`` processes against the strict fake, on one SQLite file (a restarted
process releases every claim at once)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from bridge.store.models import ChatMessage, MessageState
from tests.fakes.discord import DEFAULT_USER_ID, FakeDiscord
from tests.support.discord import discord_section, restore_discord_endpoints  # noqa: F401
from tests.support.processes import bridge_database, run_cli, serving_bridge, wait_until, write_toml

TEXT = "Streaming across a crash, " + "one word at a time, " * 8 + "and finished once."
AGENT = {"slug": "assistant", "echo_stream_chunk_chars": 10, "echo_stream_delay_ms": 300}
PIPELINE = {"poll_interval_seconds": 0.5, "retry_base_seconds": 0.2}
POSTS = r"/api/v10/channels/\d+/messages"

pytestmark = pytest.mark.usefixtures("restore_discord_endpoints")


async def _rows(database_url: str) -> list[ChatMessage]:
    async with (
        bridge_database(database_url, agents=[{"slug": "assistant"}]) as db,
        db.sessions() as session,
    ):
        found = await session.execute(select(ChatMessage).order_by(ChatMessage.id))
        return list(found.scalars())


async def test_sigkill_mid_stream_finishes_the_same_message(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
    async with FakeDiscord() as fake:
        config = write_toml(
            tmp_path / "bridge.toml",
            {
                "database": {"url": database_url},
                "pipeline": PIPELINE,
                "agents": [{**AGENT, "discord": discord_section(fake)}],
            },
        )
        migrated = run_cli("migrate", "--config", str(config), cwd=tmp_path)
        assert migrated.returncode == 0, migrated.stderr
        dm = fake.create_dm_channel(DEFAULT_USER_ID)
        async with serving_bridge(config, cwd=tmp_path) as first:
            await fake.wait_identified(timeout=20)
            asked = await fake.send_message(channel_id=dm, content=TEXT)

            async def recorded() -> bool:
                rows = await _rows(database_url)
                return bool(rows and rows[0].live_message_ids and fake.edits)

            await wait_until(recorded, within=20, what="the live message posted and recorded")
            first.kill()
            assert await first.wait() == -9
        [question] = await _rows(database_url)
        [live_id] = question.live_message_ids or []
        [post] = fake.posts_by()
        assert post["id"] == live_id and post["content"] != TEXT  # cut off mid-stream
        edits_before = len(fake.edits_of(live_id))

        async with serving_bridge(config, cwd=tmp_path):

            async def delivered() -> bool:
                rows = await _rows(database_url)
                return len(rows) == 2 and rows[1].state == MessageState.DELIVERED

            await wait_until(delivered, within=30, what="the reply delivered after restart")
        question, reply = await _rows(database_url)
        # The same message, finished: no second one, continued by edits after the restart.
        assert [m["content"] for m in fake.messages(dm) if m["author"]["id"] == fake.bot.id] == [
            TEXT
        ]
        assert [p["id"] for p in fake.posts_by()] == [live_id]
        assert len(fake.edits_of(live_id)) > edits_before
        assert {r.response["id"] for r in fake.requests_to("POST", POSTS)} == {live_id}
        assert reply.platform_message_ids == [live_id] and reply.content == TEXT
        assert fake.reactions_on(dm, asked["id"]) == ["\N{WHITE HEAVY CHECK MARK}"]
