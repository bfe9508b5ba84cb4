"""Reply files on Discord: the real discord.py client in the Discord channel uploads them as
multipart Create Message to the strict fake, in the right channel or thread, exactly once.

The channel is driven with Replies built here (as the delivery step hands them over), so these
tests need no database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from bridge.ports import DeliveryError
from bridge.ports.events import OutgoingFile, Reply
from bridge.settings import AgentSettings
from channels.discord import plugin
from channels.discord.adapter import DiscordChannel
from channels.discord.outbound import part_nonce
from channels.discord.settings import DiscordChannelSettings
from channels.discord.uploads import files_nonce
from tests.fakes.discord import (
    DEFAULT_CHANNEL_ID,
    DEFAULT_FILE_LIMIT,
    DEFAULT_GUILD_ID,
    DEFAULT_THREAD_ID,
    DEFAULT_USER_ID,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
)
from tests.fakes.webhook_agent import FakeWebhookAgent, inline_file
from tests.support.discord import discord_section, restore_discord_endpoints  # noqa: F401
from tests.support.harness import WEBHOOK_SECRET, make_settings, running_bridge
from tests.support.processes import wait_until

POSTS = r"/api/v10/channels/\d+/messages"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.7\n" + b"report " * 100

pytestmark = pytest.mark.usefixtures("restore_discord_endpoints")


async def _no_inbound(item: object) -> Any:
    raise AssertionError(f"no inbound expected here: {item!r}")


@asynccontextmanager
async def discord_channel(fake: FakeDiscord, **extra: Any) -> AsyncIterator[DiscordChannel]:
    channel = plugin.build(
        agent=AgentSettings(slug="assistant"),
        settings=DiscordChannelSettings(**discord_section(fake, status_reactions=False, **extra)),
        dispatch=_no_inbound,
    )
    assert isinstance(channel, DiscordChannel)
    await channel.start()
    try:
        await wait_until(lambda: channel.status().ready, within=10, what="the client ready")
        yield channel
    finally:
        await channel.stop()


def outgoing(
    name: str, data: bytes, content_type: str, *, position: int, attachment_id: int | None = None
) -> OutgoingFile:
    return OutgoingFile(
        attachment_id=attachment_id or 100 + position,
        position=position,
        name=name,
        content_type=content_type,
        data=data,
    )


def reply_with(
    files: tuple[OutgoingFile, ...],
    *,
    text: str = "Here is the chart and the report.",
    target: dict[str, str] | None = None,
    key: str = "delivery-42",
    in_doubt: bool = False,
    attempt: int = 1,
) -> Reply:
    return Reply(
        message_id=42,
        session_id=7,
        delivery_key=key,
        agent_slug="assistant",
        channel="discord",
        external_conv_id=f"discord:{DEFAULT_GUILD_ID}:{DEFAULT_CHANNEL_ID}",
        text=text,
        reply_target=target or {"channel_id": DEFAULT_CHANNEL_ID, "guild_id": DEFAULT_GUILD_ID},
        in_doubt=in_doubt,
        attempt=attempt,
        files=files,
    )


IMAGE_AND_FILE = (
    outgoing("chart.png", PNG, "image/png", position=0),
    outgoing("report.pdf", PDF, "application/pdf", position=1),
)


async def _download(url: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        return await response.read()


def test_the_plugin_says_it_sends_files() -> None:
    assert plugin.capabilities.sends_files


async def test_an_image_and_a_file_are_uploaded_natively_in_the_thread_once() -> None:
    async with FakeDiscord() as fake, discord_channel(fake) as channel:
        target = {"channel_id": DEFAULT_THREAD_ID, "guild_id": DEFAULT_GUILD_ID}
        reply = reply_with(IMAGE_AND_FILE, target=target)
        ids = await channel.send(reply)
        # Retried as the delivery step does after a lost answer: the same messages back.
        again = await channel.send(reply_with(IMAGE_AND_FILE, target=target, in_doubt=True))
        assert again == ids

        text_post, files_post = fake.posts_by()
        assert ids == [text_post["id"], files_post["id"]]
        assert {text_post["channel_id"], files_post["channel_id"]} == {DEFAULT_THREAD_ID}
        assert text_post["content"] == reply.text and text_post["attachments"] == []
        assert files_post["content"] == ""
        shown = [(a["filename"], a["content_type"], a["size"]) for a in files_post["attachments"]]
        assert shown == [
            ("chart.png", "image/png", len(PNG)),
            ("report.pdf", "application/pdf", len(PDF)),
        ]
        for attachment, data in zip(files_post["attachments"], (PNG, PDF), strict=True):
            assert await _download(attachment["url"]) == data

        # One multipart upload per attempt, under one stable nonce; the second one returned
        # the stored message.
        first, second = fake.uploads()
        for upload in (first, second):
            assert upload.json["nonce"] == files_nonce(reply.delivery_key, 0)
            assert upload.json["enforce_nonce"] is True
            assert [(f.index, f.filename, f.data) for f in upload.files] == [
                (0, "chart.png", PNG),
                (1, "report.pdf", PDF),
            ]
            assert upload.json["attachments"] == [
                {"id": 0, "filename": "chart.png"},
                {"id": 1, "filename": "report.pdf"},
            ]
        assert second.response["id"] == files_post["id"]
        assert [hit["id"] for hit in fake.nonce_hits] == [text_post["id"], files_post["id"]]
        assert files_nonce(reply.delivery_key, 0) != part_nonce(reply.delivery_key, 0)


async def test_files_without_text_reply_to_the_users_message_in_a_dm() -> None:
    async with FakeDiscord() as fake, discord_channel(fake) as channel:
        dm = fake.create_dm_channel(DEFAULT_USER_ID)
        asked = await fake.send_message(channel_id=dm, content="draw it")
        target = {"channel_id": dm, "guild_id": "", "message_id": asked["id"]}
        ids = await channel.send(reply_with(IMAGE_AND_FILE[:1], text="", target=target))
        [post] = fake.posts_by()
        assert ids == [post["id"]] and post["channel_id"] == dm
        assert post["message_reference"]["message_id"] == asked["id"]
        assert [a["filename"] for a in post["attachments"]] == ["chart.png"]


async def test_a_file_over_the_limit_is_named_in_the_text_and_not_uploaded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    big = outgoing("video.mp4", b"\x00" * (DEFAULT_FILE_LIMIT + 1), "video/mp4", position=1)
    files = (IMAGE_AND_FILE[0], big)
    async with FakeDiscord() as fake, discord_channel(fake) as channel:
        await channel.send(reply_with(files, text="Both files:"))
        text_post, files_post = fake.posts_by()
        assert text_post["content"] == (
            "Both files:\n\n[file: video.mp4 not sent: larger than Discord allows]"
        )
        assert [a["filename"] for a in files_post["attachments"]] == ["chart.png"]
        assert all(f.filename != "video.mp4" for u in fake.uploads() for f in u.files)
    assert any(r.getMessage() == "discord.file_not_sent" for r in caplog.records)


async def test_a_boosted_guild_takes_larger_files() -> None:
    guild = FakeGuild(
        DEFAULT_GUILD_ID,
        "Boosted",
        channels=[FakeChannel(DEFAULT_CHANNEL_ID, "general")],
        premium_tier=2,
    )
    big = outgoing(
        "big.bin", b"\x01" * (DEFAULT_FILE_LIMIT + 1), "application/octet-stream", position=0
    )
    async with FakeDiscord(guilds=[guild]) as fake, discord_channel(fake) as channel:
        await channel.send(reply_with((big,), text="large"))
        _, files_post = fake.posts_by()
        assert [(a["filename"], a["size"]) for a in files_post["attachments"]] == [
            ("big.bin", DEFAULT_FILE_LIMIT + 1)
        ]


async def test_a_file_discord_refuses_as_too_large_is_named_in_a_note_once() -> None:
    """The client's guild says 50 MiB, Discord enforces 10 (a boost just ended): 40005."""
    guild = FakeGuild(
        DEFAULT_GUILD_ID,
        "Was boosted",
        channels=[FakeChannel(DEFAULT_CHANNEL_ID, "general")],
        premium_tier=2,
    )
    big = outgoing(
        "big.bin", b"\x01" * (DEFAULT_FILE_LIMIT + 1), "application/octet-stream", position=0
    )
    async with FakeDiscord(guilds=[guild]) as fake, discord_channel(fake) as channel:
        fake.file_limit_override = DEFAULT_FILE_LIMIT
        reply = reply_with((big,), text="large")
        ids = await channel.send(reply)
        assert await channel.send(reply_with((big,), text="large", in_doubt=True)) == ids
        text_post, note = fake.posts_by()
        assert note["content"] == "[file: big.bin not sent: larger than Discord allows]"
        assert note["attachments"] == [] and ids == [text_post["id"], note["id"]]
        refused = [r for r in fake.requests_to("POST", POSTS) if r.files]
        assert [(r.status, r.response["code"]) for r in refused] == [(413, 40005)] * 2


async def test_more_than_ten_files_go_in_several_messages_each_with_its_nonce() -> None:
    files = tuple(
        outgoing(f"page-{n:02}.png", PNG + bytes([n]), "image/png", position=n) for n in range(23)
    )
    async with FakeDiscord() as fake, discord_channel(fake) as channel:
        reply = reply_with(files, text="23 pages")
        ids = await channel.send(reply)
        posts = fake.posts_by()
        assert ids == [p["id"] for p in posts] and len(posts) == 4
        counts = [len(p["attachments"]) for p in posts[1:]]
        assert counts == [10, 10, 3]
        names = [a["filename"] for p in posts[1:] for a in p["attachments"]]
        assert names == [f"page-{n:02}.png" for n in range(23)]
        nonces = [u.json["nonce"] for u in fake.uploads()]
        assert nonces == [files_nonce(reply.delivery_key, n) for n in range(3)]
        assert len(set(nonces)) == 3


async def test_a_failure_after_the_text_is_in_doubt_and_the_retry_posts_nothing_twice() -> None:
    async with FakeDiscord() as fake, discord_channel(fake) as channel:
        reply = reply_with(IMAGE_AND_FILE)
        fake.attach_files_denied.add(DEFAULT_CHANNEL_ID)  # the text goes out, the upload not
        with pytest.raises(DeliveryError) as refused:
            await channel.send(reply)
        assert refused.value.in_doubt and "403" in str(refused.value)
        assert len(fake.posts_by()) == 1
        fake.attach_files_denied.clear()
        ids = await channel.send(reply_with(IMAGE_AND_FILE, in_doubt=True, attempt=2))
        posts = fake.posts_by()
        assert [p["id"] for p in posts] == ids and len(posts) == 2
        assert [a["filename"] for a in posts[1]["attachments"]] == ["chart.png", "report.pdf"]


# --- the fake is strict about uploads ------------------------------------------------------


async def _post_form(fake: FakeDiscord, form: aiohttp.FormData) -> tuple[int, dict[str, Any]]:
    url = f"{fake.api_base_url}/channels/{DEFAULT_CHANNEL_ID}/messages"
    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession() as http, http.post(url, data=form, headers=headers) as got:
        return got.status, await got.json()


def _form(
    payload: dict[str, Any] | None, files: list[tuple[str, str | None, bytes]]
) -> aiohttp.FormData:
    form = aiohttp.FormData(quote_fields=False)
    if payload is not None:
        form.add_field("payload_json", json.dumps(payload), content_type="application/json")
    for name, filename, data in files:
        form.add_field(name, data, filename=filename, content_type="application/octet-stream")
    return form


async def test_the_fake_refuses_malformed_or_oversized_uploads() -> None:
    one = [("files[0]", "a.png", PNG)]
    attached = {"attachments": [{"id": 0, "filename": "a.png"}]}
    async with FakeDiscord() as fake:
        assert (await _post_form(fake, _form(None, one)))[0] == 400
        assert (await _post_form(fake, _form({"content": "x"}, one)))[0] == 400  # no attachments
        wrong_id = {"attachments": [{"id": 1, "filename": "a.png"}]}
        assert (await _post_form(fake, _form(wrong_id, one)))[0] == 400
        status, body = await _post_form(fake, _form(attached, [("files%5B0%5D", "a.png", PNG)]))
        assert status == 400
        eleven = [(f"files[{n}]", f"{n}.png", PNG) for n in range(11)]
        listed = {"attachments": [{"id": n, "filename": f"{n}.png"} for n in range(11)]}
        status, body = await _post_form(fake, _form(listed, eleven))
        assert (status, body["code"]) == (400, 30015)
        too_big = [("files[0]", "a.png", b"\x00" * (DEFAULT_FILE_LIMIT + 1))]
        status, body = await _post_form(fake, _form(attached, too_big))
        assert (status, body["code"]) == (413, 40005)
        assert fake.posts == []
        fake.attach_files_denied.add(DEFAULT_CHANNEL_ID)
        status, body = await _post_form(fake, _form(attached, one))
        assert (status, body["code"]) == (403, 50013)
        fake.attach_files_denied.clear()
        status, body = await _post_form(
            fake, _form({**attached, "nonce": "n1", "enforce_nonce": True}, one)
        )
        assert status == 200 and [a["filename"] for a in body["attachments"]] == ["a.png"]
        status, again = await _post_form(
            fake, _form({**attached, "nonce": "n1", "enforce_nonce": True}, one)
        )
        assert status == 200 and again["id"] == body["id"] and len(fake.posts) == 1


# --- end to end: a webhook agent answers with files ---------------------------------------


async def test_a_webhook_agents_files_reach_discord_once(
    database_url: str, webhook_agent: FakeWebhookAgent
) -> None:
    webhook_agent.add_reply(
        "Here you go.", attachments=[inline_file("chart.png", PNG, "image/png")]
    )
    async with FakeDiscord() as fake:
        agent = {
            "slug": "assistant",
            "backend": "webhook",
            "webhook": {"url": webhook_agent.url, "secret": WEBHOOK_SECRET},
            "discord": discord_section(fake, status_reactions=False),
        }
        async with running_bridge(make_settings(database_url, agents=[agent])) as bridge:
            await fake.wait_identified(timeout=10)
            dm = fake.create_dm_channel(DEFAULT_USER_ID)
            await fake.send_message(channel_id=dm, content="a chart please")
            text_post = await fake.next_post(timeout=15)
            files_post = await fake.next_post(timeout=15)
            assert text_post["content"] == "Here you go." and files_post["channel_id"] == dm
            assert [(a["filename"], a["size"]) for a in files_post["attachments"]] == [
                ("chart.png", len(PNG))
            ]
            replies = [m for m in await bridge.messages() if m.role == "assistant"]
            await wait_until(
                lambda: fake.posts_by() == [text_post, files_post], within=5, what="no more posts"
            )
            assert len(replies) == 1
            await fake.expect_no_post(within=1.0)
