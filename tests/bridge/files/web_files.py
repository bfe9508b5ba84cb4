"""Helpers for the web upload tests: settings with a store of the test's own, multipart
posts as a program (or the page) sends them, and what the store holds."""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select

from bridge.files.settings import FilesSettings, StorageSettings
from bridge.settings import Settings
from bridge.store.models import ATTACHMENTS
from tests.support.api import ApiClient, ApiResponse
from tests.support.harness import RunningBridge


def with_files(settings: Settings, store: Path, **files: Any) -> Settings:
    """``settings`` with the local store in ``store`` and ``files`` settings."""
    return settings.model_copy(
        update={"storage": StorageSettings(path=str(store)), "files": FilesSettings(**files)}
    )


def png(width: int = 2, height: int = 2) -> bytes:
    """A real PNG (red pixels), so a browser can draw it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


File = tuple[str, bytes, str]
"""(file name, content, content type)"""


def form(text: str | None, *files: File, client_message_id: str | None = None) -> aiohttp.FormData:
    # Names as browsers send them (raw UTF-8); aiohttp would percent-encode them otherwise.
    data = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
    if text is not None:
        data.add_field("text", text)
    if client_message_id is not None:
        data.add_field("client_message_id", client_message_id)
    for name, content, content_type in files:
        data.add_field("file", content, filename=name, content_type=content_type)
    return data


async def upload(
    client: ApiClient, session_id: int, text: str | None, *files: File, **fields: Any
) -> ApiResponse:
    return await client.call(
        "POST", f"/sessions/{session_id}/messages", data=form(text, *files, **fields)
    )


async def download(client: ApiClient, url: str) -> tuple[int, bytes, dict[str, str]]:
    """``url`` as listed (``/api/v1/files/{id}``): status, body and headers (lower-case
    names)."""
    async with client.http.get(
        client.base_url + url, headers={"Authorization": f"Bearer {client.token}"}
    ) as response:
        headers = {name.lower(): value for name, value in response.headers.items()}
        return response.status, await response.read(), headers


def stored_objects(store: Path) -> list[Path]:
    """The objects in the local store (not a put's temporary file)."""
    if not store.exists():
        return []
    return sorted(
        path for path in store.rglob("*") if path.is_file() and ".incoming-" not in path.name
    )


async def attachment_rows(bridge: RunningBridge) -> list[Any]:
    a = ATTACHMENTS.c
    async with bridge.sessions() as db:
        found = await db.execute(select(ATTACHMENTS).order_by(a.message_id, a.position))
        return list(found)


async def chunked(raw: bytes, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    """``raw`` as a body without Content-Length (chunked), as a streaming client sends it."""
    for start in range(0, len(raw), size):
        yield raw[start : start + size]
