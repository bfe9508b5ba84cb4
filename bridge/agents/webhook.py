"""A backend that hands each message to your own HTTP service and posts back its reply.

The request is signed so the receiver can prove it came from this bridge and is fresh:
``X-Bridge-Timestamp`` is the unix time in seconds and ``X-Bridge-Signature`` is
``sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`` over the exact body bytes sent.
A receiver should recompute it with :func:`sign`, compare in constant time and refuse
timestamps more than five minutes away from its own clock.

The receiver answers 2xx with ``{"reply": "<text>"}``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from yarl import URL

from bridge.agents.base import AgentError, AgentRequest
from bridge.settings import WebhookBackendSettings

__all__ = [
    "MAX_RESPONSE_BYTES",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookBackend",
    "build_body",
    "sign",
]

TIMESTAMP_HEADER = "X-Bridge-Timestamp"
SIGNATURE_HEADER = "X-Bridge-Signature"
# A reply is text for a chat message; anything far bigger is a broken or hostile receiver.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_SNIPPET_CHARS = 200


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Bridge-Signature`` value: ``sha256=`` and the hex HMAC of ``timestamp.body``.

    The timestamp is inside the MAC so a captured request cannot be replayed later with a
    fresh timestamp.
    """
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def build_body(request: AgentRequest) -> dict[str, Any]:
    """The JSON document the receiver gets: everything in the request, grouped by subject."""
    return {
        "agent": {"slug": request.agent_slug, "name": request.agent_name},
        "session": {
            "id": request.session_id,
            "external_conv_id": request.external_conv_id,
            "channel": request.channel,
            "is_group": request.is_group,
            "group_name": request.group_name,
        },
        "sender": {
            "external_id": request.sender.external_id,
            "display_name": request.sender.display_name,
            "kind": request.sender.kind,
        },
        "message": {"id": request.message_id, "text": request.text},
        "history": [
            {"role": item.role, "content": item.content, "sender_name": item.sender_name}
            for item in request.history
        ],
        "system_prompt": request.system_prompt,
    }


class WebhookBackend:
    """Posts one signed request per message; the shared ``http`` session belongs to the app."""

    def __init__(self, *, settings: WebhookBackendSettings, http: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._http = http
        # Webhook URLs often carry a token in the path or query: errors show the origin only.
        self._shown_url = _origin(settings.url)

    async def answer(self, request: AgentRequest) -> AsyncIterator[str]:
        """Yield the receiver's reply as one chunk; raise AgentError on any failure."""
        # Serialized once: the signature covers exactly the bytes that go on the wire.
        body = json.dumps(build_body(request), ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        secret = self._settings.secret.get_secret_value().encode()
        status, raw = await self._post(
            body,
            {
                "Content-Type": "application/json",
                "Accept": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(secret, timestamp, body),
            },
        )
        if not 200 <= status < 300:
            raise AgentError(
                f"webhook backend: HTTP {status} from {self._shown_url}: {_snippet(raw)}"
            )
        yield _parse_reply(raw)

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is owned and closed by the app."""
        return None

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        timeout = self._settings.timeout_seconds
        try:
            async with self._http.post(
                self._settings.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                # aiohttp would turn a redirected POST into a GET without the body: refuse.
                allow_redirects=False,
            ) as response:
                return response.status, await _read_limited(response)
        except TimeoutError:
            raise AgentError(
                f"webhook backend: no answer from {self._shown_url} within {timeout:g} s"
            ) from None
        except aiohttp.ClientError as error:
            raise AgentError(
                f"webhook backend: request to {self._shown_url} failed: {_describe(error)}"
            ) from None


def _parse_reply(raw: bytes) -> str:
    """The ``reply`` field, which must be a non-empty string."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise AgentError(f"webhook backend: response is not JSON: {_snippet(raw)}") from None
    if not isinstance(data, dict) or "reply" not in data:
        raise AgentError(f'webhook backend: response has no "reply" field: {_snippet(raw)}')
    reply = data["reply"]
    if not isinstance(reply, str):
        raise AgentError(f'webhook backend: "reply" is {type(reply).__name__}, not a string')
    if not reply.strip():
        raise AgentError('webhook backend: "reply" is empty')
    return reply.strip()


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    """The body, refusing to buffer more than MAX_RESPONSE_BYTES."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise AgentError(f"webhook backend: response larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _origin(url: str) -> str:
    """Scheme, host and port only: safe to put in a log line."""
    try:
        return str(URL(url).origin())
    except ValueError:
        return "(invalid URL)"


def _describe(error: aiohttp.ClientError) -> str:
    """A one-line cause that never repeats the full request URL."""
    if isinstance(error, aiohttp.InvalidURL):
        return "invalid URL"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"{type(error).__name__}: {error.status} {error.message}"
    return f"{type(error).__name__}: {error}"


def _snippet(raw: bytes) -> str:
    """The first ~200 characters of a body, on one line, for an error message."""
    text = " ".join(raw.decode("utf-8", "replace").split())
    if not text:
        return "(empty body)"
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "…"
