"""Feishu replies shown while they are written (CardKit streaming cards) and the status
reactions, through the real app and the project's client against the strict fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bridge.appkeys import CHANNELS, SETTINGS
from bridge.ports.events import Reply
from bridge.store.models import MessageState
from tests.channels.contract_drivers import feishu_section
from tests.fakes.feishu import FakeFeishu, post_text
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.harness import WEBHOOK_SECRET, RunningBridge, make_settings, running_bridge

STREAM = {"echo_stream_chunk_chars": 40, "echo_stream_delay_ms": 120}


@asynccontextmanager
async def live_bridge(
    database_url: str, *, agent: dict[str, Any] | None = None, **section: Any
) -> AsyncIterator[tuple[FakeFeishu, RunningBridge, str]]:
    async with FakeFeishu() as fake:
        fake.add_user()
        agents = [{"slug": "assistant", "feishu": feishu_section(fake, **section), **(agent or {})}]
        async with running_bridge(make_settings(database_url, agents=agents)) as bridge:
            yield fake, bridge, bridge.url + "/feishu/assistant/events"


async def _ask(fake: FakeFeishu, url: str, text: str) -> str:
    event = fake.message_event(text=text)
    assert (await fake.push(url, event)).status == 200
    return str(event["event"]["message"]["message_id"])


async def _delivered(bridge: RunningBridge) -> Any:
    [user] = [m for m in await bridge.messages() if m.role == "user"]
    return await bridge.reply_to(user.id, state=MessageState.DELIVERED)


def _text(n: int) -> str:
    return " ".join(f"word{i}" for i in range(n))


async def test_a_streamed_reply_grows_in_one_card_and_ends_exact(database_url: str) -> None:
    text = _text(60)
    async with live_bridge(database_url, agent=STREAM) as (fake, bridge, url):
        asked = await _ask(fake, url, text)
        reply = await _delivered(bridge)
        [sent] = fake.sent
        assert sent.msg_type == "interactive" and sent.reply_to == asked
        card = fake.card_of(sent.message_id)
        # Intermediate texts were shown before the final one, each a prefix of it.
        assert len(card.history) >= 3
        assert card.history[0] != text and all(text.startswith(t) for t in card.history)
        assert card.text() == text and sent.text == text
        assert card.streaming is False and card.settings_log[-1] is False
        assert card.document["config"]["summary"]["content"].startswith("word0")
        assert reply.platform_message_ids == [sent.message_id]
        # Status: OnIt while answering, then DONE in its place.
        assert fake.reaction_log == [
            ("added", asked, "OnIt"),
            ("deleted", asked, "OnIt"),
            ("added", asked, "DONE"),
        ]
        assert fake.reactions_on(asked) == ["DONE"]
        assert len(fake.message_creates()) == 1


async def test_a_long_streamed_reply_continues_in_a_new_card_at_the_limit(
    database_url: str,
) -> None:
    paragraphs = [f"paragraph {i} " + "z" * 500 for i in range(24)]
    text = "\n\n".join(paragraphs)
    agent = {"echo_stream_chunk_chars": 2500, "echo_stream_delay_ms": 350}
    async with live_bridge(database_url, agent=agent) as (fake, bridge, url):
        await _ask(fake, url, text)
        reply = await _delivered(bridge)
        assert len(text) > 8000
        texts = [sent.text or "" for sent in fake.sent]
        assert len(texts) == 2 and all(len(t) <= 8000 for t in texts)
        assert "\n\n".join(texts) == text
        assert reply.platform_message_ids == [sent.message_id for sent in fake.sent]
        assert fake.deleted == []
        for sent in fake.sent:
            if sent.msg_type == "interactive":
                assert fake.card_of(sent.message_id).streaming is False
        assert fake.sent[0].msg_type == "interactive"


async def test_a_rate_limit_on_a_card_edit_still_ends_complete(database_url: str) -> None:
    text = _text(60)
    async with live_bridge(database_url, agent=STREAM) as (fake, bridge, url):
        fake.rate_limit_next(2, reset_seconds=0.5, http_status=429, method="card.content")
        await _ask(fake, url, text)
        await _delivered(bridge)
        throttled = [r for r in fake.requests_to("PUT", "/open-apis/cardkit") if r.status == 429]
        assert len(throttled) == 2
        [sent] = fake.sent
        assert sent.text == text and fake.card_of(sent.message_id).streaming is False


async def test_an_agent_failing_mid_stream_ends_with_the_apology_and_a_cross(
    database_url: str,
) -> None:
    async with FakeWebhookAgent(secret=WEBHOOK_SECRET) as agent:
        agent.add_stream(
            "Half of ", "an answer ", "never finished", cut="abort", cut_after=2, pause_seconds=1.5
        )
        webhook = {
            "backend": "webhook",
            "webhook": {"url": agent.url, "secret": WEBHOOK_SECRET, "timeout_seconds": 10},
        }
        async with live_bridge(database_url, agent=webhook) as (fake, bridge, url):
            asked = await _ask(fake, url, "question")
            reply = await _delivered(bridge)
            apology = bridge.app[SETTINGS].pipeline.apology_text
            [sent] = fake.sent
            assert sent.msg_type == "interactive" and sent.reply_to == asked
            card = fake.card_of(sent.message_id)
            # The partial answer was shown live before the agent failed, never the rest.
            *before, last = card.history
            assert before[0] == "Half of"  # the card was created with the first delta
            assert set(before) <= {"Half of", "Half of an answer"}
            # Then the same card shows exactly the apology, and streaming is closed.
            assert last == apology and card.text() == apology and sent.text == apology
            assert card.streaming is False and card.settings_log[-1] is False
            assert len(fake.message_creates()) == 1 and fake.deleted == []
            assert reply.platform_message_ids == [sent.message_id]
            assert fake.reaction_log == [
                ("added", asked, "OnIt"),
                ("deleted", asked, "OnIt"),
                ("added", asked, "CrossMark"),
            ]
            assert fake.reactions_on(asked) == ["CrossMark"]


async def test_streaming_off_posts_once_as_markdown_with_no_edits(database_url: str) -> None:
    text = (
        "**bold** and a [link](https://example.com/a)\n\n- one\n- two\n\n"
        "```python\nprint('<hi>')\n```\n\n<script>alert(1)</script>"
    )
    async with live_bridge(database_url, agent=STREAM, streaming="off") as (fake, bridge, url):
        asked = await _ask(fake, url, text)
        await _delivered(bridge)
        [sent] = fake.sent
        assert sent.msg_type == "post"
        assert sent.data == {"zh_cn": {"content": [[{"tag": "md", "text": text}]]}}
        assert post_text(sent.data) == text
        assert fake.cards == {}
        assert fake.requests_to("PUT", "/open-apis") == []
        assert fake.reactions_on(asked) == ["DONE"]


async def test_no_status_reactions_when_they_are_off(database_url: str) -> None:
    async with live_bridge(database_url, status_reactions=False) as (fake, bridge, url):
        asked = await _ask(fake, url, "quiet")
        await _delivered(bridge)
        assert fake.reactions_on(asked) == [] and fake.reaction_log == []
        assert [sent.text for sent in fake.sent] == ["quiet"]


async def test_a_reaction_failure_never_fails_the_delivery(database_url: str) -> None:
    async with live_bridge(database_url) as (fake, bridge, url):
        fake.fail_next(1, 500, method="reaction.create")
        fake.fail_next(1, 500, method="reaction.list")
        asked = await _ask(fake, url, "still delivered")
        reply = await _delivered(bridge)
        assert [sent.text for sent in fake.sent] == ["still delivered"]
        assert reply.platform_message_ids == [fake.sent[0].message_id]
        assert fake.reactions_on(asked) == []


async def test_a_repeated_final_delivery_changes_nothing(database_url: str) -> None:
    """The in-doubt retry: the same send again finishes the same card and posts nothing."""
    text = _text(40)
    async with live_bridge(database_url, agent=STREAM) as (fake, bridge, url):
        asked = await _ask(fake, url, text)
        reply = await _delivered(bridge)
        feishu = bridge.app[CHANNELS].get("feishu", "assistant")
        again = Reply(
            message_id=reply.id,
            session_id=reply.session_id,
            delivery_key=str(reply.delivery_key),
            agent_slug="assistant",
            channel="feishu",
            external_conv_id="x",
            text=text,
            reply_target={"message_id": asked, "in_thread": ""},
            in_doubt=True,
            attempt=2,
            live_ids=tuple((await _asked(bridge)).live_message_ids or ()),
            outcome="answered",
        )
        assert feishu is not None
        ids = await feishu.send(again)
        assert list(ids) == reply.platform_message_ids
        assert len(fake.sent) == 1 and fake.sent[0].text == text
        assert fake.reactions_on(asked) == ["DONE"]


async def _asked(bridge: RunningBridge) -> Any:
    [user] = [m for m in await bridge.messages() if m.role == "user"]
    return user
