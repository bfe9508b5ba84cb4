"""End to end through ``bridge serve``: a webhook agent answers a Discord thread with an image
and a file; Discord creates the message carrying them but holds its answer, and the bridge is
SIGKILLed before it hears back. The bridge restarted on the same database sends the in-doubt
create again with the same ``nonce`` (``enforce_nonce``) and gets the stored message back: in
the end the thread holds one text message and exactly one message with the two files. SQLite."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.discord import DEFAULT_THREAD_ID, FakeDiscord
from tests.fakes.webhook_agent import FakeWebhookAgent, inline_file
from tests.support.discord import discord_section
from tests.support.harness import WEBHOOK_SECRET, webhook_agent_config
from tests.support.processes import serving_bridge, wait_until
from tests.support.serve_files import migrated_config, wait_delivered

TEXT = "The chart and the report."
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
PDF = b"%PDF-1.7 numbers\n" * 300
HELD_SECONDS = 60.0
"""Discord answers the upload only after this: the process is killed long before."""


async def test_sigkill_of_bridge_serve_mid_upload_posts_the_files_once_in_the_thread(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
    async with FakeDiscord() as fake, FakeWebhookAgent(secret=WEBHOOK_SECRET) as agent:
        agent.add_reply(
            TEXT,
            attachments=[
                inline_file("chart.png", PNG, "image/png"),
                inline_file("report.pdf", PDF, "application/pdf"),
            ],
        )
        settings = webhook_agent_config(
            agent, discord=discord_section(fake, streaming="off", status_reactions=False)
        )
        config = migrated_config(tmp_path, database_url, settings)
        fake.hold_next_upload_answer(HELD_SECONDS)

        async with serving_bridge(config, cwd=tmp_path) as first:
            await fake.wait_identified(timeout=30)
            await fake.send_message(
                channel_id=DEFAULT_THREAD_ID, content="the numbers please", mentions_bot=True
            )
            await wait_until(
                lambda: len(fake.posts_by()) == 2, within=30, what="the upload stored, unanswered"
            )
            first.kill()
            assert await first.wait() == -9
        text_post, files_post = fake.posts_by()
        [held] = fake.uploads()
        assert held.status == 0  # never answered: the process died first

        async with serving_bridge(config, cwd=tmp_path):
            reply = await wait_delivered(database_url)

    # One text message and one message with both files, in the thread; nothing posted twice.
    assert fake.posts_by() == [text_post, files_post]
    assert text_post["content"] == TEXT
    assert text_post["channel_id"] == files_post["channel_id"] == DEFAULT_THREAD_ID
    attached = [(a["filename"], a["size"]) for a in files_post["attachments"]]
    assert attached == [("chart.png", len(PNG)), ("report.pdf", len(PDF))]
    first_try, retry = fake.uploads()
    assert first_try.json["nonce"] == retry.json["nonce"]
    assert retry.status == 200 and retry.response["id"] == files_post["id"]
    assert [f.data for f in retry.files] == [PNG, PDF]
    assert files_post["id"] in [hit["id"] for hit in fake.nonce_hits]
    assert reply.platform_message_ids == [text_post["id"], files_post["id"]]
