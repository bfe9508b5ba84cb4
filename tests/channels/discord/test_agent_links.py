"""A text file sent on Discord reaches a webhook agent as a signed link: MESSAGE_CREATE
through the real discord.py client against the fake gateway, the file fetched from the CDN in
the answer step, the agent given ``attachments`` with a link it opens without a token; the
link refused once tampered with (403) or expired (410). SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.store.models import MessageState
from tests.fakes.discord import DEFAULT_USER_ID, FakeDiscord
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.discord import discord_section, restore_discord_endpoints  # noqa: F401
from tests.support.harness import WEBHOOK_SECRET, make_settings, webhook_agent_config
from tests.support.signed_links import bridge_with_links, check_signed_link

pytestmark = pytest.mark.usefixtures("restore_discord_endpoints")

NOTES = b"line one\nline two: \xc3\xa9t\xc3\xa9\n" * 40


async def test_a_text_file_reaches_a_webhook_agent_through_its_signed_link(
    database_url: str, tmp_path: Path
) -> None:
    async with FakeDiscord() as fake, FakeWebhookAgent(secret=WEBHOOK_SECRET) as agent:
        agent.add_reply("read it")
        config = webhook_agent_config(
            agent, discord=discord_section(fake, streaming="off", status_reactions=False)
        )
        config.pop("inmemory")
        settings = make_settings(database_url, agents=[config])
        async with bridge_with_links(settings, tmp_path / "files") as bridge:
            await fake.wait_identified(timeout=10)
            dm = fake.create_dm_channel(DEFAULT_USER_ID)
            document = fake.add_attachment(
                channel_id=dm, filename="notes.txt", data=NOTES, content_type="text/plain"
            )
            await fake.send_message(channel_id=dm, content="see attached", attachments=[document])
            assert (await fake.next_post(timeout=10))["content"] == "read it"
            [user] = [m for m in await bridge.messages() if m.role == "user"]
            await bridge.reply_to(user.id, state=MessageState.DELIVERED)

            [request] = agent.requests
            assert request.error is None
            assert request.json["message"]["text"] == "see attached"
            [given] = request.json["attachments"]
            assert given["content_type"] == "text/plain"
            await check_signed_link(bridge, given, name="notes.txt", data=NOTES)
        [download] = fake.cdn_requests  # fetched from the CDN once, in the answer step
        assert "Authorization" not in download.headers
