"""A text file sent on Slack reaches a webhook agent as a signed link: the signed event
through the real slack-bolt endpoint, the file fetched in the answer step, the agent given
``attachments`` with a link it opens without a token; the link refused once tampered with
(403) or expired (410). SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from bridge.store.models import MessageState
from tests.channels.contract_drivers import SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, slack_section
from tests.fakes import slack
from tests.fakes.slack import FakeSlack
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.harness import WEBHOOK_SECRET, make_settings, webhook_agent_config
from tests.support.signed_links import bridge_with_links, check_signed_link

DM = "D0DMLINKS1"
HUMAN = "U0HUMANL01"
NOTES = b"line one\nline two: \xc3\xa9t\xc3\xa9\n" * 40


async def test_a_text_file_reaches_a_webhook_agent_through_its_signed_link(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        FakeSlack(bot_token=SLACK_BOT_TOKEN, signing_secret=SLACK_SIGNING_SECRET) as fake,
        FakeWebhookAgent(secret=WEBHOOK_SECRET) as agent,
    ):
        agent.add_reply("read it")
        fake.add_channel(DM, is_im=True, user=HUMAN)
        fake.add_user(HUMAN, "ada", "Ada")
        document = fake.add_file(name="notes.txt", data=NOTES, mimetype="text/plain", user=HUMAN)
        config = webhook_agent_config(
            agent, slack=slack_section(fake, streaming="off", status_reactions=False)
        )
        config.pop("inmemory")
        settings = make_settings(database_url, agents=[config])
        async with bridge_with_links(settings, tmp_path / "files") as bridge:
            event = slack.message(channel=DM, user=HUMAN, text="see attached", files=[document])
            pushed = await fake.push_event(f"{bridge.url}/slack/assistant/events", event)
            assert pushed.status == 200
            assert (await fake.next_post(timeout=10))["text"] == "read it"
            [user] = [m for m in await bridge.messages() if m.role == "user"]
            await bridge.reply_to(user.id, state=MessageState.DELIVERED)

            [request] = agent.requests
            assert request.error is None
            assert request.json["message"]["text"] == "see attached"
            [given] = request.json["attachments"]
            assert given["content_type"] == "text/plain"
            await check_signed_link(bridge, given, name="notes.txt", data=NOTES)
        [download] = fake.file_requests  # fetched from Slack once, in the answer step
        assert download.headers["Authorization"] == f"Bearer {SLACK_BOT_TOKEN}"
