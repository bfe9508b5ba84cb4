"""Attachment rows written by ingest: one set per newly stored message, in the same
transaction, none for a duplicate, and no statement at all for messages without files; and
the pure parts of taking a file in (names, types, limits)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, select

from bridge.files.intake import (
    OCTET_STREAM,
    Incoming,
    safe_content_type,
    safe_name,
    served_type,
)
from bridge.files.store import content_key
from bridge.ports.errors import InvalidMessage
from bridge.ports.events import Attachment
from bridge.store.models import ATTACHMENTS, ChatMessage
from tests.support.core import core, memory_message

PICTURE = Attachment(
    name="cat.png", mime_type="image/png", size=10, url="https://files.example/cat.png"
)
STORED = Attachment(
    name="notes.txt",
    mime_type="text/plain",
    size=5,
    sha256="a" * 64,
    storage_key=content_key(1, "a" * 64),
    state="stored",
)


async def _rows(sessions: Any) -> list[Any]:
    a = ATTACHMENTS.c
    async with sessions() as db:
        return list(await db.execute(select(ATTACHMENTS).order_by(a.message_id, a.position)))


async def test_new_messages_get_their_rows_once_and_duplicates_none(database_url: str) -> None:
    async with core(database_url) as bridge:
        with_files = memory_message("look", message_id="m1", attachments=(PICTURE, STORED))
        results = await asyncio.gather(*(bridge.ingest(with_files) for _ in range(3)))
        assert len({r.message_id for r in results}) == 1
        plain = await bridge.ingest(memory_message("no files", message_id="m2"))
        again = await bridge.ingest(with_files)
        assert again.duplicate and again.message_id == results[0].message_id

        rows = await _rows(bridge.sessions)
        message_id = results[0].message_id
        assert [
            (r.message_id, r.position, r.name, r.content_type, r.size, r.state, r.storage_key)
            for r in rows
        ] == [
            (message_id, 0, "cat.png", "image/png", 10, "pending", None),
            (message_id, 1, "notes.txt", "text/plain", 5, "stored", STORED.storage_key),
        ]
        assert rows[0].source == {"url": "https://files.example/cat.png"}
        assert all(r.message_id != plain.message_id for r in rows)
        async with bridge.sessions() as db:
            stored = await db.get(ChatMessage, message_id)
        assert stored is not None
        assert [a["name"] for a in stored.attachments] == ["cat.png", "notes.txt"]


async def test_messages_without_files_write_nothing_to_attachments(database_url: str) -> None:
    async with core(database_url) as bridge:
        statements: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            statements.append(statement)

        bind = bridge.sessions.kw["bind"]
        event.listen(bind.sync_engine, "before_cursor_execute", seen)
        try:
            await asyncio.gather(
                *(bridge.ingest(memory_message(f"m{n}", message_id=f"m{n}")) for n in range(5))
            )
            assert statements and not [s for s in statements if "attachments (" in s]
            await bridge.ingest(memory_message("one", message_id="f1", attachments=(PICTURE,)))
            assert [s for s in statements if "INSERT INTO attachments" in s]
        finally:
            event.remove(bind.sync_engine, "before_cursor_execute", seen)


async def test_a_stored_attachment_needs_a_key_the_bridge_made(database_url: str) -> None:
    async with core(database_url) as bridge:
        for bad in (
            Attachment(name="x", state="stored"),
            Attachment(name="x", state="stored", sha256="b" * 64, storage_key="../etc/passwd"),
            Attachment(name="x", state="lost"),  # type: ignore[arg-type]
        ):
            with pytest.raises(InvalidMessage):
                await bridge.ingest(memory_message("x", message_id="bad", attachments=(bad,)))
        assert await _rows(bridge.sessions) == []


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
        ("a\x00b\x07c\u202eexe.txt", "abcexe.txt"),
        ("..", "file"),
        ("", "file"),
        (None, "file"),
        (".hidden", "hidden"),
        ("x" * 300 + ".txt", "x" * 255),
        ("résumé.txt", "résumé.txt"),
    ],
)
def test_names_are_one_harmless_segment(raw: str | None, name: str) -> None:
    assert safe_name(raw) == name


@pytest.mark.parametrize(
    ("raw", "stored", "served"),
    [
        ("image/png", "image/png", "image/png"),
        ("Text/Plain; charset=utf-8", "text/plain", "text/plain"),
        ("text/html", "text/html", OCTET_STREAM),
        ("image/svg+xml", "image/svg+xml", OCTET_STREAM),
        ("application/xhtml+xml", "application/xhtml+xml", OCTET_STREAM),
        ("application/javascript", "application/javascript", OCTET_STREAM),
        ("video/mp4", "video/mp4", "video/mp4"),
        ("not a type", OCTET_STREAM, OCTET_STREAM),
        ("text/html\r\nSet-Cookie: x=1", OCTET_STREAM, OCTET_STREAM),
        (None, OCTET_STREAM, OCTET_STREAM),
    ],
)
def test_types_are_tokens_and_only_inert_ones_are_served_as_such(
    raw: str | None, stored: str, served: str
) -> None:
    assert safe_content_type(raw) == stored
    assert served_type(stored) == served


def test_a_file_is_kept_up_to_the_limit_and_only_counted_past_it() -> None:
    within = Incoming(name="a", content_type="text/plain", max_bytes=6)
    for chunk in (b"abc", b"def"):
        within.feed(chunk)
    kept = within.received()
    assert (kept.data, kept.size, kept.refused) == (b"abcdef", 6, None)
    assert kept.sha256 == "bef57ec7f53a6d40beb640a780a639c83bc29ac8a9816f1fc6c5c6dcd93c4721"
    over = Incoming(name="a", content_type="text/plain", max_bytes=6)
    for chunk in (b"abc", b"defg", b"h"):
        over.feed(chunk)
    refused = over.received()
    assert (refused.data, refused.sha256, refused.size) == (None, None, 8)
    assert refused.refused == "larger than 6 bytes"
