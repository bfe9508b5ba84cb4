"""Taking a file in: its name and type made safe to store and show, its content hashed while
it arrives and kept only up to ``files.max_bytes``, then put in the file store under its
content key before any row names it.

Pure but for :func:`store_received`, which writes to the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

from bridge.files.store import FileStore, content_key
from bridge.ports.events import Attachment

MAX_NAME_CHARS = 255
FALLBACK_NAME = "file"
OCTET_STREAM = "application/octet-stream"
_TOKEN = r"[a-z0-9!#$&^_.+-]+"
_MEDIA_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}$")
INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""Images the chat page shows inline (never SVG: it can carry script)."""
_SERVED_AS_IS = INLINE_IMAGES | {
    "text/plain",
    "text/csv",
    "text/markdown",
    "application/json",
    "application/pdf",
    "application/zip",
    "application/gzip",
}


def safe_name(raw: str | None) -> str:
    """A file name to store and show: the last path segment, without control or format
    characters (no NUL, no bidi overrides), no leading dots, at most 255 characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    name = name.strip().lstrip(".").strip()
    return name[:MAX_NAME_CHARS] or FALLBACK_NAME


def safe_content_type(raw: str | None) -> str:
    """``type/subtype`` in lower case, without parameters; anything else is
    ``application/octet-stream``."""
    value = (raw or "").split(";", 1)[0].strip().lower()
    return value if len(value) <= 255 and _MEDIA_TYPE.match(value) else OCTET_STREAM


def served_type(content_type: str | None) -> str:
    """The ``Content-Type`` a download is served with: the stored type when no browser
    would run or render it as a page (no HTML, SVG, XML, script), else octet-stream."""
    value = safe_content_type(content_type)
    if value in _SERVED_AS_IS or value.split("/", 1)[0] in ("audio", "video"):
        return value
    return OCTET_STREAM


def too_large_reason(max_bytes: int) -> str:
    return f"larger than {max_bytes} bytes"


@dataclass(slots=True, kw_only=True)
class Incoming:
    """One file as it arrives: fed chunk by chunk; its bytes are kept (and hashed) only
    while the total stays within ``max_bytes``, else it is only counted."""

    name: str
    content_type: str
    max_bytes: int
    size: int = 0
    _chunks: list[bytes] = field(default_factory=list)
    _digest: hashlib._Hash = field(default_factory=hashlib.sha256)

    @property
    def too_large(self) -> bool:
        return self.size > self.max_bytes

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.too_large:
            self._chunks.clear()
            return
        self._chunks.append(chunk)
        self._digest.update(chunk)

    def received(self) -> Received:
        if self.too_large:
            return Received(
                name=self.name,
                content_type=self.content_type,
                size=self.size,
                refused=too_large_reason(self.max_bytes),
            )
        return Received(
            name=self.name,
            content_type=self.content_type,
            size=self.size,
            sha256=self._digest.hexdigest(),
            data=b"".join(self._chunks),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """A whole file: its content and hash, or (``refused``) why only its metadata is kept."""

    name: str
    content_type: str
    size: int
    sha256: str | None = None
    data: bytes | None = None
    refused: str | None = None


async def store_received(
    store: FileStore, *, agent_id: int, files: list[Received]
) -> tuple[Attachment, ...]:
    """Put each kept file's content under its content key (each distinct content once; a put
    of a key that exists changes nothing), then describe them all for the message. Run
    BEFORE the message is ingested: a failure here leaves at most an unreferenced object,
    never a row without its content."""
    keys = {
        received.sha256: content_key(agent_id, received.sha256)
        for received in files
        if received.sha256 is not None
    }
    contents = {
        received.sha256: received.data
        for received in files
        if received.sha256 is not None and received.data is not None
    }
    await asyncio.gather(*(store.put(keys[sha], data) for sha, data in contents.items()))
    return tuple(_attachment(received, keys) for received in files)


def _attachment(received: Received, keys: dict[str, str]) -> Attachment:
    if received.sha256 is None:
        return Attachment(
            name=received.name,
            mime_type=received.content_type,
            size=received.size,
            state="refused",
            reason=received.refused,
        )
    return Attachment(
        name=received.name,
        mime_type=received.content_type,
        size=received.size,
        sha256=received.sha256,
        storage_key=keys[received.sha256],
        state="stored",
    )
