"""The files a webhook agent's answer carries: ``"attachments"`` beside ``reply`` (or on the
NDJSON done line), each ``{"name", "content_type"?, "data_base64"}`` or ``{"name",
"content_type"?, "url"}``.

The list is checked strictly first: anything malformed fails the whole answer, as any other
malformed answer does. Then each file is taken in: decoded, or fetched ONCE from the agent's
own origin (scheme, host and port of its webhook URL; a URL anywhere else is never fetched and
the file is refused), without redirects, bounded by ``files.max_bytes`` and
``files.download_timeout_seconds``. A file over a limit (size, or beyond
``files.max_files_per_message``) is kept as metadata with the reason; the reply itself is
still given.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

import aiohttp
from yarl import URL

from bridge.agents.base import UNUSABLE_ANSWER, AgentError, AnswerFile
from bridge.agents.http import MAX_LINE_BYTES, MAX_RESPONSE_BYTES
from bridge.files.intake import Incoming, safe_content_type, safe_name, too_large_reason
from bridge.files.settings import FilesSettings

_INLINE = frozenset({"name", "content_type", "data_base64"})
_LINKED = frozenset({"name", "content_type", "url"})
NOT_OWN_ORIGIN = "not on the agent's own origin (never fetched)"


def base64_size(size: int) -> int:
    return 4 * ((size + 2) // 3)


def answer_limits(files: FilesSettings) -> tuple[int, int]:
    """The largest whole answer and the longest streamed line: room for the text and one
    inline file of ``files.max_bytes`` (more files go by ``url``)."""
    extra = base64_size(files.max_bytes)
    return MAX_RESPONSE_BYTES + extra, MAX_LINE_BYTES + extra


def _malformed(detail: str) -> AgentError:
    return AgentError(f'webhook backend: "attachments" {detail}', reason=UNUSABLE_ANSWER)


def check_files(raw: object) -> list[dict[str, Any]]:
    """The list, each item checked; AgentError for anything malformed."""
    if not isinstance(raw, list):
        raise _malformed("is not a list")
    for index, item in enumerate(raw):
        where = f"[{index}]"
        if not isinstance(item, dict):
            raise _malformed(f"{where} is not an object")
        keys = set(item)
        if not (keys <= _INLINE or keys <= _LINKED) or not ("data_base64" in keys or "url" in keys):
            raise _malformed(
                f'{where} must be {{"name", "content_type"?, "data_base64"}} or '
                f'{{"name", "content_type"?, "url"}}, not keys {sorted(keys)}'
            )
        if not isinstance(item.get("name"), str) or not item["name"].strip():
            raise _malformed(f"{where}.name must be a non-empty string")
        if not isinstance(item.get("content_type", ""), str | None):
            raise _malformed(f"{where}.content_type must be a string")
        if "url" in item:
            url = item["url"]
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise _malformed(f"{where}.url must be an absolute http(s) URL")
        elif not isinstance(item["data_base64"], str):
            raise _malformed(f"{where}.data_base64 must be a string")
    return raw


def _decoded_size(text: str) -> int:
    return len(text) * 3 // 4 - text[-2:].count("=")


def _inline(item: dict[str, Any], name: str, content_type: str, max_bytes: int) -> AnswerFile:
    text: str = item["data_base64"]
    size = _decoded_size(text)
    if size > max_bytes:
        return AnswerFile(
            name=name,
            content_type=content_type,
            size=size,
            state="refused",
            reason=too_large_reason(max_bytes),
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(f"file {name!r}: data_base64 is not base64") from None
    return AnswerFile(name=name, content_type=content_type, size=len(data), data=data)


class FileTaker:
    """Takes in one answer's files for one webhook agent."""

    def __init__(
        self, *, http: aiohttp.ClientSession, webhook_url: str, settings: FilesSettings
    ) -> None:
        self._http = http
        self._origin = _origin_of(webhook_url)
        self._settings = settings

    async def take(self, raw: object) -> list[AnswerFile]:
        items = check_files(raw)
        limit = self._settings.max_files_per_message
        return list(
            await asyncio.gather(
                *(self._one(item, over=index >= limit) for index, item in enumerate(items))
            )
        )

    async def _one(self, item: dict[str, Any], *, over: bool) -> AnswerFile:
        name = safe_name(item["name"])
        given = item.get("content_type")
        content_type = safe_content_type(given)
        if over:
            limit = self._settings.max_files_per_message
            return AnswerFile(
                name=name,
                content_type=content_type,
                size=None,
                state="refused",
                reason=f"more than {limit} files in one message",
            )
        if "data_base64" in item:
            return _inline(item, name, content_type, self._settings.max_bytes)
        url: str = item["url"]
        if self._origin is None or _origin_of(url) != self._origin:
            return AnswerFile(
                name=name,
                content_type=content_type,
                size=None,
                state="refused",
                reason=NOT_OWN_ORIGIN,
            )
        return await self._fetch(url, name, given)

    async def _fetch(self, url: str, name: str, given: str | None) -> AnswerFile:
        max_bytes = self._settings.max_bytes
        try:
            async with asyncio.timeout(self._settings.download_timeout_seconds):
                async with self._http.get(url, allow_redirects=False) as response:
                    content_type = safe_content_type(given or response.content_type)
                    if response.status != 200:
                        return _failed(name, content_type, f"HTTP {response.status}")
                    incoming = Incoming(name=name, content_type=content_type, max_bytes=max_bytes)
                    async for chunk in response.content.iter_any():
                        incoming.feed(chunk)
                        if incoming.too_large:
                            break
        except TimeoutError:
            return _failed(name, safe_content_type(given), "timed out")
        except aiohttp.ClientError as error:
            return _failed(name, safe_content_type(given), type(error).__name__)
        received = incoming.received()
        if received.refused is not None:
            return AnswerFile(
                name=name,
                content_type=content_type,
                size=None,
                state="refused",
                reason=received.refused,
            )
        return AnswerFile(
            name=name, content_type=content_type, size=received.size, data=received.data
        )


def _failed(name: str, content_type: str, cause: str) -> AnswerFile:
    return AnswerFile(
        name=name,
        content_type=content_type,
        size=None,
        state="failed",
        reason=f"could not be fetched: {cause}",
    )


def _origin_of(url: str) -> URL | None:
    try:
        return URL(url).origin()
    except ValueError:
        return None
