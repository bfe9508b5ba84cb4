"""Downloading a file a Slack message carried (``url_private_download``, ``files:read``).

The bot token goes only to Slack's own file host (:data:`FILE_ORIGINS`) and to the origin of
the channel's ``api_base_url`` (which gets the token on every Web API call anyway; in tests it
is the fake's loopback address). An external file's URL may point anywhere: it is refused
before any request is made, and so is a redirect to any other host. Slack answers a missing or
insufficient token with its HTML login page (status 200): never stored as the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import aiohttp
from yarl import URL

from bridge.ports.contract import FetchedFile
from bridge.ports.errors import FileFetchError

FILE_ORIGINS: tuple[str, ...] = ("https://files.slack.com",)
"""Where Slack serves ``url_private`` / ``url_private_download``: the only hosts (with the
API's own) that ever see the bot token."""

MAX_REDIRECTS = 3
CHUNK_BYTES = 64 * 1024
LOGIN_PAGE = "Slack returned its login page (check the files:read scope)"


def _origin(url: URL) -> str | None:
    if not url.is_absolute() or url.scheme not in ("http", "https") or not url.host:
        return None
    return str(url.origin())


def allowed_origins(api_base_url: str) -> frozenset[str]:
    """:data:`FILE_ORIGINS` and the origin of the Web API the channel already calls."""
    api = _origin(URL(api_base_url))
    return frozenset(FILE_ORIGINS) | ({api} if api else set())


def _checked(raw: object, allowed: Iterable[str]) -> URL:
    """The URL to fetch, or a permanent refusal for one that is not on a Slack host."""
    if not isinstance(raw, str) or not raw:
        raise FileFetchError("the Slack file has no download URL", permanent=True)
    try:
        url = URL(raw)
        origin = _origin(url)
    except ValueError:
        origin = None
    if origin is None or url.user is not None or url.password is not None:
        raise FileFetchError("the Slack file's URL is not a valid web address", permanent=True)
    if origin not in allowed:
        raise FileFetchError(
            f"the file is hosted on {url.host}, not on Slack: not fetched "
            "(the bot token goes to Slack's hosts only)",
            permanent=True,
        )
    return url


async def fetch_slack_file(
    *,
    session: aiohttp.ClientSession,
    token: str,
    source: Mapping[str, object],
    allowed: frozenset[str],
    max_bytes: int,
) -> FetchedFile:
    """The content at ``source["url"]`` (``url_private_download``), at most ``max_bytes``.

    Raises FileFetchError: permanent for a host that is not Slack's, the login page, 4xx,
    a file over ``max_bytes``; transient for 429, 5xx and network errors.
    """
    url = _checked(source.get("url"), allowed)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308):
                    location = response.headers.get("Location", "")
                    try:
                        url = _checked(str(url.join(URL(location))), allowed)
                    except (FileFetchError, ValueError):
                        raise FileFetchError(
                            f"Slack redirected the download away from its file host: {LOGIN_PAGE}",
                            permanent=True,
                        ) from None
                    continue
                return await _read(response, max_bytes)
        raise FileFetchError("Slack redirected the download too many times", permanent=True)
    except (aiohttp.ClientError, TimeoutError) as error:
        raise FileFetchError(f"could not reach Slack: {type(error).__name__}") from None


async def _read(response: aiohttp.ClientResponse, max_bytes: int) -> FetchedFile:
    status = response.status
    if status == 429 or status >= 500:
        retry = response.headers.get("Retry-After")
        wait = f" (Retry-After {retry})" if retry else ""
        raise FileFetchError(f"Slack answered HTTP {status}{wait}")
    if status in (401, 403):
        raise FileFetchError(
            f"Slack refused the file (HTTP {status}; check files:read)", permanent=True
        )
    if status in (404, 410):
        raise FileFetchError(f"the file is gone from Slack (HTTP {status})", permanent=True)
    if status != 200:
        raise FileFetchError(f"Slack answered HTTP {status}", permanent=True)
    content_type = response.headers.get("Content-Type", "")
    if content_type.split(";")[0].strip().lower() == "text/html":
        raise FileFetchError(LOGIN_PAGE, permanent=True)
    too_large = FileFetchError(f"the file is larger than {max_bytes} bytes", permanent=True)
    if response.content_length is not None and response.content_length > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return FetchedFile(data=bytes(body), content_type=content_type or None)
