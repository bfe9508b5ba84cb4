"""A message posted as ``multipart/form-data``: a ``text`` field, an optional
``client_message_id`` field and ``file`` parts, read part by part from the stream.

The server's body middleware leaves this body unread (:func:`bridge.api.http.streams_multipart`),
so the limits are kept here: the same deadline (``http.body_timeout_seconds``), and instead of
``http.max_body_bytes`` room for ``files.max_files_per_message`` files of ``files.max_bytes``
plus the text. A body announced larger is refused before a byte is read, one that turns out
larger as soon as it passes the limit; either way nothing is stored. A file over
``files.max_bytes`` is only counted (its bytes are dropped as they arrive) and kept as
metadata with the reason.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import BodyPartReader, web
from aiohttp.hdrs import CONTENT_TYPE
from aiohttp.http_exceptions import HttpProcessingError

from bridge.api.errors import ApiError
from bridge.files.intake import Incoming, Received, safe_content_type, safe_name
from bridge.ports.events import storable_text
from bridge.settings import Settings

OVERHEAD_BYTES = 64 * 1024
"""Room for the boundaries, part headers and ``client_message_id`` on top of the contents."""
CHUNK_BYTES = 64 * 1024
MAX_CLIENT_ID_CHARS = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadLimits:
    max_text_bytes: int
    max_bytes: int
    """Per file."""
    max_files: int
    timeout: float

    @property
    def max_body_bytes(self) -> int:
        return self.max_files * self.max_bytes + self.max_text_bytes + OVERHEAD_BYTES

    @classmethod
    def of(cls, settings: Settings) -> UploadLimits:
        return cls(
            max_text_bytes=settings.web.max_text_bytes,
            max_bytes=settings.files.max_bytes,
            max_files=settings.files.max_files_per_message,
            timeout=settings.http.body_timeout_seconds,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadForm:
    text: str
    client_message_id: str | None
    files: list[Received]


@dataclass(slots=True)
class _Budget:
    """The bytes the body may still bring."""

    left: int
    limit: int = field(init=False)

    def __post_init__(self) -> None:
        self.limit = self.left

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise too_large(self.limit)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the body is over {limit} bytes")


async def read_upload(request: web.Request, limits: UploadLimits) -> UploadForm:
    """The form, validated; raises ApiError (413, 408, 400, 422) with the body perhaps
    half read: the caller closes the connection then."""
    limit = limits.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    try:
        async with asyncio.timeout(limits.timeout):
            return await _read(request, limits, _Budget(limit))
    except TimeoutError:
        raise ApiError(
            408, "request_timeout", f"the body did not arrive within {limits.timeout:g} s"
        ) from None
    except (ConnectionError, HttpProcessingError, LookupError, ValueError, RuntimeError):
        # aiohttp's multipart reader refuses a broken body with these (LookupError: no
        # boundary).
        raise ApiError(400, "bad_request", "the body is not a well-formed multipart form") from None


async def _read(request: web.Request, limits: UploadLimits, budget: _Budget) -> UploadForm:
    reader = await request.multipart()
    fields: dict[str, str] = {}
    files: list[Received] = []
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise ApiError(422, "invalid", "body: nested multipart is not accepted")
        name = part.name or ""
        if name == "file":
            if len(files) >= limits.max_files:
                raise ApiError(
                    422, "too_many_files", f"file: at most {limits.max_files} files a message"
                )
            files.append(await _file(part, budget, limits.max_bytes))
        elif name in ("text", "client_message_id") and name not in fields:
            most = limits.max_text_bytes if name == "text" else MAX_CLIENT_ID_CHARS * 4
            fields[name] = await _field(part, budget, name=name, most=most)
        else:
            raise ApiError(422, "invalid", f"{name or 'body'}: unknown or repeated field")
    return _form(fields, files)


async def _file(part: BodyPartReader, budget: _Budget, max_bytes: int) -> Received:
    incoming = Incoming(
        # Browsers escape only these three in a form's file name (WHATWG multipart).
        name=safe_name((part.filename or "").replace("%22", '"').replace("%0D%0A", " ")),
        content_type=safe_content_type(part.headers.get(CONTENT_TYPE)),
        max_bytes=max_bytes,
    )
    while chunk := await part.read_chunk(CHUNK_BYTES):
        budget.spend(len(chunk))
        incoming.feed(chunk)
    return incoming.received()


async def _field(part: BodyPartReader, budget: _Budget, *, name: str, most: int) -> str:
    raw = bytearray()
    while chunk := await part.read_chunk(CHUNK_BYTES):
        budget.spend(len(chunk))
        raw += chunk
        if len(raw) > most:
            code = "text_too_long" if name == "text" else "invalid"
            raise ApiError(422, code, f"{name}: longer than {most} bytes")
    try:
        return storable_text(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(422, "invalid", f"{name}: not UTF-8") from None


def _form(fields: dict[str, str], files: list[Received]) -> UploadForm:
    text = fields.get("text", "")
    if not text.strip() and not files:
        raise ApiError(422, "invalid", "text: a message needs text or a file")
    client_id = fields.get("client_message_id")
    if client_id is not None and not 0 < len(client_id) <= MAX_CLIENT_ID_CHARS:
        raise ApiError(422, "invalid", f"client_message_id: 1 to {MAX_CLIENT_ID_CHARS} characters")
    return UploadForm(text=text, client_message_id=client_id, files=files)
