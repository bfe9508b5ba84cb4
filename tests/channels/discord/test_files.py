"""Discord attachments: what inbound records to fetch them, and ``fetch_file`` against the
strict fake's CDN (signed links, no bot token, Discord's hosts only, bounded reads)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yarl
from sqlalchemy import select

from bridge.files.settings import FilesSettings, StorageSettings
from bridge.ports.contract import ChannelContext, FileFetchingChannel
from bridge.ports.errors import FileFetchError
from bridge.ports.events import Attachment
from bridge.settings import AgentSettings
from bridge.store.models import AttachmentRow, MessageState
from channels.discord.adapter import DiscordChannel
from channels.discord.files import GONE, CdnFiles
from channels.discord.inbound import attachment
from channels.discord.settings import DiscordChannelSettings
from tests.fakes.discord import CDN_METHOD, DEFAULT_CHANNEL_ID, DEFAULT_USER_ID, FakeDiscord
from tests.fakes.openai_server import FakeOpenAIServer, user_parts
from tests.support.discord import discord_section, restore_discord_endpoints  # noqa: F401
from tests.support.harness import make_settings, running_bridge
from tests.support.processes import wait_until

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40  # 10,248 bytes
MAX = 1 << 20
KEY_ENV = "BRIDGE_TEST_DISCORD_FILES_OPENAI_KEY"
API_KEY = "sk-discord-files"

pytestmark = pytest.mark.usefixtures("restore_discord_endpoints")


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as running:
        yield running


@pytest.fixture
async def channel(fake: FakeDiscord) -> AsyncIterator[DiscordChannel]:
    """The channel as the bridge builds it, not started: fetching needs no gateway."""

    async def dispatch(event: object) -> Any:
        raise AssertionError(f"nothing is dispatched here: {event}")

    built = DiscordChannel(
        context=ChannelContext(
            agent=AgentSettings(slug="assistant"),
            settings=DiscordChannelSettings.model_validate(discord_section(fake)),
            dispatch=dispatch,  # type: ignore[arg-type]
        )
    )
    yield built
    await built.stop()


def source_of(document: dict[str, Any], channel_id: str = DEFAULT_CHANNEL_ID) -> dict[str, Any]:
    """The ``source`` inbound records for an attachment object (as the row keeps it)."""
    found = pending(document, channel_id)
    return dict(found.source)


def pending(document: dict[str, Any], channel_id: str = DEFAULT_CHANNEL_ID) -> Attachment:
    return attachment(
        attachment_id=document["id"],
        filename=document["filename"],
        content_type=document.get("content_type"),
        size=document["size"],
        url=document["url"],
        channel_id=channel_id,
        message_id="1400000000000000001",
    )


async def refused(channel: DiscordChannel, source: dict[str, Any], max_bytes: int = MAX) -> str:
    """The reason of the permanent refusal ``fetch_file`` must raise."""
    with pytest.raises(FileFetchError) as raised:
        await channel.fetch_file(source, max_bytes=max_bytes)
    assert raised.value.permanent, f"expected a permanent refusal, got: {raised.value}"
    return str(raised.value)


async def test_fetch_returns_the_bytes_and_type_without_sending_the_bot_token(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    assert isinstance(channel, FileFetchingChannel)
    document = fake.add_attachment(filename="cat photo.png", data=PNG, content_type="image/png")

    fetched = await channel.fetch_file(source_of(document), max_bytes=MAX)

    assert fetched.data == PNG and fetched.content_type == "image/png"
    [request] = fake.cdn_requests
    assert request.status == 200 and request.query.keys() >= {"ex", "is", "hm"}
    assert "Authorization" not in request.headers
    assert all(fake.token not in value for value in request.headers.values())


async def test_inbound_records_what_fetching_needs() -> None:
    document = {
        "id": "1500000000000000001",
        "filename": "a.pdf",
        "size": 12,
        "url": "https://cdn.discordapp.com/attachments/1/1500000000000000001/a.pdf?ex=1&is=2&hm=3",
    }
    found = pending(document, channel_id="1300000000000000009")
    assert (found.name, found.mime_type, found.size, found.state) == ("a.pdf", None, 12, "pending")
    assert found.source == {
        "attachment_id": "1500000000000000001",
        "url": document["url"],
        "size": 12,
        "channel_id": "1300000000000000009",
        "message_id": "1400000000000000001",
    }


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/x.png",
        "http://127.0.0.2:{port}/attachments/1/2/x.png",
        "http://127.0.0.1:{other}/attachments/1/2/x.png",
        "https://cdn.discordapp.com.evil.example/attachments/1/2/x.png",
        "http://cdn.discordapp.com/attachments/1/2/x.png",
        "/attachments/1/2/x.png",
        "not a link",
    ],
)
async def test_a_link_off_discords_cdn_is_refused_without_a_request(
    fake: FakeDiscord, channel: DiscordChannel, url: str
) -> None:
    port = yarl.URL(fake.url).port or 0
    source = {"url": url.format(port=port, other=port + 1), "size": 10}

    reason = await refused(channel, source)

    assert reason == "the attachment link is not on Discord's CDN"
    assert fake.cdn_requests == []


def test_only_discords_cdn_hosts_over_https_are_allowed() -> None:
    files = CdnFiles(api_base_url="https://discord.com/api/v10")
    for allowed in (
        "https://cdn.discordapp.com/attachments/1/2/a.png?ex=1&is=2&hm=3",
        "https://media.discordapp.net/attachments/1/2/a.png",
    ):
        assert files.allowed(yarl.URL(allowed)), allowed
    for refused_url in (
        "http://cdn.discordapp.com/attachments/1/2/a.png",
        "https://cdn.discordapp.com:8443/attachments/1/2/a.png",
        "https://user@cdn.discordapp.com/attachments/1/2/a.png",
        "https://discord.com/api/v10/channels/1",
        "http://127.0.0.1:8080/attachments/1/2/a.png",
    ):
        assert not files.allowed(yarl.URL(refused_url)), refused_url


async def test_a_declared_size_over_the_limit_is_refused_before_fetching(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    document = fake.add_attachment(filename="big.bin", data=PNG)

    reason = await refused(channel, source_of(document), max_bytes=len(PNG) - 1)

    assert reason == f"the file is larger than {len(PNG) - 1} bytes"
    assert fake.cdn_requests == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_the_limit_is_refused_while_reading(
    fake: FakeDiscord, channel: DiscordChannel, chunked: bool
) -> None:
    """The declared size can be wrong: the bytes read count, not the metadata."""
    document = fake.add_attachment(filename="big.bin", data=PNG, size=100, chunked=chunked)

    reason = await refused(channel, source_of(document), max_bytes=1000)

    assert reason == "the file is larger than 1000 bytes"
    assert len(fake.cdn_requests) == 1


async def test_a_file_at_exactly_the_limit_is_fetched(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    document = fake.add_attachment(filename="exact.bin", data=PNG, chunked=True)

    fetched = await channel.fetch_file(source_of(document), max_bytes=len(PNG))

    assert fetched.data == PNG and fetched.content_type == "application/octet-stream"


async def test_a_gone_file_or_an_expired_link_is_a_permanent_refusal(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    gone = fake.add_attachment(filename="gone.png", data=PNG, content_type="image/png")
    fake.remove_attachment(gone["id"])
    expired = fake.add_attachment(filename="old.png", data=PNG, link_seconds=-60)
    forged = fake.add_attachment(filename="forged.png", data=PNG)
    forged_source = source_of(forged) | {"url": forged["url"].replace("hm=", "hm=0")}

    for source in (source_of(gone), source_of(expired), forged_source):
        assert (
            await refused(channel, source)
            == GONE
            == ("the attachment link expired or the file is gone")
        )
    assert [r.status for r in fake.cdn_requests] == [404, 404, 404]


async def test_a_server_error_is_transient_and_the_next_fetch_succeeds(
    fake: FakeDiscord, channel: DiscordChannel
) -> None:
    document = fake.add_attachment(filename="cat.png", data=PNG, content_type="image/png")
    fake.fail_next(1, 500, method=CDN_METHOD)
    fake.fail_next(1, 429, method=CDN_METHOD)

    for status in (500, 429):
        with pytest.raises(FileFetchError) as raised:
            await channel.fetch_file(source_of(document), max_bytes=MAX)
        assert not raised.value.permanent and str(status) in str(raised.value)
    fetched = await channel.fetch_file(source_of(document), max_bytes=MAX)

    assert fetched.data == PNG
    assert [r.status for r in fake.cdn_requests] == [500, 429, 200]


async def test_an_unreachable_cdn_is_transient(fake: FakeDiscord, channel: DiscordChannel) -> None:
    """aiohttp itself retries an idempotent GET once on a dropped connection: drop both."""
    document = fake.add_attachment(filename="cat.png", data=PNG)
    fake.drop_next(2, method=CDN_METHOD)

    with pytest.raises(FileFetchError) as raised:
        await channel.fetch_file(source_of(document), max_bytes=MAX)

    assert not raised.value.permanent
    assert "could not be reached" in str(raised.value)


async def test_a_dm_attachment_is_stored_pending_with_its_fetch_source(
    database_url: str, fake: FakeDiscord
) -> None:
    """Through the real discord.py client: the row keeps the signed link and the ids."""
    settings = make_settings(
        database_url, agents=[{"slug": "assistant", "discord": discord_section(fake)}]
    )
    async with running_bridge(settings) as bridge:
        await fake.wait_identified(timeout=10)
        dm = fake.create_dm_channel(DEFAULT_USER_ID)
        document = fake.add_attachment(
            channel_id=dm, filename="cat.png", data=PNG, content_type="image/png"
        )
        sent = await fake.send_message(channel_id=dm, content="", attachments=[document])

        async def rows() -> list[AttachmentRow]:
            async with bridge.sessions() as db:
                return list((await db.execute(select(AttachmentRow))).scalars())

        async def stored() -> bool:
            return bool(await rows())

        await wait_until(stored, within=10, what="the attachment row")
        [row] = await rows()
    assert (row.name, row.content_type, row.size) == ("cat.png", "image/png", len(PNG))
    assert row.source == {
        "attachment_id": document["id"],
        "url": document["url"],
        "size": len(PNG),
        "channel_id": dm,
        "message_id": sent["id"],
    }


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAIServer]:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    async with FakeOpenAIServer(api_key=API_KEY, expected_model="gpt-test") as server:
        yield server


async def test_a_dm_image_reaches_an_openai_agent_as_an_image_part(
    database_url: str, tmp_path: Path, fake: FakeDiscord, model: FakeOpenAIServer
) -> None:
    """MESSAGE_CREATE through the real discord.py client, the file fetched from the CDN in
    the answer step, and the picture in the model's request."""
    model.add_reply("a picture of bytes")
    agent = {
        "slug": "assistant",
        "backend": "openai",
        "openai": {"base_url": model.url, "model": "gpt-test", "api_key_env": KEY_ENV},
        "discord": discord_section(fake, streaming="off", status_reactions=False),
    }
    settings = make_settings(database_url, agents=[agent]).model_copy(
        update={"storage": StorageSettings(path=str(tmp_path / "files")), "files": FilesSettings()}
    )
    async with running_bridge(settings) as bridge:
        await fake.wait_identified(timeout=10)
        dm = fake.create_dm_channel(DEFAULT_USER_ID)
        document = fake.add_attachment(
            channel_id=dm, filename="cat.png", data=PNG, content_type="image/png"
        )
        await fake.send_message(channel_id=dm, content="what is this?", attachments=[document])
        post = await fake.next_post(timeout=10)
        assert post["content"] == "a picture of bytes"
        [user] = [m for m in await bridge.messages() if m.role == "user"]
        await bridge.reply_to(user.id, state=MessageState.DELIVERED)
        async with bridge.sessions() as db:
            [row] = (await db.execute(select(AttachmentRow))).scalars()
    (record,) = model.answers
    text, images = user_parts(record)
    assert "what is this?" in text and images == [("image/png", PNG)]
    parts = [m for m in record.json["messages"] if m["role"] == "user"][-1]["content"]
    expected = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert {"type": "image_url", "image_url": {"url": expected}} in parts
    assert row.state == "stored" and row.size == len(PNG)
    [download] = fake.cdn_requests
    assert download.path == f"/attachments/{dm}/{document['id']}/cat.png"
    assert "Authorization" not in download.headers


async def test_an_expired_link_is_refused_with_its_reason_and_the_agent_still_answers(
    database_url: str, tmp_path: Path, fake: FakeDiscord, model: FakeOpenAIServer
) -> None:
    model.add_reply("I cannot see it")
    agent = {
        "slug": "assistant",
        "backend": "openai",
        "openai": {"base_url": model.url, "model": "gpt-test", "api_key_env": KEY_ENV},
        "discord": discord_section(fake, streaming="off", status_reactions=False),
    }
    settings = make_settings(database_url, agents=[agent]).model_copy(
        update={"storage": StorageSettings(path=str(tmp_path / "files")), "files": FilesSettings()}
    )
    async with running_bridge(settings) as bridge:
        await fake.wait_identified(timeout=10)
        dm = fake.create_dm_channel(DEFAULT_USER_ID)
        document = fake.add_attachment(channel_id=dm, filename="old.png", data=PNG, link_seconds=-1)
        await fake.send_message(channel_id=dm, content="and this?", attachments=[document])
        post = await fake.next_post(timeout=10)
        assert post["content"] == "I cannot see it"
        async with bridge.sessions() as db:
            [row] = (await db.execute(select(AttachmentRow))).scalars()
    assert (row.state, row.reason) == ("refused", GONE)
    assert len(fake.cdn_requests) == 1, "a permanent refusal is not retried"
    _text, images = user_parts(model.answers[0])
    assert images == []
