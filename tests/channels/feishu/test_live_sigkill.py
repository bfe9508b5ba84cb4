"""A bridge killed with SIGKILL while a Feishu reply streams into its CardKit card: the card
was sent, recorded (``live_message_ids``) and updated at least once, then the process died.
The next process answers again, continues that same card (``Draft.started``) and finishes it:
one card reply with exactly the whole text, streaming mode off, no second message.

Real ``bridge serve`` processes against the strict fake, on one SQLite file (a restarted
process releases every claim at once)."""

from __future__ import annotations

from pathlib import Path

from bridge.store.models import ChatMessage, MessageState
from tests.channels.contract_drivers import feishu_section
from tests.fakes.feishu import FakeFeishu, FeishuCard
from tests.support.processes import bridge_database, run_cli, serving_bridge, wait_until, write_toml

TEXT = "Streaming across a crash, " + "one word at a time, " * 8 + "and finished once."
AGENT = {"slug": "assistant", "echo_stream_chunk_chars": 10, "echo_stream_delay_ms": 300}
PIPELINE = {"poll_interval_seconds": 0.5, "retry_base_seconds": 0.2}
CARD_CREATES = "/open-apis/cardkit/v1/cards"


async def _rows(database_url: str) -> list[ChatMessage]:
    async with bridge_database(database_url, agents=[{"slug": "assistant"}]) as db:
        return await db.messages()


def _sent_card(fake: FakeFeishu) -> FeishuCard | None:
    """The one card a message shows, if one was sent yet."""
    sent = [card for card in fake.cards.values() if card.message_id is not None]
    return sent[0] if sent else None


async def test_sigkill_mid_stream_finishes_the_same_card(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"
    async with FakeFeishu() as fake:
        fake.add_user()
        config = write_toml(
            tmp_path / "bridge.toml",
            {
                "database": {"url": database_url},
                "pipeline": PIPELINE,
                "agents": [{**AGENT, "feishu": feishu_section(fake)}],
            },
        )
        migrated = run_cli("migrate", "--config", str(config), cwd=tmp_path)
        assert migrated.returncode == 0, migrated.stderr
        event = fake.message_event(text=TEXT)
        asked = str(event["event"]["message"]["message_id"])

        async with serving_bridge(config, cwd=tmp_path) as first:
            pushed = await fake.push(f"{first.url}/feishu/assistant/events", event)
            assert pushed.status == 200

            async def recorded() -> bool:
                rows = await _rows(database_url)
                card = _sent_card(fake)
                # Created with its first text, then at least one content update landed.
                return bool(rows and rows[0].live_message_ids and card and len(card.history) >= 2)

            await wait_until(recorded, within=20, what="the live card sent, recorded, updated")
            first.kill()
            assert await first.wait() == -9

        [question] = await _rows(database_url)
        assert question.external_message_id == asked
        [live_id] = question.live_message_ids or []
        [sent] = fake.sent
        card = fake.card_of(sent.message_id)
        assert live_id.split("|")[:2] == [sent.message_id, card.card_id]
        assert sent.msg_type == "interactive" and sent.reply_to == asked
        # Cut off mid-stream: still streaming, showing only a beginning of the reply.
        assert card.streaming is True and card.settings_log == []
        assert card.text() != TEXT and TEXT.startswith(card.text())
        updates_before = len(card.history)
        assert fake.reactions_on(asked) == ["OnIt"]

        async with serving_bridge(config, cwd=tmp_path):

            async def delivered() -> bool:
                rows = await _rows(database_url)
                return len(rows) == 2 and rows[1].state == MessageState.DELIVERED

            await wait_until(delivered, within=30, what="the reply delivered after restart")

        question, reply = await _rows(database_url)
        # The same card message, finished: no second message, no second card.
        assert [s.message_id for s in fake.sent] == [sent.message_id]
        assert len(fake.message_creates()) == 1
        assert len(fake.requests_to("POST", CARD_CREATES)) == 1
        assert list(fake.cards) == [card.card_id]
        assert fake.deleted == []
        assert len(card.history) > updates_before  # continued by the restarted process
        assert card.text() == TEXT and sent.text == TEXT
        assert card.streaming is False and card.settings_log[-1] is False
        assert reply.platform_message_ids == [sent.message_id] and reply.content == TEXT
        assert fake.reactions_on(asked) == ["DONE"]
