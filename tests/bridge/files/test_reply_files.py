"""Agents reply with files, end to end on SQLite and PostgreSQL: a webhook agent's answer
carries ``attachments`` (base64, or a URL on its own origin fetched once), the answer step
stores them with the reply, the web page lists and serves them, and the inmemory channel
uploads them natively once (the upload recorded before it is shared, finished after a crash
instead of uploaded again). ``POST /agents/{agent}/send`` takes files too."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, select

from bridge.agents.webhook_files import NOT_OWN_ORIGIN
from bridge.appkeys import ENGINE
from bridge.ports.errors import DeliveryError
from bridge.store.models import ATTACHMENTS, ChatMessage, MessageState
from tests.bridge.files.web_files import attachment_rows, download, png, sha, stored_objects
from tests.fakes.webhook_agent import FakeWebhookAgent, inline_file
from tests.support.api import ApiClient
from tests.support.harness import (
    WEBHOOK_SECRET,
    RunningBridge,
    make_settings,
    webhook_agent_config,
)
from tests.support.shared_api import bridge_with_users

NOTES = b"line one\nline two\n"


@asynccontextmanager
async def reply_files_bridge(
    database_url: str, store: Path, **files: Any
) -> AsyncIterator[tuple[RunningBridge, FakeWebhookAgent, ApiClient]]:
    """The bridge with agent ``assistant`` answered by a fake webhook agent, the local file
    store in ``store`` and ``files`` settings; ``alice`` is an admin."""
    async with FakeWebhookAgent(secret=WEBHOOK_SECRET) as fake:
        settings = make_settings(
            database_url,
            agents=[webhook_agent_config(fake)],
            pipeline={"retry_base_seconds": 0.01, "retry_max_seconds": 0.05},
        )
        settings = settings.model_copy(
            update={
                "storage": settings.storage.model_copy(update={"path": str(store)}),
                "files": settings.files.model_copy(update=files),
            }
        )
        async with bridge_with_users(settings, "alice", admin="alice") as (bridge, users):
            yield bridge, fake, users["alice"]


async def reply_rows(bridge: RunningBridge, reply_id: int) -> list[Any]:
    return [row for row in await attachment_rows(bridge) if row.message_id == reply_id]


async def test_a_webhook_reply_with_files_is_shown_and_served_on_the_web_page(
    database_url: str, tmp_path: Path
) -> None:
    picture = png()
    async with reply_files_bridge(database_url, tmp_path / "files") as (bridge, fake, alice):
        fake.files["notes.txt"] = (NOTES, "text/plain")
        fake.add_reply(
            "Here you go",
            attachments=[
                inline_file("chart.png", picture, "image/png"),
                fake.linked_file("notes.txt"),
            ],
        )
        session = await alice.new_session()
        sent = await alice.say(session["id"], "the chart please")
        reply = await bridge.reply_to(sent["id"], state=MessageState.DELIVERED)
        history = (await alice.get(f"/sessions/{session['id']}/messages")).ok()["items"]
        shown = next(m for m in history if m["id"] == reply.id)
        assert shown["content"] == "Here you go"
        assert [
            (a["name"], a["content_type"], a["size"], a["sha256"], a["state"])
            for a in shown["attachments"]
        ] == [
            ("chart.png", "image/png", len(picture), sha(picture), "stored"),
            ("notes.txt", "text/plain", len(NOTES), sha(NOTES), "stored"),
        ]
        for listed, content in zip(shown["attachments"], (picture, NOTES), strict=True):
            status, body, _ = await download(alice, listed["url"])
            assert (status, body) == (200, content)
        assert fake.file_fetches == ["notes.txt"]
        assert [item["name"] for item in reply.attachments] == ["chart.png", "notes.txt"]


async def test_the_inmemory_channel_uploads_each_file_once_in_order_recorded_before_shared(
    database_url: str, tmp_path: Path
) -> None:
    picture = png()
    async with reply_files_bridge(database_url, tmp_path / "files") as (bridge, fake, _):
        fake.files["notes.txt"] = (NOTES, "text/plain")
        fake.add_reply(
            "Two files",
            attachments=[inline_file("a.png", picture, "image/png"), fake.linked_file("notes.txt")],
        )
        memory = bridge.memory()
        received = await memory.receive("send files")
        sent = await memory.next_sent()
        assert sent.text == "Two files"
        assert [(f.position, f.name, f.content_type, f.data) for f in sent.files] == [
            (0, "a.png", "image/png", picture),
            (1, "notes.txt", "text/plain", NOTES),
        ]
        assert [(f.name, f.data) for f in memory.shared[sent.message_id]] == [
            ("a.png", picture),
            ("notes.txt", NOTES),
        ]
        assert memory.file_log == [
            "upload:memory-file-1",
            "record:memory-file-1",
            "share:memory-file-1",
            "upload:memory-file-2",
            "record:memory-file-2",
            "share:memory-file-2",
        ]
        assert len(memory.attempts) == 1
        rows = await reply_rows(bridge, sent.message_id)
        assert [(r.position, r.platform_file_id) for r in rows] == [
            (0, "memory-file-1"),
            (1, "memory-file-2"),
        ]
        assert (await bridge.reply_to(received.message_id)).id == sent.message_id


async def test_a_url_on_another_origin_is_refused_and_never_fetched(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        reply_files_bridge(database_url, tmp_path / "files") as (bridge, fake, _),
        FakeWebhookAgent(secret=WEBHOOK_SECRET) as elsewhere,
    ):
        elsewhere.files["secret.txt"] = (b"not yours", "text/plain")
        fake.add_reply("See attached", attachments=[elsewhere.linked_file("secret.txt")])
        memory = bridge.memory()
        await memory.receive("hi")
        sent = await memory.next_sent()
        assert sent.files == ()
        assert (
            sent.text == "See attached\n[file: secret.txt (application/octet-stream, size unknown)]"
        )
        rows = await reply_rows(bridge, sent.message_id)
        assert [(r.name, r.state, r.reason, r.storage_key) for r in rows] == [
            ("secret.txt", "refused", NOT_OWN_ORIGIN, None)
        ]
        assert elsewhere.file_fetches == []


async def test_an_oversized_file_is_a_refused_row_and_the_text_is_delivered(
    database_url: str, tmp_path: Path
) -> None:
    store = tmp_path / "files"
    async with reply_files_bridge(database_url, store, max_bytes=100) as (bridge, fake, _):
        fake.add_reply("Too big", attachments=[inline_file("big.bin", b"x" * 500)])
        memory = bridge.memory()
        await memory.receive("hi")
        sent = await memory.next_sent()
        assert sent.text.startswith("Too big\n[file: big.bin")
        assert sent.files == ()
        rows = await reply_rows(bridge, sent.message_id)
        assert [(r.state, r.reason, r.size) for r in rows] == [
            ("refused", "larger than 100 bytes", 500)
        ]
        assert stored_objects(store) == []


async def test_a_streamed_answer_attaches_the_files_of_its_done_line(
    database_url: str, tmp_path: Path
) -> None:
    async with reply_files_bridge(database_url, tmp_path / "files") as (bridge, fake, _):
        fake.add_stream("Here ", "it is", attachments=[inline_file("n.txt", NOTES, "text/plain")])
        memory = bridge.memory()
        await memory.receive("stream it")
        sent = await memory.next_sent()
        assert sent.text == "Here it is"
        assert [(f.name, f.data) for f in sent.files] == [("n.txt", NOTES)]


async def test_a_retry_after_a_crash_between_record_and_share_finishes_the_upload(
    database_url: str, tmp_path: Path
) -> None:
    async with reply_files_bridge(database_url, tmp_path / "files") as (bridge, fake, _):
        fake.add_reply("File", attachments=[inline_file("n.txt", NOTES, "text/plain")])
        memory = bridge.memory()
        memory.fail_after_upload(DeliveryError("crashed while sharing", in_doubt=True))
        await memory.receive("hi")
        sent = await memory.next_sent()
        assert len(memory.attempts) == 2
        assert [u.platform_id for u in memory.uploads] == ["memory-file-1"]
        assert memory.file_log == [
            "upload:memory-file-1",
            "record:memory-file-1",
            "finish:memory-file-1",
            "share:memory-file-1",
        ]
        assert sent.files[0].platform_file_id == "memory-file-1"
        assert len(memory.sent) == 1


async def test_the_send_api_takes_files_and_refuses_oversized_ones(
    database_url: str, tmp_path: Path
) -> None:
    store = tmp_path / "files"
    async with reply_files_bridge(database_url, store, max_bytes=100) as (bridge, _, alice):
        target = {"channel": "inmemory", "external_conv_id": "inmemory:reports"}
        ok = {"name": "r.txt", "content_type": "text/plain", "data_base64": _b64(b"report")}
        posted = (
            await alice.post(
                "/agents/assistant/send", {**target, "text": "Weekly", "attachments": [ok]}
            )
        ).ok(202)
        assert [(a["name"], a["size"], a["state"]) for a in posted["attachments"]] == [
            ("r.txt", 6, "stored")
        ]
        sent = await bridge.memory().next_sent()
        assert (sent.message_id, sent.text) == (posted["id"], "Weekly")
        assert [(f.name, f.data) for f in sent.files] == [("r.txt", b"report")]
        objects = stored_objects(store)

        big = {"name": "big.bin", "data_base64": _b64(b"x" * 101)}
        refused = await alice.post(
            "/agents/assistant/send", {**target, "text": "Big", "attachments": [big]}
        )
        assert refused.status == 422
        assert refused.body["error"]["code"] == "file_too_large"
        assert "larger than 100 bytes" in refused.body["error"]["message"]
        async with bridge.sessions() as db:
            contents = (await db.execute(select(ChatMessage.content))).scalars().all()
        assert "Big" not in contents
        assert stored_objects(store) == objects
        assert len(bridge.memory().sent) == 1


async def test_delivery_queries_attachments_only_for_replies_with_files(
    database_url: str, tmp_path: Path
) -> None:
    async with reply_files_bridge(database_url, tmp_path / "files") as (bridge, fake, _):
        statements: list[str] = []
        touches = re.compile(r"\b(FROM|INTO|UPDATE)\s+attachments\b", re.IGNORECASE)

        def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if touches.search(statement):
                statements.append(statement)

        engine = bridge.app[ENGINE].sync_engine
        event.listen(engine, "before_cursor_execute", seen)
        try:
            memory = bridge.memory()
            fake.add_reply("plain")
            await memory.receive("no files")
            assert (await memory.next_sent()).files == ()
            assert statements == []
            fake.add_reply("with one", attachments=[inline_file("n.txt", NOTES)])
            await memory.receive("a file")
            assert len((await memory.next_sent()).files) == 1
            assert any(s.lstrip().upper().startswith("SELECT") for s in statements)
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        async with bridge.sessions() as db:
            count = len((await db.execute(select(ATTACHMENTS.c.id))).all())
        assert count == 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
