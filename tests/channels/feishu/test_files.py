"""Files users send on Feishu: the attachment's source, fetched through the message that
carries it with the tenant token, from the strict fake; end to end to an OpenAI-style agent."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bridge.appkeys import CHANNELS
from bridge.files.settings import FilesSettings, StorageSettings
from bridge.ports.contract import FileFetchingChannel
from bridge.ports.errors import FileFetchError
from bridge.store.models import MessageState
from channels.feishu.adapter import FeishuChannel
from tests.channels.contract_drivers import feishu_section
from tests.fakes.feishu import DEFAULT_ENCRYPT_KEY, FakeFeishu
from tests.fakes.openai_server import FakeOpenAIServer, user_parts
from tests.support.harness import RunningBridge, make_settings, running_bridge

KEY_ENV = "BRIDGE_TEST_FEISHU_FILES_OPENAI_KEY"
API_KEY = "sk-feishu-files"
PICTURE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
REPORT = b"%PDF-1.7\n" + b"quarterly numbers\n" * 200
MESSAGE = "om_files0000000000000000000000001"


@asynccontextmanager
async def feishu_channel(
    database_url: str, **fake_options: Any
) -> AsyncIterator[tuple[FakeFeishu, FeishuChannel, RunningBridge]]:
    async with FakeFeishu(encrypt_key=DEFAULT_ENCRYPT_KEY, **fake_options) as fake:
        settings = make_settings(
            database_url, agents=[{"slug": "assistant", "feishu": feishu_section(fake)}]
        )
        async with running_bridge(settings) as bridge:
            channel = bridge.app[CHANNELS].get("feishu", "assistant")
            assert isinstance(channel, FeishuChannel)
            assert isinstance(channel, FileFetchingChannel)
            yield fake, channel, bridge


def _source(file_key: str, kind: str = "image", message_id: str = MESSAGE) -> dict[str, str]:
    return {"message_id": message_id, "file_key": file_key, "type": kind}


async def test_images_and_files_come_with_their_type_and_the_tenant_token(
    database_url: str,
) -> None:
    async with feishu_channel(database_url) as (fake, channel, _bridge):
        fake.add_resource(MESSAGE, "img_v3_a", PICTURE, "image/png")
        fake.add_resource(MESSAGE, "file_v3_b", REPORT, "application/pdf", kind="file")
        image = await channel.fetch_file(_source("img_v3_a"), max_bytes=10_000)
        document = await channel.fetch_file(_source("file_v3_b", "file"), max_bytes=10_000)
        assert (image.data, image.content_type) == (PICTURE, "image/png")
        assert (document.data, document.content_type) == (REPORT, "application/pdf")
        downloads = fake.resource_downloads()
        assert [(r.path, r.query, r.status) for r in downloads] == [
            (f"/open-apis/im/v1/messages/{MESSAGE}/resources/img_v3_a", {"type": "image"}, 200),
            (f"/open-apis/im/v1/messages/{MESSAGE}/resources/file_v3_b", {"type": "file"}, 200),
        ]
        for record in downloads:
            scheme, _, token = record.headers["Authorization"].partition(" ")
            assert scheme == "Bearer" and fake.token_valid(token)


async def test_a_key_of_another_message_or_a_card_is_refused_for_good(
    database_url: str,
) -> None:
    async with feishu_channel(database_url) as (fake, channel, _bridge):
        fake.add_resource(MESSAGE, "img_v3_a", PICTURE, "image/png")
        other = "om_files0000000000000000000000002"
        with pytest.raises(FileFetchError) as wrong_pair:
            await channel.fetch_file(_source("img_v3_a", message_id=other), max_bytes=10_000)
        assert wrong_pair.value.permanent
        assert "234003" in str(wrong_pair.value) and "not in that message" in str(wrong_pair.value)
        with pytest.raises(FileFetchError) as wrong_type:  # an image asked for as a file
            await channel.fetch_file(_source("img_v3_a", "file"), max_bytes=10_000)
        assert wrong_type.value.permanent and "234001" in str(wrong_type.value)
        card = fake.message_event(text="x", message_id=other)
        card["event"]["message"]["message_type"] = "interactive"
        fake.remember(card)
        with pytest.raises(FileFetchError) as unsupported:
            await channel.fetch_file(_source("img_v3_a", message_id=other), max_bytes=10_000)
        assert unsupported.value.permanent and "234043" in str(unsupported.value)
        for broken in ({}, {**_source("k"), "type": "video"}, {**_source("k"), "file_key": 7}):
            with pytest.raises(FileFetchError) as bad_source:
                await channel.fetch_file(broken, max_bytes=10_000)
            assert bad_source.value.permanent
        assert len(fake.resource_downloads()) == 3  # a bad source asks Feishu nothing


async def test_a_file_over_the_limit_is_refused_for_good(database_url: str) -> None:
    async with feishu_channel(database_url) as (fake, channel, _bridge):
        fake.add_resource(MESSAGE, "file_big", REPORT, "application/pdf", kind="file")
        with pytest.raises(FileFetchError) as too_big:
            await channel.fetch_file(_source("file_big", "file"), max_bytes=len(REPORT) - 1)
        assert too_big.value.permanent and f"{len(REPORT) - 1} bytes" in str(too_big.value)
        exact = await channel.fetch_file(_source("file_big", "file"), max_bytes=len(REPORT))
        assert exact.data == REPORT


async def test_a_server_error_is_transient_then_the_file_comes(database_url: str) -> None:
    async with feishu_channel(database_url) as (fake, channel, _bridge):
        fake.add_resource(MESSAGE, "img_v3_a", PICTURE, "image/png")
        fake.fail_next(1, 500, method="resource.get")
        with pytest.raises(FileFetchError) as failed:
            await channel.fetch_file(_source("img_v3_a"), max_bytes=10_000)
        assert not failed.value.permanent and "500" in str(failed.value)
        fetched = await channel.fetch_file(_source("img_v3_a"), max_bytes=10_000)
        assert fetched.data == PICTURE
        assert [r.status for r in fake.resource_downloads()] == [500, 200]


async def test_an_expired_tenant_token_is_fetched_again(database_url: str) -> None:
    async with feishu_channel(database_url) as (fake, channel, _bridge):
        fake.add_resource(MESSAGE, "img_v3_a", PICTURE, "image/png")
        assert (await channel.fetch_file(_source("img_v3_a"), max_bytes=10_000)).data == PICTURE
        issued = fake.tokens_issued
        fake.expire_all_tokens()
        assert (await channel.fetch_file(_source("img_v3_a"), max_bytes=10_000)).data == PICTURE
        assert fake.tokens_issued == issued + 1
        refused, accepted = fake.resource_downloads()[-2:]
        assert (refused.status, accepted.status) == (400, 200)
        assert refused.headers["Authorization"] != accepted.headers["Authorization"]


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAIServer]:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    async with FakeOpenAIServer(api_key=API_KEY, expected_model="gpt-test") as server:
        yield server


async def test_a_p2p_image_reaches_an_openai_agent_as_an_image_part(
    database_url: str, tmp_path: Path, model: FakeOpenAIServer
) -> None:
    model.add_reply("a picture of bytes")
    async with FakeFeishu(encrypt_key=DEFAULT_ENCRYPT_KEY) as fake:
        fake.add_user()
        agent = {
            "slug": "assistant",
            "backend": "openai",
            "openai": {"base_url": model.url, "model": "gpt-test", "api_key_env": KEY_ENV},
            "feishu": feishu_section(fake),
        }
        settings = make_settings(database_url, agents=[agent]).model_copy(
            update={
                "storage": StorageSettings(path=str(tmp_path / "files")),
                "files": FilesSettings(),
            }
        )
        async with running_bridge(settings) as bridge:
            event = fake.message_event(image_key="img_v3_e2e")
            message_id = event["event"]["message"]["message_id"]
            fake.add_resource(message_id, "img_v3_e2e", PICTURE, "image/png")
            assert (await fake.push(bridge.url + "/feishu/assistant/events", event)).status == 200
            sent = await fake.next_sent(timeout=10)
            assert sent.text == "a picture of bytes"
            [user] = [m for m in await bridge.messages() if m.role == "user"]
            await bridge.reply_to(user.id, state=MessageState.DELIVERED)
    (record,) = model.answers
    _text, images = user_parts(record)
    assert images == [("image/png", PICTURE)]
    parts = [m for m in record.json["messages"] if m["role"] == "user"][-1]["content"]
    expected = "data:image/png;base64," + base64.b64encode(PICTURE).decode()
    assert {"type": "image_url", "image_url": {"url": expected}} in parts
    [download] = fake.resource_downloads()
    assert download.path == f"/open-apis/im/v1/messages/{message_id}/resources/img_v3_e2e"
