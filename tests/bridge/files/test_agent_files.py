"""Agents receive the files of the messages they answer: the openai backend as image parts
and inline text, a webhook agent as signed links it fetches without a token. Real bridge on
a port known before it starts (so ``http.public_url`` is its own), real databases, the local
file store in the test's directory, the strict fakes of OpenAI and of a webhook receiver."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import event

from bridge.appkeys import AGENTS, ENGINE, FILE_LINKS, FILES
from bridge.files.links import FileLinks
from bridge.files.store import content_key
from bridge.ports.events import Attachment, InboundMessage, Sender
from bridge.settings import Settings
from bridge.store.models import MessageState
from tests.fakes.openai_server import FakeOpenAIServer, user_parts
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.api import ApiClient, api_clients
from tests.support.harness import RunningBridge, make_settings
from tests.support.signed_links import bridge_with_links

KEY_ENV = "BRIDGE_TEST_FILES_OPENAI_KEY"
API_KEY = "sk-files-test"
SECRET = "files-webhook-secret"
NOTES = "first line\nsecond line with ``` inside\n"


def png() -> bytes:
    """Small, but the bytes of a real PNG header: what matters is that they arrive exact."""
    return b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAIServer]:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    async with FakeOpenAIServer(api_key=API_KEY, expected_model="gpt-test") as server:
        yield server


@pytest.fixture
async def receiver() -> AsyncIterator[FakeWebhookAgent]:
    async with FakeWebhookAgent(secret=SECRET) as fake:
        yield fake


def openai_agent(model: FakeOpenAIServer, **extra: Any) -> dict[str, Any]:
    return {
        "slug": "assistant",
        "backend": "openai",
        "openai": {"base_url": model.url, "model": "gpt-test", "api_key_env": KEY_ENV},
        "inmemory": {},
        **extra,
    }


def webhook_agent(receiver: FakeWebhookAgent) -> dict[str, Any]:
    return {
        "slug": "assistant",
        "backend": "webhook",
        "webhook": {"url": receiver.url, "secret": SECRET},
        "inmemory": {},
    }


@asynccontextmanager
async def bridge_at_known_port(
    settings: Settings, store: Path
) -> AsyncIterator[tuple[RunningBridge, ApiClient]]:
    """The bridge whose ``http.public_url`` names it, and a signed-in user."""
    async with (
        bridge_with_links(settings, store) as bridge,
        api_clients(bridge.url, bridge.sessions, "alice") as users,
    ):
        yield bridge, users["alice"]


def form(text: str, *files: tuple[str, bytes, str]) -> aiohttp.FormData:
    data = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
    data.add_field("text", text)
    for name, content, content_type in files:
        data.add_field("file", content, filename=name, content_type=content_type)
    return data


async def send_files(client: ApiClient, text: str, *files: tuple[str, bytes, str]) -> Any:
    """A new web session and a message with ``files`` in it, posted as a multipart form."""
    session = await client.new_session()
    return (
        await client.call("POST", f"/sessions/{session['id']}/messages", data=form(text, *files))
    ).ok(202)


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, await response.read(), response.headers


async def test_an_openai_agent_sees_the_image_as_a_part_and_the_text_file_inline(
    database_url: str, tmp_path: Path, model: FakeOpenAIServer
) -> None:
    model.add_reply("a red square and two lines")
    picture, archive = png(), b"PK\x03\x04 not for models"
    settings = make_settings(database_url, agents=[openai_agent(model)])
    async with bridge_at_known_port(settings, tmp_path / "files") as (bridge, alice):
        sent = await send_files(
            alice,
            "what is in these?",
            ("square.png", picture, "image/png"),
            ("notes.txt", NOTES.encode(), "text/plain; charset=utf-8"),
            ("bundle.zip", archive, "application/zip"),
        )
        reply = await bridge.reply_to(sent["id"], state=MessageState.DELIVERED)
    assert reply.content == "a red square and two lines"
    (record,) = model.answers
    assert record.status == 200
    text, images = user_parts(record)
    assert images == [("image/png", picture)]
    content = record.json["messages"][-1]["content"]
    assert content[1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(picture).decode()},
    }
    # The text file's fence is longer than the backticks inside it.
    assert text == (
        "what is in these?\n\n"
        f"notes.txt:\n````\n{NOTES}\n````\n\n"
        f"[attachment: bundle.zip (application/zip, {len(archive)} bytes) not shown: its type "
        "is not sent to the model]"
    )


async def test_file_text_shares_the_history_budget_and_a_missing_object_is_only_told(
    database_url: str, tmp_path: Path, model: FakeOpenAIServer
) -> None:
    """A file over the budget is cut with a note (and the history makes room: none of it is
    sent); a stored file whose object is gone is named with "content missing"; the answer
    comes either way."""
    model.add_reply("first answer", "second answer")
    long_text = "x" * 30 + "y" * 30
    settings = make_settings(database_url, agents=[openai_agent(model, history_chars=40)])
    async with bridge_at_known_port(settings, tmp_path / "files") as (bridge, _alice):
        first = await bridge.memory().receive("hello", message_id="plain")
        await bridge.reply_to(first.message_id, state=MessageState.DELIVERED)
        agent_id = bridge.app[AGENTS].get("assistant").id
        key = content_key(agent_id, hashlib.sha256(long_text.encode()).hexdigest())
        missing = content_key(agent_id, hashlib.sha256(b"never stored").hexdigest())
        await bridge.app[FILES].put(key, long_text.encode())
        result = await bridge.pipeline.ingest(
            InboundMessage(
                channel="inmemory",
                agent_slug="assistant",
                external_conv_id="inmemory:conv-1",
                external_message_id="with-files",
                sender=Sender(external_id="user-1"),
                text="read these",
                attachments=(
                    _stored("long.txt", long_text.encode(), key),
                    _stored("gone.txt", b"never stored", missing),
                    Attachment(name="later.pdf", mime_type="application/pdf", size=9),
                ),
                reply_target={"conversation": "inmemory:conv-1"},
            )
        )
        reply = await bridge.reply_to(result.message_id, state=MessageState.DELIVERED)
    assert reply.content == "second answer"
    record = model.answers[1]
    messages = record.json["messages"]
    # "hello" and "first answer" (17 characters) no longer fit beside the 40 of file text.
    assert [m["role"] for m in messages] == ["user"]
    assert messages[0]["content"] == (
        "read these\n\n"
        f"long.txt:\n```\n{'x' * 30}{'y' * 10}\n```\n"
        "[long.txt cut: the first 40 of 60 characters are shown]\n\n"
        "[attachment: gone.txt (text/plain, 12 bytes) not shown: content missing]\n\n"
        "[attachment: later.pdf (application/pdf, 9 bytes) not shown: the platform gave no way to "
        "fetch the file]"
    )


def _stored(name: str, content: bytes, key: str) -> Attachment:
    return Attachment(
        name=name,
        mime_type="text/plain",
        size=len(content),
        sha256=key.rsplit("/", 1)[1],
        storage_key=key,
        state="stored",
    )


async def test_a_webhook_agent_gets_signed_links_that_open_only_as_signed(
    database_url: str, tmp_path: Path, receiver: FakeWebhookAgent
) -> None:
    receiver.add_reply("got your files")
    notes, other = NOTES.encode(), b"<html><script>alert(1)</script></html>"
    settings = make_settings(database_url, agents=[webhook_agent(receiver)])
    async with bridge_at_known_port(settings, tmp_path / "files") as (bridge, alice):
        sent = await send_files(
            alice,
            "two files",
            ("notes.txt", notes, "text/plain"),
            ("page.html", other, "text/html"),
        )
        reply = await bridge.reply_to(sent["id"], state=MessageState.DELIVERED)
        assert reply.content == "got your files"
        (record,) = receiver.requests
        assert record.error is None
        files = record.json["attachments"]
        ids = [a["id"] for a in sent["attachments"]]
        assert [{k: v for k, v in a.items() if k != "url"} for a in files] == [
            {
                "id": ids[0],
                "name": "notes.txt",
                "content_type": "text/plain",
                "size": len(notes),
                "reason": None,
            },
            {
                "id": ids[1],
                "name": "page.html",
                "content_type": "text/html",
                "size": len(other),
                "reason": None,
            },
        ]
        url = files[0]["url"]
        assert url.startswith(f"{bridge.url}/api/v1/files/{ids[0]}/signed?expires=")

        # No token needed: the signature is the credential; the exact bytes, safe headers.
        status, body, headers = await get(url)
        assert (status, body) == (200, notes)
        assert headers["Content-Disposition"].startswith('attachment; filename="notes.txt"')
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "private, no-store"
        assert headers["Content-Security-Policy"].startswith("sandbox")
        status, body, headers = await get(files[1]["url"])
        assert (status, body) == (200, other)
        assert headers["Content-Type"] == "application/octet-stream"  # HTML is never served

        # One character of the signature changed: refused, and nothing else said.
        sig = url[-64:]
        tampered = url[:-64] + ("0" if sig[0] != "0" else "1") + sig[1:]
        status, body, _ = await get(tampered)
        assert status == 403
        assert notes not in body
        # The first file's expiry and signature on the second file's id: refused.
        status, _, _ = await get(url.replace(f"/files/{ids[0]}/", f"/files/{ids[1]}/"))
        assert status == 403
        # The expiry moved later without the key: refused.
        expires = int(url.split("expires=")[1].split("&")[0])
        status, _, _ = await get(url.replace(f"expires={expires}", f"expires={expires + 3600}"))
        assert status == 403
        # A genuine link whose time has passed: gone.
        links: FileLinks = bridge.app[FILE_LINKS]
        expired = bridge.url + links.path(ids[0], expires=int(time.time()) - 5)
        status, body, _ = await get(expired)
        assert status == 410
        assert notes not in body
        status, _, _ = await get(f"{bridge.url}/api/v1/files/{ids[0]}/signed")
        assert status == 403

        # The plain download route still wants a token.
        plain = f"{bridge.url}/api/v1/files/{ids[0]}"
        status, _, _ = await get(plain)
        assert status == 401
        status, body, _ = await get(plain, {"Authorization": f"Bearer {alice.token}"})
        assert (status, body) == (200, notes)


async def test_a_batch_without_files_never_reads_the_attachments_table(
    database_url: str, tmp_path: Path, receiver: FakeWebhookAgent
) -> None:
    """The claimed rows say whether a message lists files: a plain message costs no query
    of ``attachments``, and its webhook body has no ``attachments`` key."""
    settings = make_settings(database_url, agents=[webhook_agent(receiver)])
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    async with bridge_at_known_port(settings, tmp_path / "files") as (bridge, _alice):
        engine = bridge.app[ENGINE].sync_engine
        event.listen(engine, "before_cursor_execute", seen)
        try:
            first = await bridge.memory().receive("no files here", message_id="plain")
            await bridge.reply_to(first.message_id, state=MessageState.DELIVERED)
        finally:
            event.remove(engine, "before_cursor_execute", seen)
    assert any("chat_messages" in s for s in statements)
    assert not [s for s in statements if "FROM attachments" in s]
    (record,) = receiver.requests
    assert record.error is None
    assert "attachments" not in record.json
