"""The HTTP plumbing the backends share: one bounded POST, and safe error-message parts.

Every failure becomes an :class:`AgentError` whose message starts ``"<label> backend: "``,
names the request only by a redacted URL and quotes the upstream only through
:func:`bridge.infra.redact.excerpt`, with every secret the request carried taken out (its
credential headers, URL credentials and the ``secrets`` the caller names): an upstream that
echoes its request shows nothing secret. Messages can go to logs and admins as they are.
"""

from __future__ import annotations

from collections.abc import Iterable

import aiohttp
from yarl import URL

from bridge.agents.base import UNUSABLE_ANSWER, AgentError
from bridge.infra.redact import excerpt, header_secrets, redact, url_secrets

__all__ = ["MAX_RESPONSE_BYTES", "display_url", "origin", "post_for_reply", "request_secrets"]

# A reply is text for a chat message; anything far bigger is a broken or hostile server.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


def request_secrets(
    *, url: str, headers: dict[str, str], secrets: Iterable[str] = ()
) -> tuple[str, ...]:
    """Everything secret a request carries: ``secrets``, credential headers, URL credentials."""
    return (*secrets, *header_secrets(headers), *url_secrets(url))


async def post_for_reply(
    http: aiohttp.ClientSession,
    *,
    url: str,
    shown_url: str,
    body: bytes,
    headers: dict[str, str],
    timeout_seconds: float,
    label: str,
    secrets: Iterable[str] = (),
) -> bytes:
    """POST ``body`` to ``url`` and return the body of a 2xx answer.

    Raises AgentError on a timeout, a connection or protocol error, a body larger than
    MAX_RESPONSE_BYTES or a non-2xx status; messages show ``shown_url``, never ``url``, and
    never any of :func:`request_secrets`.
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
            status, raw = response.status, await _read_limited(response, label)
    except TimeoutError:
        raise AgentError(
            f"{label} backend: no answer from {shown_url} within {timeout_seconds:g} s",
            reason="the agent did not answer in time",
        ) from None
    except aiohttp.ClientError as error:
        raise AgentError(
            f"{label} backend: request to {shown_url} failed: {redact(_describe(error), hidden)}",
            reason="the agent could not be reached",
        ) from None
    if not 200 <= status < 300:
        raise AgentError(
            f"{label} backend: HTTP {status} from {shown_url}: {excerpt(raw, secrets=hidden)}",
            reason=f"the agent did not answer (HTTP {status})",
        )
    return raw


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


async def _read_limited(response: aiohttp.ClientResponse, label: str) -> bytes:
    """The body, refusing to buffer more than MAX_RESPONSE_BYTES."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise AgentError(
                f"{label} backend: response larger than {MAX_RESPONSE_BYTES} bytes",
                reason=UNUSABLE_ANSWER,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(error: aiohttp.ClientError) -> str:
    """A one-line cause that never repeats the full request URL."""
    if isinstance(error, aiohttp.InvalidURL):
        return "invalid URL"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"{type(error).__name__}: {error.status} {error.message}"
    return f"{type(error).__name__}: {error}"
