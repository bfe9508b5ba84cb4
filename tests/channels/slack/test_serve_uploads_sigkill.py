"""End to end through ``bridge serve``: a webhook agent answers a Slack thread with an image
and a file; Slack shares the image but its answer to ``files.completeUploadExternal`` is held,
and the bridge is SIGKILLed before it hears back. The bridge restarted on the same database
finishes the in-doubt delivery from the file id recorded there: in the end the thread holds one
text message and exactly one share of each file, and nothing was uploaded twice. SQLite."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from bridge.store.models import AttachmentRow
from tests.channels.contract_drivers import SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, slack_section
from tests.fakes import slack
from tests.fakes.slack import FakeSlack
from tests.fakes.webhook_agent import FakeWebhookAgent, inline_file
from tests.support.harness import WEBHOOK_SECRET, webhook_agent_config
from tests.support.processes import bridge_database, serving_bridge, wait_until
from tests.support.serve_files import migrated_config, wait_delivered

CHANNEL = "C0CHANSERV"
HUMAN = "U0HUMANS01"
TEXT = "The chart and the report."
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
PDF = b"%PDF-1.7 numbers\n" * 300


async def test_sigkill_of_bridge_serve_mid_share_posts_each_file_once_in_the_thread(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
    async with (
        FakeSlack(bot_token=SLACK_BOT_TOKEN, signing_secret=SLACK_SIGNING_SECRET) as fake,
        FakeWebhookAgent(secret=WEBHOOK_SECRET) as agent,
    ):
        fake.add_channel(CHANNEL, "general")
        fake.add_user(HUMAN, "ada", "Ada")
        root = fake.add_message(CHANNEL, text="the numbers, anyone?", user=HUMAN)["ts"]
        agent.add_reply(
            TEXT,
            attachments=[
                inline_file("chart.png", PNG, "image/png"),
                inline_file("report.pdf", PDF, "application/pdf"),
            ],
        )
        settings = webhook_agent_config(
            agent, slack=slack_section(fake, streaming="off", status_reactions=False)
        )
        config = migrated_config(tmp_path, database_url, settings)
        # The image's share lands at Slack; its answer never reaches the first process.
        fake.hold_answer_next(method="files.completeUploadExternal")
        event = slack.app_mention(
            channel=CHANNEL, user=HUMAN, text="the numbers please", thread_ts=root
        )

        async with serving_bridge(config, cwd=tmp_path) as first:
            pushed = await fake.push_event(f"{first.url}/slack/assistant/events", event)
            assert pushed.status == 200
            await wait_until(lambda: len(fake.shares) == 1, within=30, what="the held share")
            first.kill()
            assert await first.wait() == -9
        assert len(fake.posts) == 1 and len(fake.upload_requests) == 1
        [image_id] = list(fake.uploads)

        async with serving_bridge(config, cwd=tmp_path):
            reply = await wait_delivered(database_url)

        async with (
            bridge_database(database_url, agents=[{"slug": "assistant"}]) as db,
            db.sessions() as session,
        ):
            query = select(AttachmentRow.name, AttachmentRow.platform_file_id).where(
                AttachmentRow.message_id == reply.id
            )
            recorded = {name: file_id for name, file_id in await session.execute(query)}

    assert recorded["chart.png"] == image_id
    thread = [m for m in fake.messages(CHANNEL) if m.get("thread_ts") == root and m.get("bot_id")]
    texts = [m for m in thread if m.get("subtype") != "file_share"]
    shared = [m for m in thread if m.get("subtype") == "file_share"]
    assert [m["text"] for m in texts] == [TEXT] and len(fake.posts) == 1
    assert [[f["name"] for f in m["files"]] for m in shared] == [["chart.png"], ["report.pdf"]]
    assert len(fake.shares) == 2 and len(fake.upload_requests) == 2  # nothing sent twice
    for name, data in (("chart.png", PNG), ("report.pdf", PDF)):
        file_id = recorded[name]
        assert file_id is not None
        [share] = fake.shares_of(file_id)
        assert (share["channel"], share["thread_ts"]) == (CHANNEL, root)
        assert fake.uploads[file_id].data == data
    assert texts[0]["ts"] in reply.platform_message_ids
