"""The HTTP plumbing the backends share: one bounded POST, and safe error-message parts.

:func:`open_reply` opens the POST and hands over its body to be read as it arrives (whole,
or line by line for streamed answers), never buffering more than :data:`MAX_RESPONSE_BYTES`
in all or :data:`MAX_LINE_BYTES` in one line.

Every failure becomes an :class:`AgentError` whose message starts ``"<label> backend: "``,
names the request only by a redacted URL and quotes the upstream only through
:func:`bridge.infra.redact.excerpt`, with every secret the request carried taken out (its
credential headers, URL credentials and the ``secrets`` the caller names): an upstream that
echoes its request shows nothing secret. Messages can go to logs and admins as they are.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import aiohttp
from yarl import URL

from bridge.agents.base import UNUSABLE_ANSWER, AgentError
from bridge.infra.redact import excerpt, header_secrets, redact, url_secrets

__all__ = [
    "BROKEN_ANSWER",
    "MAX_LINE_BYTES",
    "MAX_RESPONSE_BYTES",
    "ReplyBody",
    "display_url",
    "open_reply",
    "origin",
    "request_secrets",
]

# A reply is text for a chat message; anything far bigger is a broken or hostile server.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_LINE_BYTES = 1024 * 1024
"""The longest line a streamed answer (server-sent events, NDJSON) may have."""

BROKEN_ANSWER = "the agent's answer broke off"


def request_secrets(
    *, url: str, headers: dict[str, str], secrets: Iterable[str] = ()
) -> tuple[str, ...]:
    """Everything secret a request carries: ``secrets``, credential headers, URL credentials."""
    return (*secrets, *header_secrets(headers), *url_secrets(url))


class ReplyBody:
    """The body of a 2xx answer, read as it arrives; ``content_type`` is its bare media type.

    Reading raises AgentError when the body exceeds the limits, times out or breaks off.
    """

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        *,
        label: str,
        shown_url: str,
        timeout_seconds: float,
        hidden: tuple[str, ...],
        max_bytes: int = MAX_RESPONSE_BYTES,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self._max_bytes = max_bytes
        self._max_line_bytes = max_line_bytes
        self._response = response
        self._label = label
        self._shown_url = shown_url
        self._timeout_seconds = timeout_seconds
        self._hidden = hidden

    @property
    def content_type(self) -> str:
        return self._response.content_type

    async def read(self) -> bytes:
        """The whole body, refusing to buffer more than MAX_RESPONSE_BYTES."""
        chunks: list[bytes] = []
        size = 0
        async with aclosing(self._chunks()) as body:
            async for chunk in body:
                size += len(chunk)
                if size > self._max_bytes:
                    raise self._too_large()
                chunks.append(chunk)
        return b"".join(chunks)

    async def lines(self) -> AsyncGenerator[bytes, None]:
        """Each line as soon as it is complete, without its ``\n`` or ``\r\n``; a last line
        without a newline too. At most MAX_LINE_BYTES a line, MAX_RESPONSE_BYTES in all."""
        pending = bytearray()
        size = 0
        async with aclosing(self._chunks()) as body:
            async for chunk in body:
                size += len(chunk)
                if size > self._max_bytes:
                    raise self._too_large()
                pending += chunk
                while (end := pending.find(b"\n")) >= 0:
                    line = bytes(pending[:end])
                    del pending[: end + 1]
                    if len(line) > self._max_line_bytes:
                        raise self._line_too_long()
                    yield line.removesuffix(b"\r")
                if len(pending) > self._max_line_bytes:
                    raise self._line_too_long()
        if pending:
            yield bytes(pending).removesuffix(b"\r")

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        iterator = self._response.content.iter_any().__aiter__()
        while True:
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise self._timed_out() from None
            except aiohttp.ClientError as error:
                cause = redact(_describe(error), self._hidden)
                raise AgentError(
                    f"{self._label} backend: the answer from {self._shown_url} broke off: {cause}",
                    reason=BROKEN_ANSWER,
                ) from None
            yield chunk

    def _timed_out(self) -> AgentError:
        return _timed_out(self._label, self._shown_url, self._timeout_seconds)

    def _too_large(self) -> AgentError:
        return AgentError(
            f"{self._label} backend: response larger than {self._max_bytes} bytes",
            reason=UNUSABLE_ANSWER,
        )

    def _line_too_long(self) -> AgentError:
        return AgentError(
            f"{self._label} backend: a line of the response is longer than "
            f"{self._max_line_bytes} bytes",
            reason=UNUSABLE_ANSWER,
        )


@asynccontextmanager
async def open_reply(
    http: aiohttp.ClientSession,
    *,
    url: str,
    shown_url: str,
    body: bytes,
    headers: dict[str, str],
    timeout_seconds: float,
    label: str,
    secrets: Iterable[str] = (),
    max_bytes: int = MAX_RESPONSE_BYTES,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> AsyncIterator[ReplyBody]:
    """POST ``body`` to ``url`` and give the body of a 2xx answer, to read as it arrives.

    ``timeout_seconds`` bounds the whole exchange, reading included. Raises AgentError on a
    timeout, a connection or protocol error, a body larger than MAX_RESPONSE_BYTES or a
    non-2xx status; messages show ``shown_url``, never ``url``, and never any of
    :func:`request_secrets`.
    """
    hidden = request_secrets(url=url, headers=headers, secrets=secrets)
    try:
        async with http.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            # A redirect would replay credentials to wherever it points, and aiohttp would
            # turn the POST into a GET without the body: treat it as an error.
            allow_redirects=False,
        ) as response:
            reply = ReplyBody(
                response,
                label=label,
                shown_url=shown_url,
                timeout_seconds=timeout_seconds,
                hidden=hidden,
                max_bytes=max_bytes,
                max_line_bytes=max_line_bytes,
            )
            status = response.status
            if not 200 <= status < 300:
                raw = await reply.read()
                raise AgentError(
                    f"{label} backend: HTTP {status} from {shown_url}: "
                    f"{excerpt(raw, secrets=hidden)}",
                    reason=f"the agent did not answer (HTTP {status})",
                )
            yield reply
    except TimeoutError:
        raise _timed_out(label, shown_url, timeout_seconds) from None
    except aiohttp.ClientError as error:
        raise AgentError(
            f"{label} backend: request to {shown_url} failed: {redact(_describe(error), hidden)}",
            reason="the agent could not be reached",
        ) from None


def parse_json(raw: bytes | str, *, label: str, what: str, secrets: Iterable[str]) -> Any:
    """``raw`` as JSON; an AgentError quoting it (without ``secrets``) when it is not."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        shown = excerpt(raw, secrets=secrets)
        raise AgentError(
            f"{label} backend: {what} is not JSON: {shown}", reason=UNUSABLE_ANSWER
        ) from None


def display_url(url: str) -> str:
    """The URL without credentials or query string, safe to put in a log line."""
    try:
        return str(URL(url).with_user(None).with_query(None).with_fragment(None))
    except ValueError:
        return "(invalid URL)"


def origin(url: str) -> str:
    """Scheme, host and port only: safe to put in a log line."""
    try:
        return str(URL(url).origin())
    except ValueError:
        return "(invalid URL)"


def _timed_out(label: str, shown_url: str, timeout_seconds: float) -> AgentError:
    return AgentError(
        f"{label} backend: no answer from {shown_url} within {timeout_seconds:g} s",
        reason="the agent did not answer in time",
    )


def _describe(error: aiohttp.ClientError) -> str:
    """A one-line cause that never repeats the full request URL."""
    if isinstance(error, aiohttp.InvalidURL):
        return "invalid URL"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"{type(error).__name__}: {error.status} {error.message}"
    return f"{type(error).__name__}: {error}"
