"""Fetching the files of Slack messages: the real adapter against the strict fake's file host,
then end to end (a signed event through slack-bolt, the answer step's fetch, the agent) on
SQLite and PostgreSQL.

The bot token must reach Slack's own hosts only; Slack's HTML login page (a missing token or
scope) must never be taken for the file.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge.files.settings import FilesSettings, StorageSettings
from bridge.ports.contract import ChannelContext
from bridge.ports.errors import FileFetchError
from bridge.ports.events import InboundMessage
from bridge.settings import AgentSettings
from bridge.store.models import MessageState
from channels.slack.adapter import SlackChannel
from channels.slack.files import FILE_ORIGINS, LOGIN_PAGE, allowed_origins
from channels.slack.inbound import BotIdentity, Rules, classify
from channels.slack.settings import SlackChannelSettings
from tests.channels.contract_drivers import SLACK_BOT_TOKEN as BOT_TOKEN
from tests.channels.contract_drivers import SLACK_SIGNING_SECRET as SECRET
from tests.channels.contract_drivers import slack_section
from tests.fakes import slack
from tests.fakes.openai_server import FakeOpenAIServer, user_parts
from tests.fakes.slack import FILES_METHOD, FakeSlack
from tests.support.api import api_clients
from tests.support.harness import make_settings, running_bridge

KEY_ENV = "BRIDGE_TEST_SLACK_FILES_OPENAI_KEY"
API_KEY = "sk-slack-files"
DM = "D0DMFILES1"
HUMAN = "U0HUMANF01"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
MAX = 1024 * 1024


async def _never(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("no event is dispatched in these tests")


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=BOT_TOKEN, signing_secret=SECRET) as running:
        yield running


@pytest.fixture
async def channel(fake: FakeSlack) -> AsyncIterator[SlackChannel]:
    settings = SlackChannelSettings.model_validate(
        {"bot_token": BOT_TOKEN, "signing_secret": SECRET, "api_base_url": fake.api_url}
    )
    adapter = SlackChannel(
        context=ChannelContext(
            agent=AgentSettings(slug="assistant"), settings=settings, dispatch=_never
        )
    )
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


class Spy:
    """A web server on another loopback address that records whatever reaches it."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        return web.Response(body=PNG, content_type="image/png")


@pytest.fixture
async def spy() -> AsyncIterator[Spy]:
    recorder = Spy()
    app = web.Application()
    app.router.add_get("/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.2", 0).start()
    recorder.url = f"http://127.0.0.2:{runner.addresses[0][1]}"
    try:
        yield recorder
    finally:
        await runner.cleanup()


def source_of(document: dict[str, Any]) -> dict[str, object]:
    return {"file_id": document["id"], "url": document["url_private_download"]}


async def test_the_file_comes_back_with_its_type_and_the_token_went_to_slack_only(
    fake: FakeSlack, channel: SlackChannel
) -> None:
    document = fake.add_file(name="cat.png", data=PNG, mimetype="image/png")
    fetched = await channel.fetch_file(source_of(document), max_bytes=MAX)
    assert (fetched.data, fetched.content_type) == (PNG, "image/png")
    [request] = fake.file_requests
    assert request.headers["Authorization"] == f"Bearer {BOT_TOKEN}"
    assert request.path == f"/files-pri/{fake.team_id}-{document['id']}/download/cat.png"


@pytest.mark.parametrize(
    "where",
    [
        "spy",  # another loopback host that would answer
        "https://evil.example/files-pri/T0TEAM0001-F1/download/cat.png",
        "https://files.slack.com.evil.example/files-pri/T0TEAM0001-F1/download/cat.png",
        "http://files.slack.com/files-pri/T0TEAM0001-F1/download/cat.png",  # not https
        "localhost",  # the fake itself, under another name
        "ftp://files.slack.com/cat.png",
        "/files-pri/T0TEAM0001-F1/download/cat.png",
    ],
)
async def test_a_file_off_slack_is_refused_before_any_request(
    fake: FakeSlack, channel: SlackChannel, spy: Spy, where: str
) -> None:
    document = fake.add_file(name="cat.png", data=PNG, mimetype="image/png")
    path = f"/files-pri/{fake.team_id}-{document['id']}/download/cat.png"
    port = document["url_private_download"].split(":")[2].split("/")[0]
    url = {"spy": spy.url + path, "localhost": f"http://localhost:{port}{path}"}.get(where, where)
    with pytest.raises(FileFetchError) as refused:
        await channel.fetch_file({"file_id": document["id"], "url": url}, max_bytes=MAX)
    assert refused.value.permanent
    assert BOT_TOKEN not in str(refused.value)
    assert fake.file_requests == [] and spy.requests == []


async def test_userinfo_in_a_slack_url_is_refused(fake: FakeSlack, channel: SlackChannel) -> None:
    document = fake.add_file(name="cat.png", data=PNG, mimetype="image/png")
    url = document["url_private_download"].replace("http://", "http://someone@")
    with pytest.raises(FileFetchError) as refused:
        await channel.fetch_file({"url": url}, max_bytes=MAX)
    assert refused.value.permanent and fake.file_requests == []


@pytest.mark.parametrize("broken", ["scope", "token"])
async def test_the_login_page_is_a_permanent_refusal_never_the_file(
    fake: FakeSlack, channel: SlackChannel, broken: str
) -> None:
    document = fake.add_file(name="cat.png", data=PNG, mimetype="image/png")
    if broken == "scope":
        fake.scopes = fake.scopes.replace(",files:read", "")
    else:
        fake.bot_token = "xoxb-rotated"  # the channel's token is revoked
    with pytest.raises(FileFetchError) as refused:
        await channel.fetch_file(source_of(document), max_bytes=MAX)
    assert refused.value.permanent
    assert str(refused.value) == LOGIN_PAGE
    assert [(r.status, r.error) for r in fake.file_requests] == [(200, "login_page")]


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_file_over_max_bytes_is_refused(
    fake: FakeSlack, channel: SlackChannel, chunked: bool
) -> None:
    big = bytes(200 * 1024)
    document = fake.add_file(name="big.bin", data=big, chunked=chunked)
    with pytest.raises(FileFetchError) as refused:
        await channel.fetch_file(source_of(document), max_bytes=len(big) - 1)
    assert refused.value.permanent and "larger than" in str(refused.value)
    exact = await channel.fetch_file(source_of(document), max_bytes=len(big))
    assert exact.data == big


async def test_a_server_error_is_transient_and_the_retry_gets_the_file(
    fake: FakeSlack, channel: SlackChannel
) -> None:
    document = fake.add_file(name="cat.png", data=PNG, mimetype="image/png")
    fake.fail_next(1, 500, method=FILES_METHOD)
    fake.rate_limit_next(1, retry_after=3, method=FILES_METHOD)
    for _ in range(2):
        with pytest.raises(FileFetchError) as failed:
            await channel.fetch_file(source_of(document), max_bytes=MAX)
        assert not failed.value.permanent
    assert "Retry-After 3" in str(failed.value)
    fetched = await channel.fetch_file(source_of(document), max_bytes=MAX)
    assert fetched.data == PNG
    assert [r.status for r in fake.file_requests] == [500, 429, 200]


async def test_an_unknown_file_is_gone_for_good(fake: FakeSlack, channel: SlackChannel) -> None:
    document = fake.add_file(name="cat.png", data=PNG, mimetype="image/png")
    url = document["url_private_download"].replace(document["id"], "F0GONE0000")
    with pytest.raises(FileFetchError) as refused:
        await channel.fetch_file({"url": url}, max_bytes=MAX)
    assert refused.value.permanent and "404" in str(refused.value)


async def test_a_dropped_connection_is_transient(fake: FakeSlack, channel: SlackChannel) -> None:
    document = fake.add_file(name="cat.png", data=PNG, mimetype="image/png")
    # Two: aiohttp itself retries a GET once when a kept-alive connection is cut.
    fake.drop_next(2, method=FILES_METHOD)
    with pytest.raises(FileFetchError) as failed:
        await channel.fetch_file(source_of(document), max_bytes=MAX)
    assert not failed.value.permanent and "could not reach Slack" in str(failed.value)
    assert BOT_TOKEN not in str(failed.value)


def test_allowed_origins_are_slack_s_file_host_and_the_api_s() -> None:
    assert FILE_ORIGINS == ("https://files.slack.com",)
    assert allowed_origins("https://slack.com/api/") == {
        "https://files.slack.com",
        "https://slack.com",
    }
    assert allowed_origins("http://127.0.0.1:8123/api/") == {
        "https://files.slack.com",
        "http://127.0.0.1:8123",
    }


# --- what inbound records for the fetch --------------------------------------------------------

BOT = BotIdentity(user_id="U0BOT00001", bot_id="B0BOT00001", team_id="T1")
RULES = Rules(agent_slug="assistant", require_mention=True, thread_replies=True)
FILE = {
    "id": "F0FILE0001",
    "name": "cat.png",
    "mimetype": "image/png",
    "size": 2048,
    "url_private": "https://files.slack.com/files-pri/T1-F0FILE0001/cat.png",
    "url_private_download": "https://files.slack.com/files-pri/T1-F0FILE0001/download/cat.png",
}


def classified(files: list[dict[str, Any]]) -> InboundMessage:
    event = slack.message(channel="D1", user="U1", text="look", files=files)["event"]
    message = classify(event_type="message", event=event, team="T1", bot=BOT, rules=RULES)
    assert isinstance(message, InboundMessage)
    return message


def test_a_shared_file_is_pending_with_its_download_url_as_source() -> None:
    [attachment] = classified([FILE]).attachments
    assert attachment.state == "pending"
    assert attachment.url == FILE["url_private"]
    assert dict(attachment.source) == {
        "file_id": "F0FILE0001",
        "url": FILE["url_private_download"],
    }


def test_a_partial_slack_connect_file_is_refused_with_a_reason() -> None:
    partial = {"id": "F0FILE0002", "file_access": "check_file_info", "name": "x.pdf"}
    [attachment] = classified([partial]).attachments
    assert attachment.state == "refused"
    assert attachment.reason is not None and "check_file_info" in attachment.reason


# --- end to end ----------------------------------------------------------------------------------


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAIServer]:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    async with FakeOpenAIServer(api_key=API_KEY, expected_model="gpt-test") as server:
        yield server


def _settings(database_url: str, tmp_path: Path, fake: FakeSlack, model: FakeOpenAIServer) -> Any:
    agent = {
        "slug": "assistant",
        "backend": "openai",
        "openai": {"base_url": model.url, "model": "gpt-test", "api_key_env": KEY_ENV},
        "slack": slack_section(fake, streaming="off", status_reactions=False),
    }
    return make_settings(database_url, agents=[agent]).model_copy(
        update={
            "storage": StorageSettings(path=str(tmp_path / "files")),
            "files": FilesSettings(),
        }
    )


async def test_a_dm_image_reaches_an_openai_agent_as_an_image_part(
    database_url: str, tmp_path: Path, fake: FakeSlack, model: FakeOpenAIServer
) -> None:
    model.add_reply("a picture of bytes")
    fake.add_channel(DM, is_im=True, user=HUMAN)
    fake.add_user(HUMAN, "ada", "Ada")
    document = fake.add_file(name="cat.png", data=PNG, mimetype="image/png", user=HUMAN)
    async with running_bridge(_settings(database_url, tmp_path, fake, model)) as bridge:
        event = slack.message(channel=DM, user=HUMAN, text="what is this?", files=[document])
        pushed = await fake.push_event(f"{bridge.url}/slack/assistant/events", event)
        assert pushed.status == 200
        post = await fake.next_post(timeout=10)
        assert post["text"] == "a picture of bytes"
        [user] = [m for m in await bridge.messages() if m.role == "user"]
        await bridge.reply_to(user.id, state=MessageState.DELIVERED)
    [record] = model.answers
    text, images = user_parts(record)
    assert "what is this?" in text
    assert images == [("image/png", PNG)]
    last = [m for m in record.json["messages"] if m["role"] == "user"][-1]["content"]
    expected = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert {"type": "image_url", "image_url": {"url": expected}} in last
    [download] = fake.file_requests
    assert download.headers["Authorization"] == f"Bearer {BOT_TOKEN}"


async def test_an_off_slack_file_is_refused_with_its_reason_in_the_api(
    database_url: str, tmp_path: Path, fake: FakeSlack, model: FakeOpenAIServer, spy: Spy
) -> None:
    model.add_reply("I cannot see it")
    fake.add_channel(DM, is_im=True, user=HUMAN)
    fake.add_user(HUMAN, "ada", "Ada")
    document = fake.add_file(name="cat.png", data=PNG, mimetype="image/png", user=HUMAN)
    path = document["url_private_download"].split("/", 3)[3]
    external = {
        **document,
        "is_external": True,
        "external_type": "gdrive",
        "url_private": f"{spy.url}/{path}",
        "url_private_download": f"{spy.url}/{path}",
    }
    async with running_bridge(_settings(database_url, tmp_path, fake, model)) as bridge:
        event = slack.message(channel=DM, user=HUMAN, text="see attached", files=[external])
        assert (await fake.push_event(f"{bridge.url}/slack/assistant/events", event)).status == 200
        assert (await fake.next_post(timeout=10))["text"] == "I cannot see it"
        [user] = [m for m in await bridge.messages() if m.role == "user"]
        await bridge.reply_to(user.id, state=MessageState.DELIVERED)
        async with api_clients(bridge.url, bridge.sessions, "root", admin="root") as users:
            listed = (await users["root"].get(f"/sessions/{user.session_id}/messages")).ok()
        [question] = [m for m in listed["items"] if m["id"] == user.id]
        [attachment] = question["attachments"]
        assert attachment["state"] == "refused"
        assert "127.0.0.2" in attachment["reason"] and "not on Slack" in attachment["reason"]
    assert spy.requests == [] and fake.file_requests == []
    [record] = model.answers
    assert user_parts(record)[1] == []
