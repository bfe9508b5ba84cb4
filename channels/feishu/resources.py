"""The files users send in Feishu messages: what inbound records, and fetching them later.

Feishu serves a user's image or file only through the message that carries it
(``GET /open-apis/im/v1/messages/{message_id}/resources/{file_key}?type=image|file``, tenant
token, at most 100 MB), so an attachment's ``source`` holds those ids and the ``type``, never
a URL: the bytes come from the configured Open API base alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal
from urllib.parse import quote

from bridge.ports.contract import FetchedFile
from bridge.ports.errors import FileFetchError
from bridge.ports.events import MAX_ID_LENGTH
from channels.feishu.client import MESSAGES, FeishuClient, FeishuError, TooLarge

ResourceType = Literal["image", "file"]
RESOURCE_TYPES: frozenset[str] = frozenset({"image", "file"})

# What Feishu says about the message or the file itself: asking again cannot help.
PERMANENT_CODES: dict[int, str] = {
    230110: "the message was deleted",
    234001: "Feishu refused the request's parameters",
    234003: "the file is not in that message",
    234004: "the app is not in the chat",
    234009: "the chat is external to the app's tenant",
    234037: "the file is larger than Feishu serves (100 MB)",
    234038: "the chat is in restricted mode",
    234040: "the message is not visible to the app",
    234043: "Feishu serves no files of that message type",
}


def resource_source(message_id: str, file_key: str, kind: ResourceType) -> dict[str, str]:
    """The ``source`` of an inbound attachment: what :func:`fetch_resource` needs."""
    return {"message_id": message_id, "file_key": file_key, "type": kind}


def _field(source: Mapping[str, object], name: str) -> str:
    value = source.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise FileFetchError(f"the attachment has no Feishu {name}", permanent=True)
    return value


async def fetch_resource(
    client: FeishuClient, source: Mapping[str, object], *, max_bytes: int
) -> FetchedFile:
    """The file's bytes and Feishu's ``Content-Type``; raises FileFetchError (permanent for
    a bad source, a file too large, or what Feishu says cannot change; else transient)."""
    message_id, file_key = _field(source, "message_id"), _field(source, "file_key")
    kind = _field(source, "type")
    if kind not in RESOURCE_TYPES:
        raise FileFetchError("the attachment's Feishu type is not image or file", permanent=True)
    path = f"{MESSAGES}/{quote(message_id, safe='')}/resources/{quote(file_key, safe='')}"
    try:
        data, content_type = await client.download(path, params={"type": kind}, max_bytes=max_bytes)
    except TooLarge:
        raise FileFetchError(f"larger than {max_bytes} bytes", permanent=True) from None
    except FeishuError as error:
        if error.code is not None and error.code in PERMANENT_CODES:
            reason = f"Feishu {error.code}: {PERMANENT_CODES[error.code]}"
            raise FileFetchError(reason, permanent=True) from None
        raise FileFetchError(f"Feishu download failed: {error}") from None
    media_type = (content_type or "").split(";")[0].strip().lower()
    # application/octet-stream says nothing the attachment's own type would not say better.
    known = media_type if media_type and media_type != "application/octet-stream" else None
    return FetchedFile(data=data, content_type=known)
