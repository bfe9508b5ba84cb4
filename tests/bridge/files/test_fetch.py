"""Platform files are fetched by the answer step through their channel: stored, retried,
refused or failed with the reason kept, and the text answered whatever happened. The real
bridge on both databases, the in-memory channel playing the platform, the local file store in
the test's directory, the strict OpenAI fake where the agent's view matters."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from bridge.appkeys import AGENTS, ENGINE, FILES, METRICS
from bridge.files.settings import FilesSettings, StorageSettings
from bridge.files.store import content_key
from bridge.ports.errors import FileFetchError
from bridge.ports.events import Attachment, InboundMessage, Sender
from bridge.settings import Settings
from bridge.store.models import ATTACHMENTS, MessageState
from channels.inmemory import FILE_HOST, MemoryChannel
from tests.bridge.files.test_agent_files import openai_agent, png
from tests.fakes.openai_server import FakeOpenAIServer, user_parts
from tests.support.harness import RunningBridge, make_settings, running_bridge

KEY_ENV = "BRIDGE_TEST_FILES_OPENAI_KEY"
API_KEY = "sk-files-test"
ATTACHMENTS_QUERY = re.compile(r"\b(FROM|UPDATE|INTO)\s+attachments\b", re.IGNORECASE)


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAIServer]:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    async with FakeOpenAIServer(api_key=API_KEY, expected_model="gpt-test") as server:
        yield server


@asynccontextmanager
async def files_bridge(
    settings: Settings, store: Path, *, max_bytes: int = 1_000_000
) -> AsyncIterator[tuple[RunningBridge, MemoryChannel]]:
    settings = settings.model_copy(
        update={
            "storage": StorageSettings(path=str(store)),
            "files": FilesSettings(max_bytes=max_bytes, download_timeout_seconds=5),
        }
    )
    async with running_bridge(settings) as bridge:
        yield bridge, bridge.memory()


def platform_file(name: str, *, mime_type: str | None = None, host: str = FILE_HOST) -> Attachment:
    """A file as a platform announces it: metadata, a URL, and the source to fetch it by."""
    return Attachment(
        name=name,
        mime_type=mime_type,
        url=f"https://{host}/{name}",
        source={"inmemory": name},
    )


async def rows_of(bridge: RunningBridge, message_id: int) -> list[Any]:
    async with bridge.sessions() as db:
        return list(
            await db.execute(
                select(ATTACHMENTS)
                .where(ATTACHMENTS.c.message_id == message_id)
                .order_by(ATTACHMENTS.c.position)
            )
        )


def stored_objects(store: Path) -> list[Path]:
    return [path for path in store.rglob("*") if path.is_file()]


def metric(bridge: RunningBridge, line: str) -> bool:
    return line in bridge.app[METRICS].render().decode().splitlines()


async def test_a_platform_image_reaches_an_openai_agent_as_an_image_part(
    database_url: str, tmp_path: Path, model: FakeOpenAIServer
) -> None:
    model.add_reply("a picture of a square")
    picture = png()
    settings = make_settings(database_url, agents=[openai_agent(model)])
    async with files_bridge(settings, tmp_path / "files") as (bridge, memory):
        memory.files["square.png"] = (picture, "image/png")
        sent = await memory.receive(
            "what is this?",
            attachments=[platform_file("square.png", mime_type="application/octet-stream")],
        )
        reply = await bridge.reply_to(sent.message_id, state=MessageState.DELIVERED)
        (row,) = await rows_of(bridge, sent.message_id)
        agent_id = bridge.app[AGENTS].get("assistant").id
        sha256 = hashlib.sha256(picture).hexdigest()
        assert await bridge.app[FILES].get(content_key(agent_id, sha256)) == picture
        assert metric(bridge, 'bridge_files_fetched_total{channel="inmemory",outcome="stored"} 1.0')
        assert metric(
            bridge, f'bridge_files_fetched_bytes_total{{channel="inmemory"}} {len(picture)}.0'
        )
    assert reply.content == "a picture of a square"
    assert (row.state, row.sha256, row.size, row.attempts) == ("stored", sha256, len(picture), 1)
    assert row.content_type == "image/png"  # the served type replaces the vague one
    assert row.storage_key == content_key(agent_id, sha256)
    assert row.reason is None
    assert len(stored_objects(tmp_path / "files")) == 1
    (record,) = model.answers
    text, images = user_parts(record)
    assert text == "what is this?"
    assert images == [("image/png", picture)]
    assert memory.fetches == ["square.png"]


async def test_two_transient_failures_then_the_file_is_stored(
    database_url: str, tmp_path: Path
) -> None:
    notes = b"meeting notes"
    async with files_bridge(make_settings(database_url), tmp_path / "files") as (bridge, memory):
        memory.files["notes.txt"] = (notes, "text/plain")
        memory.fail_fetch(
            "notes.txt", FileFetchError("the platform is busy"), FileFetchError("timed out")
        )
        sent = await memory.receive(
            "see notes", attachments=[platform_file("notes.txt", mime_type="text/markdown")]
        )
        reply = await bridge.reply_to(sent.message_id, state=MessageState.DELIVERED)
        (row,) = await rows_of(bridge, sent.message_id)
    assert reply.content == "see notes"
    assert memory.fetches == ["notes.txt"] * 3
    assert (row.state, row.attempts, row.reason) == ("stored", 3, None)
    assert row.sha256 == hashlib.sha256(notes).hexdigest()
    assert row.content_type == "text/markdown"  # a precise listed type is kept
    assert len(stored_objects(tmp_path / "files")) == 1


async def test_a_file_that_keeps_failing_is_failed_with_its_reason_and_the_text_answered(
    database_url: str, tmp_path: Path, model: FakeOpenAIServer
) -> None:
    model.add_reply("I could not see the file")
    settings = make_settings(database_url, agents=[openai_agent(model)])
    async with files_bridge(settings, tmp_path / "files") as (bridge, memory):
        memory.files["report.pdf"] = (b"%PDF-1.7", "application/pdf")
        memory.fail_fetch("report.pdf", *[FileFetchError("the platform answered 503")] * 5)
        sent = await memory.receive(
            "summarise this", attachments=[platform_file("report.pdf", mime_type="application/pdf")]
        )
        reply = await bridge.reply_to(sent.message_id, state=MessageState.DELIVERED)
        (row,) = await rows_of(bridge, sent.message_id)
        assert metric(bridge, 'bridge_files_fetched_total{channel="inmemory",outcome="failed"} 1.0')
    assert reply.content == "I could not see the file"
    assert memory.fetches == ["report.pdf"] * 3
    assert (row.state, row.attempts, row.reason) == ("failed", 3, "the platform answered 503")
    assert (row.sha256, row.storage_key) == (None, None)
    assert stored_objects(tmp_path / "files") == []
    text, images = user_parts(model.answers[0])
    assert images == []
    assert text == (
        "summarise this\n\n[attachment: report.pdf (application/pdf, size unknown) not shown: "
        "the platform answered 503]"
    )


async def test_off_host_and_oversized_files_are_refused_and_max_bytes_is_honoured(
    database_url: str, tmp_path: Path
) -> None:
    """A source pointing off the platform is never fetched; a file over ``files.max_bytes``
    is refused at once (no retry); one of exactly ``max_bytes`` is stored."""
    settings = make_settings(database_url)
    async with files_bridge(settings, tmp_path / "files", max_bytes=1000) as (bridge, memory):
        memory.files["elsewhere.png"] = (png(), "image/png")
        memory.files["big.bin"] = (b"x" * 1001, "application/zip")
        memory.files["fits.bin"] = (b"y" * 1000, "application/zip")
        sent = await memory.receive(
            "three files",
            attachments=[
                platform_file("elsewhere.png", host="attacker.example"),
                platform_file("big.bin"),
                platform_file("fits.bin"),
            ],
        )
        reply = await bridge.reply_to(sent.message_id, state=MessageState.DELIVERED)
        off_host, big, fits = await rows_of(bridge, sent.message_id)
        assert metric(
            bridge, 'bridge_files_fetched_total{channel="inmemory",outcome="refused"} 2.0'
        )
    assert reply.content == "three files"
    assert "elsewhere.png" not in memory.fetches
    assert sorted(memory.fetches) == ["big.bin", "fits.bin"]
    assert (off_host.state, off_host.reason, off_host.attempts) == (
        "refused",
        "the file is not on the platform's own host",
        1,
    )
    assert (big.state, big.reason, big.attempts, big.storage_key) == (
        "refused",
        "larger than the 1000 bytes allowed",
        1,
        None,
    )
    assert (fits.state, fits.size, fits.content_type) == ("stored", 1000, "application/zip")
    assert len(stored_objects(tmp_path / "files")) == 1


async def test_a_message_without_files_runs_no_query_on_attachments(
    database_url: str, tmp_path: Path
) -> None:
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    async with files_bridge(make_settings(database_url), tmp_path / "files") as (bridge, memory):
        engine = bridge.app[ENGINE].sync_engine
        event.listen(engine, "before_cursor_execute", seen)
        try:
            plain = await memory.receive("no files here", message_id="plain")
            await bridge.reply_to(plain.message_id, state=MessageState.DELIVERED)
            plain_statements = list(statements)
            memory.files["a.txt"] = (b"a", "text/plain")
            with_file = await memory.receive(
                "one file", message_id="with", attachments=[platform_file("a.txt")]
            )
            await bridge.reply_to(with_file.message_id, state=MessageState.DELIVERED)
        finally:
            event.remove(engine, "before_cursor_execute", seen)
    assert any("chat_messages" in s for s in plain_statements)
    assert not [s for s in plain_statements if ATTACHMENTS_QUERY.search(s)]
    # The same watch sees the queries a message with a file does run.
    assert [s for s in statements if re.search(r"UPDATE\s+attachments", s, re.IGNORECASE)]


async def test_a_channel_that_cannot_fetch_files_fails_the_file_and_answers(
    database_url: str, tmp_path: Path
) -> None:
    """The web channel stores its uploads itself and has no ``fetch_file``: a pending file
    of a web message fails with that reason, and the text is answered."""
    async with files_bridge(make_settings(database_url), tmp_path / "files") as (bridge, _):
        result = await bridge.pipeline.ingest(
            InboundMessage(
                channel="web",
                agent_slug="assistant",
                external_conv_id=f"web:{uuid.uuid4()}",
                external_message_id="web-1",
                sender=Sender(external_id="user-1"),
                text="a file from nowhere",
                attachments=(Attachment(name="a.txt", source={"id": "1"}),),
            )
        )
        reply = await bridge.reply_to(result.message_id)
        (row,) = await rows_of(bridge, result.message_id)
    assert reply.content == "a file from nowhere"
    assert (row.state, row.reason) == ("failed", "the web channel cannot fetch files")
