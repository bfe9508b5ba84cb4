"""A backend that hands each message to your own HTTP service and posts back its reply.

The request is signed so the receiver can prove it came from this bridge and is fresh:
``X-Bridge-Timestamp`` is the unix time in seconds and ``X-Bridge-Signature`` is
``sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`` over the exact body bytes sent.
A receiver should recompute it with :func:`sign`, compare in constant time and refuse
timestamps more than five minutes away from its own clock.

The receiver answers 2xx with ``{"reply": "<text>"}``, or streams its reply as
``Content-Type: application/x-ndjson``: one JSON object per line, ``{"delta": "<text>"}`` for
each piece of the reply and ``{"done": true}`` last (blank lines are skipped). Each delta is
yielded as its line arrives (the reply stripped as a whole: leading whitespace dropped,
trailing whitespace held back until more text follows). A stream that breaks off, has a line
that is not JSON or is neither a delta nor done, or ends without ``{"done": true}`` is an
AgentError, even after some deltas were yielded; so is one with no text at all.

Either form may report what the answer cost, for token budgets and the usage API:
``"usage": {"input_tokens": N, "output_tokens": M}`` beside ``reply``, or on the done line
(``{"done": true, "usage": {...}}``). A malformed ``usage`` is logged and ignored.

An answer may carry files: ``"attachments"`` beside ``reply`` or on the done line, each
``{"name", "content_type"?, "data_base64"}`` or ``{"name", "content_type"?, "url"}`` (fetched
once, from the webhook URL's own origin only): :mod:`bridge.agents.webhook_files`.

A message that carries files adds ``"attachments": [{"id", "name", "content_type", "size",
"url", "reason"}]`` to the body (the key is absent otherwise, so the body of a message without
files is unchanged). ``url`` is an absolute signed link to the bytes, valid for
``files.link_ttl_seconds``, fetched without any token (:mod:`bridge.files.links`); it is null
for a file whose content the bridge does not hold (``reason`` says why).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing
from typing import Any

import aiohttp

from bridge.agents.base import UNUSABLE_ANSWER, AgentAttachment, AgentError, AgentRequest
from bridge.agents.http import (
    BROKEN_ANSWER,
    MAX_LINE_BYTES,
    MAX_RESPONSE_BYTES,
    ReplyBody,
    open_reply,
    origin,
    parse_json,
    request_secrets,
)
from bridge.agents.webhook_files import FileTaker, answer_limits
from bridge.files.settings import FilesSettings
from bridge.infra.logs import log_event
from bridge.infra.redact import excerpt
from bridge.settings import WebhookBackendSettings

__all__ = [
    "MAX_RESPONSE_BYTES",
    "NDJSON_TYPES",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookBackend",
    "attachments_of",
    "build_body",
    "sign",
]

TIMESTAMP_HEADER = "X-Bridge-Timestamp"
SIGNATURE_HEADER = "X-Bridge-Signature"
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson"})
"""The content types of a streamed reply."""

logger = logging.getLogger(__name__)


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
        **({"attachments": attachments_of(request)} if request.attachments else {}),
    }


def attachments_of(request: AgentRequest) -> list[dict[str, Any]]:
    """The ``attachments`` list: each file with a fresh signed link when it is stored."""
    return [
        {
            "id": attachment.id,
            "name": attachment.name,
            "content_type": attachment.content_type,
            "size": attachment.size,
            "url": None if attachment.link is None else attachment.link(),
            "reason": None if attachment.link is not None else _not_held(attachment),
        }
        for attachment in request.attachments
    ]


def _not_held(attachment: AgentAttachment) -> str:
    if attachment.state == "pending":
        return "not fetched yet"
    return attachment.reason or f"not stored ({attachment.state})"


class WebhookBackend:
    """Posts one signed request per message; the shared ``http`` session belongs to the app."""

    def __init__(
        self,
        *,
        settings: WebhookBackendSettings,
        http: aiohttp.ClientSession,
        files: FilesSettings | None = None,
    ) -> None:
        self._settings = settings
        self._http = http
        # Webhook URLs often carry a token in the path or query: errors show the origin only.
        self._url = settings.url.get_secret_value()
        self._shown_url = origin(self._url)
        files = files or FilesSettings()
        self._limits = answer_limits(files)
        self._files = FileTaker(http=http, webhook_url=self._url, settings=files)

    async def answer(self, request: AgentRequest) -> AsyncIterator[str]:
        """Yield the receiver's reply, as it streams in when it streams; raise AgentError on
        any failure."""
        # Serialized once: the signature covers exactly the bytes that go on the wire.
        body = json.dumps(build_body(request), ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        secret = self._settings.secret.get_secret_value()
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, application/x-ndjson",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret.encode(), timestamp, body),
        }
        # The receiver may echo any of these in an error: none of them may reach a message.
        secrets = request_secrets(url=self._url, headers=headers, secrets=[secret])
        async with open_reply(
            self._http,
            url=self._url,
            shown_url=self._shown_url,
            body=body,
            headers=headers,
            timeout_seconds=self._settings.timeout_seconds,
            label="webhook",
            secrets=secrets,
            max_bytes=self._limits[0],
            max_line_bytes=self._limits[1],
        ) as reply:
            if reply.content_type not in NDJSON_TYPES:
                text, files = _parse_reply(await reply.read(), secrets, request)
                if files is not None:
                    request.answer_files.extend(await self._files.take(files))
                yield text
                return
            done: list[object] = []
            async with aclosing(_stream_reply(reply, secrets, request, done)) as deltas:
                async for delta in deltas:
                    yield delta
            if done:  # the done line's files, taken in once the text is all there
                request.answer_files.extend(await self._files.take(done[0]))

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is owned and closed by the app."""
        return None


def _record_usage(request: AgentRequest, usage: object) -> None:
    """Add a reported ``usage`` object to the request's meter; log and skip a malformed one."""
    if usage is None:
        return
    counts: dict[str, object] = usage if isinstance(usage, dict) else {"": usage}
    values = [counts.get(key, 0) for key in ("input_tokens", "output_tokens")]
    tokens = [
        value
        for value in values
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0
    ]
    if set(counts) - {"input_tokens", "output_tokens"} or len(tokens) != len(values):
        log_event(
            logger,
            "webhook.usage_ignored",
            level=logging.WARNING,
            agent=request.agent_slug,
            message_id=request.message_id,
            reason='"usage" must be {"input_tokens": N, "output_tokens": M} (whole numbers)',
        )
        return
    request.usage.add(input_tokens=tokens[0], output_tokens=tokens[1])


def _parse_reply(
    raw: bytes, secrets: Iterable[str], request: AgentRequest
) -> tuple[str, object | None]:
    """The ``reply`` field, which must be a non-empty string (and ``usage``, if any), and the
    raw ``attachments`` (None: none given)."""
    data = parse_json(raw, label="webhook", what="response", secrets=secrets)
    if not isinstance(data, dict) or "reply" not in data:
        shown = excerpt(raw, secrets=secrets)
        raise AgentError(
            f'webhook backend: response has no "reply" field: {shown}', reason=UNUSABLE_ANSWER
        )
    reply = data["reply"]
    if not isinstance(reply, str):
        raise AgentError(
            f'webhook backend: "reply" is {type(reply).__name__}, not a string',
            reason=UNUSABLE_ANSWER,
        )
    if not reply.strip():
        raise AgentError(
            'webhook backend: "reply" is empty', reason="the agent gave an empty answer"
        )
    if "usage" in data:
        _record_usage(request, data["usage"])
    if len(raw) > MAX_RESPONSE_BYTES and "attachments" not in data:
        raise _too_large()
    return reply.strip(), data.get("attachments")


def _too_large() -> AgentError:
    return AgentError(
        f"webhook backend: response larger than {MAX_RESPONSE_BYTES} bytes", reason=UNUSABLE_ANSWER
    )


async def _stream_reply(
    reply: ReplyBody, secrets: Iterable[str], request: AgentRequest, done: list[object]
) -> AsyncGenerator[str, None]:
    """The deltas of an NDJSON reply, stripped as one text; stops at ``{"done": true}``
    (whose raw ``attachments``, if any, it appends to ``done``)."""
    started = False
    held = ""
    size = 0  # the text's lines keep the usual limits; only files may make the answer larger
    async with aclosing(reply.lines()) as lines:
        async for line in lines:
            if not line.strip():
                continue
            delta = _parse_line(line, secrets, request)
            size += len(line) + 1
            if isinstance(delta, str) and len(line) > MAX_LINE_BYTES:
                raise AgentError(
                    f"webhook backend: a line of the response is longer than {MAX_LINE_BYTES} "
                    "bytes",
                    reason=UNUSABLE_ANSWER,
                )
            if isinstance(delta, str) and size > MAX_RESPONSE_BYTES:
                raise _too_large()
            if not isinstance(delta, str):
                if not started:
                    raise AgentError(
                        "webhook backend: the streamed reply is empty",
                        reason="the agent gave an empty answer",
                    )
                if "attachments" in delta:
                    done.append(delta["attachments"])
                return
            if not started:
                delta = delta.lstrip()
                started = bool(delta)
            kept = delta.rstrip()
            if kept:
                yield held + kept
                held = delta[len(kept) :]
            else:
                held += delta
    raise AgentError(
        'webhook backend: the streamed reply ended without {"done": true}', reason=BROKEN_ANSWER
    )


def _parse_line(line: bytes, secrets: Iterable[str], request: AgentRequest) -> str | dict[str, Any]:
    """A delta's text, or the done line itself (with its ``usage`` recorded, if any);
    anything else raises AgentError."""
    data = parse_json(line, label="webhook", what="a streamed line", secrets=secrets)
    if isinstance(data, dict):
        delta = data.get("delta")
        if isinstance(delta, str) and set(data) == {"delta"}:
            return delta
        if data.get("done") is True and set(data) <= {"done", "usage", "attachments"}:
            if "usage" in data:
                _record_usage(request, data["usage"])
            return data
    shown = excerpt(line, secrets=secrets)
    raise AgentError(
        f'webhook backend: a streamed line is neither {{"delta": "<text>"}} nor '
        f'{{"done": true}}: {shown}',
        reason=UNUSABLE_ANSWER,
    )
