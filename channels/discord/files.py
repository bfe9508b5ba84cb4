"""Fetching what people attach on Discord: a GET of the attachment's signed CDN link.

Discord's CDN needs no bot token (discord.py's ``Attachment.read()`` sends none), so none is
sent: the session here has no credentials at all, and only Discord's CDN hosts are fetched
from, whatever the stored link says. The links are signed and expire (``?ex=&is=&hm=``): an
old one answers 404 or 403, which is final. The body is read in chunks and the fetch stops as
soon as it passes ``max_bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import yarl

from bridge.ports.contract import FetchedFile
from bridge.ports.errors import FileFetchError
from channels.discord.settings import DEFAULT_API_BASE_URL

CDN_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
"""The only hosts attachments are fetched from (over HTTPS)."""
CHUNK_BYTES = 64 * 1024
CONNECT_SECONDS = 10.0
READ_SECONDS = 30.0
"""Longest silence while connecting or reading; the caller bounds the whole fetch."""
GONE = "the attachment link expired or the file is gone"


class CdnFiles:
    """One channel's attachment fetches, over its own credential-free aiohttp session.

    ``api_base_url`` is the channel's REST base: when it is not Discord's own (a local test
    server), links to that server's origin are allowed too, as the CDN of that server.
    """

    def __init__(self, *, api_base_url: str) -> None:
        base = api_base_url.rstrip("/")
        self._local_origin = None if base == DEFAULT_API_BASE_URL else yarl.URL(base).origin()
        self._http: aiohttp.ClientSession | None = None

    def allowed(self, url: yarl.URL) -> bool:
        if not url.absolute or url.user is not None or url.password is not None:
            return False
        if url.scheme == "https" and url.host in CDN_HOSTS and url.port == 443:
            return True
        return self._local_origin is not None and url.origin() == self._local_origin

    async def fetch(self, source: Mapping[str, object], *, max_bytes: int) -> FetchedFile:
        link = source.get("url")
        try:
            url = yarl.URL(link) if isinstance(link, str) else None
        except ValueError:
            url = None
        if url is None or not self.allowed(url):
            raise FileFetchError("the attachment link is not on Discord's CDN", permanent=True)
        declared = source.get("size")
        if isinstance(declared, int) and declared > max_bytes:
            raise _too_large(max_bytes)
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=CONNECT_SECONDS, sock_read=READ_SECONDS
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        try:
            async with self._http.get(url, allow_redirects=False) as response:
                _check_status(response.status)
                if (response.content_length or 0) > max_bytes:
                    raise _too_large(max_bytes)
                data = bytearray()
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    data += chunk
                    if len(data) > max_bytes:
                        raise _too_large(max_bytes)
                content_type = response.headers.get("Content-Type")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise FileFetchError(
                f"Discord's CDN could not be reached ({type(error).__name__})"
            ) from error
        kind = content_type.split(";", 1)[0].strip().lower() if content_type else None
        return FetchedFile(data=bytes(data), content_type=kind or None)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def _too_large(max_bytes: int) -> FileFetchError:
    return FileFetchError(f"the file is larger than {max_bytes} bytes", permanent=True)


def _check_status(status: int) -> None:
    if status == 200:
        return
    if status in (403, 404):
        raise FileFetchError(GONE, permanent=True)
    if status == 429 or status >= 500:
        raise FileFetchError(f"Discord's CDN answered {status}; trying again later")
    raise FileFetchError(f"Discord's CDN refused the file ({status})", permanent=True)
