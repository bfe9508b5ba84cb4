"""Live replies on Discord through the real app: the real discord.py client in the bridge
against the strict fake, on SQLite and PostgreSQL. The reply is posted with its first text,
edited as it grows, finished once; 👀 then ✅ or ❌ on the user's message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bridge.store.models import ChatMessage, MessageState
from channels.discord.outbound import part_nonce, reply_parts
from tests.fakes.discord import DEFAULT_USER_ID, EDIT_METHOD, FakeDiscord
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.discord import discord_section, restore_discord_endpoints  # noqa: F401
from tests.support.harness import (
    WEBHOOK_SECRET,
    RunningBridge,
    make_settings,
    running_bridge,
    webhook_agent_config,
)
from tests.support.processes import wait_until

POSTS = r"/api/v10/channels/\d+/messages"
EDITS = r"/api/v10/channels/\d+/messages/\d+"
TEXT = ("The quick brown fox jumps over the lazy dog, then naps in the afternoon sun. " * 2).strip()
EYES, CHECK, CROSS = "\N{EYES}", "\N{WHITE HEAVY CHECK MARK}", "\N{CROSS MARK}"

pytestmark = pytest.mark.usefixtures("restore_discord_endpoints")


def streaming_agent(
    fake: FakeDiscord, *, chunk: int = 12, delay_ms: int = 150, **discord: Any
) -> dict[str, Any]:
    """The echo agent streaming its reply ``chunk`` characters at a time."""
    return {
        "slug": "assistant",
        "echo_stream_chunk_chars": chunk,
        "echo_stream_delay_ms": delay_ms,
        "discord": discord_section(fake, **discord),
    }


@asynccontextmanager
async def bridge_with(
    database_url: str, fake: FakeDiscord, agent: dict[str, Any]
) -> AsyncIterator[RunningBridge]:
    async with running_bridge(make_settings(database_url, agents=[agent])) as bridge:
        await fake.wait_identified(timeout=10)
        yield bridge


async def ask(
    bridge: RunningBridge, fake: FakeDiscord, text: str
) -> tuple[str, dict[str, Any], ChatMessage]:
    """The user writes ``text`` in a DM; the DM, the message and its delivered reply."""
    dm = fake.create_dm_channel(DEFAULT_USER_ID)
    asked = await fake.send_message(channel_id=dm, content=text)

    async def stored() -> list[ChatMessage]:
        return [m for m in await bridge.messages() if m.external_message_id == asked["id"]]

    async def arrived() -> bool:
        return bool(await stored())

    await wait_until(arrived, within=10, what="the question stored")
    [question] = await stored()
    reply = await bridge.reply_to(question.id, state=MessageState.DELIVERED)
    return dm, asked, reply


def bot_messages(fake: FakeDiscord, channel_id: str) -> list[dict[str, Any]]:
    """The bot's messages in a channel as they are now (edits applied, deletions gone)."""
    return [m for m in fake.messages(channel_id) if m["author"]["id"] == fake.bot.id]


def shown_texts(fake: FakeDiscord, post: dict[str, Any]) -> list[str]:
    """Every text a message showed: its text when created, then each edit."""
    return [post["content"], *fake.edits_of(post["id"])]


async def test_a_streamed_reply_grows_in_one_message_and_ends_exact(database_url: str) -> None:
    async with (
        FakeDiscord() as fake,
        bridge_with(database_url, fake, streaming_agent(fake)) as bridge,
    ):
        dm, asked, reply = await ask(bridge, fake, TEXT)
        [post] = fake.posts_by()
        shown = shown_texts(fake, post)
        # Progressive: first posted with part of the text, then edited, ending exact.
        assert post["content"] != TEXT and TEXT.startswith(post["content"])
        assert len(shown) >= 3 and shown[-1] == TEXT
        assert any(text != TEXT for text in shown[1:]), "no intermediate edit"
        assert all(TEXT.startswith(text) for text in shown)
        assert [m["content"] for m in bot_messages(fake, dm)] == [TEXT]
        # Posted once, as a reply to the question, with the nonce the final delivery uses.
        [create] = fake.requests_to("POST", POSTS)
        assert create.json["nonce"] == part_nonce(reply.delivery_key or "", 0)
        assert create.json["enforce_nonce"] is True
        assert post["message_reference"]["message_id"] == asked["id"]
        assert reply.platform_message_ids == [post["id"]]
        # Typing while the agent worked; 👀, then ✅ in its place.
        assert dm in fake.typing
        assert fake.reaction_log == [
            ("add", asked["id"], EYES, fake.bot.id),
            ("remove", asked["id"], EYES, fake.bot.id),
            ("add", asked["id"], CHECK, fake.bot.id),
        ]
        assert fake.reactions_on(dm, asked["id"]) == [CHECK]


async def test_a_long_streamed_reply_continues_in_new_messages_at_the_limit(
    database_url: str,
) -> None:
    text = "\n".join(f"line {i:03d} " + "z" * 60 for i in range(70))  # about 4,800 characters
    async with (
        FakeDiscord() as fake,
        bridge_with(database_url, fake, streaming_agent(fake, chunk=400, delay_ms=150)) as bridge,
    ):
        dm, asked, reply = await ask(bridge, fake, text)
        parts = reply_parts(text)
        assert len(parts) == 3
        final = bot_messages(fake, dm)
        assert [m["content"] for m in final] == parts  # each part exact, no extra message
        assert all(len(m["content"]) <= 2000 for m in final)
        assert [p["id"] for p in fake.posts_by()] == [m["id"] for m in final]
        assert reply.platform_message_ids == [m["id"] for m in final]
        nonces = [r.json["nonce"] for r in fake.requests_to("POST", POSTS)]
        assert nonces == [part_nonce(reply.delivery_key or "", i) for i in range(3)]
        assert final[0]["message_reference"]["message_id"] == asked["id"]
        assert all("message_reference" not in m for m in final[1:])
        # The first part was started with the first text, long before it was complete.
        assert len(fake.posts_by()[0]["content"]) < len(parts[0])


async def test_rate_limited_edits_still_end_complete(database_url: str) -> None:
    async with (
        FakeDiscord() as fake,
        bridge_with(database_url, fake, streaming_agent(fake)) as bridge,
    ):
        fake.rate_limit_next(2, retry_after=0.5, method=EDIT_METHOD)
        dm, _asked, reply = await ask(bridge, fake, TEXT)
        statuses = [r.status for r in fake.requests_to("PATCH", EDITS)]
        assert statuses.count(429) == 2 and statuses[-1] == 200
        [post] = fake.posts_by()
        assert [m["content"] for m in bot_messages(fake, dm)] == [TEXT]
        assert reply.platform_message_ids == [post["id"]]


async def test_an_agent_failing_mid_stream_ends_with_the_apology_and_a_cross(
    database_url: str,
) -> None:
    async with FakeWebhookAgent(secret=WEBHOOK_SECRET) as agent, FakeDiscord() as fake:
        agent.add_stream(
            "Half of ", "an answer ", "never finished", cut="abort", cut_after=2, pause_seconds=1.5
        )
        config = webhook_agent_config(agent)
        del config["inmemory"]
        config["discord"] = discord_section(fake)
        settings = make_settings(database_url, agents=[config])
        async with running_bridge(settings) as bridge:
            await fake.wait_identified(timeout=10)
            dm, asked, reply = await ask(bridge, fake, "question")
        apology = settings.pipeline.apology_text
        [post] = fake.posts_by()
        assert post["content"].startswith("Half of")  # shown live before the agent failed
        assert [m["content"] for m in bot_messages(fake, dm)] == [apology]
        assert fake.edits_of(post["id"])[-1] == apology
        assert reply.platform_message_ids == [post["id"]]
        assert fake.reactions_on(dm, asked["id"]) == [CROSS]


async def test_streaming_off_posts_once_with_no_edits(database_url: str) -> None:
    async with (
        FakeDiscord() as fake,
        bridge_with(database_url, fake, streaming_agent(fake, streaming="off")) as bridge,
    ):
        dm, asked, reply = await ask(bridge, fake, TEXT)
        [post] = fake.posts_by()
        assert post["content"] == TEXT
        assert fake.requests_to("PATCH", EDITS) == [] and fake.edits == []
        assert reply.platform_message_ids == [post["id"]]
        assert dm in fake.typing
        assert fake.reactions_on(dm, asked["id"]) == [CHECK]


async def test_status_reactions_can_be_off(database_url: str) -> None:
    async with (
        FakeDiscord() as fake,
        bridge_with(database_url, fake, streaming_agent(fake, status_reactions=False)) as bridge,
    ):
        dm, _asked, _reply = await ask(bridge, fake, "no reactions please")
        assert [m["content"] for m in bot_messages(fake, dm)] == ["no reactions please"]
        assert fake.reaction_log == []
        assert fake.requests_to("PUT", r".*/reactions/.*") == []


async def test_markdown_arrives_as_discord_markdown_unchanged(database_url: str) -> None:
    """Discord renders Markdown itself: a link, a list, bold, a fenced code block and an
    attempted ``<script>`` arrive exactly as written (Discord shows the tag as text)."""
    text = (
        "**Bold** and a [link](https://example.com/docs)\n"
        "- first item\n- second item\n"
        "```python\ndef hello() -> str:\n    return '<b>hi</b>'\n```\n"
        "<script>alert('x')</script>"
    )
    async with (
        FakeDiscord() as fake,
        bridge_with(database_url, fake, streaming_agent(fake, chunk=25, delay_ms=150)) as bridge,
    ):
        dm, _asked, _reply = await ask(bridge, fake, text)
        assert [m["content"] for m in bot_messages(fake, dm)] == [text]
        assert len(fake.posts_by()) == 1
