"""A text file sent on Feishu reaches a webhook agent as a signed link: an encrypted, signed
``im.message.receive_v1`` pushed to the webhook, the file fetched through its message with the
tenant token in the answer step, the agent given ``attachments`` with a link it opens without
a token; the link refused once tampered with (403) or expired (410). SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from bridge.store.models import MessageState
from tests.channels.contract_drivers import feishu_section
from tests.fakes.feishu import DEFAULT_ENCRYPT_KEY, FakeFeishu
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.harness import WEBHOOK_SECRET, make_settings, webhook_agent_config
from tests.support.signed_links import bridge_with_links, check_signed_link

NOTES = b"line one\nline two: \xc3\xa9t\xc3\xa9\n" * 40


async def test_a_text_file_reaches_a_webhook_agent_through_its_signed_link(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        FakeFeishu(encrypt_key=DEFAULT_ENCRYPT_KEY) as fake,
        FakeWebhookAgent(secret=WEBHOOK_SECRET) as agent,
    ):
        agent.add_reply("read it")
        fake.add_user()
        config = webhook_agent_config(
            agent, feishu=feishu_section(fake, streaming="off", status_reactions=False)
        )
        config.pop("inmemory")
        settings = make_settings(database_url, agents=[config])
        async with bridge_with_links(settings, tmp_path / "files") as bridge:
            event = fake.message_event(file=("file_v3_notes", "notes.txt"))
            message_id = event["event"]["message"]["message_id"]
            fake.add_resource(message_id, "file_v3_notes", NOTES, "text/plain", kind="file")
            assert (await fake.push(bridge.url + "/feishu/assistant/events", event)).status == 200
            assert (await fake.next_sent(timeout=10)).text == "read it"
            [user] = [m for m in await bridge.messages() if m.role == "user"]
            await bridge.reply_to(user.id, state=MessageState.DELIVERED)

            [request] = agent.requests
            assert request.error is None
            [given] = request.json["attachments"]
            assert given["content_type"] == "text/plain"
            await check_signed_link(bridge, given, name="notes.txt", data=NOTES)
        [download] = fake.resource_downloads()  # fetched once, in the answer step
        assert download.path == f"/open-apis/im/v1/messages/{message_id}/resources/file_v3_notes"
        assert download.query == {"type": "file"}
