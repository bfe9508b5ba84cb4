"""Hosts and origins as browsers send them, and the live socket's origin policy.

A page may open the WebSocket only from the bridge's own origin (its host as the client asked
for it) or from an origin in ``web.allowed_origins``: a token stolen or leaked to another site
is then useless there. Programs send no ``Origin`` and are not affected.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

from aiohttp import web

from bridge.api.clients import public_host
from bridge.api.errors import ApiError
from bridge.appkeys import SETTINGS

_PORT = re.compile(r"[0-9]{1,5}")
DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]`` or ``[v6][:port]`` as (lowercase host, port); None if malformed."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket:
            return None
    else:
        host, colon, port = value.rpartition(":")
        host, rest = (host, colon + port) if colon else (value, "")
        if ":" in host:  # an IPv6 address must be in brackets
            return None
    if not host or any(c in host for c in "/@?#[] \t"):
        return None
    if not rest:
        return host.lower(), None
    if rest[0] != ":" or not _PORT.fullmatch(rest[1:]) or int(rest[1:]) > 65535:
        return None
    return host.lower(), int(rest[1:])


def parse_origin(origin: str) -> SplitResult | None:
    """The ``Origin`` header as sent by a browser (``scheme://host[:port]``, nothing more);
    None for ``null`` and anything malformed."""
    parts = urlsplit(origin)
    if parts.scheme not in DEFAULT_PORTS or origin != f"{parts.scheme}://{parts.netloc}":
        return None
    if "@" in parts.netloc or split_host(parts.netloc) is None:
        return None
    return parts


def origin_matches_host(origin: str, host: str | None) -> bool:
    """The origin names the same host and port as ``host`` (a ``Host`` header's value).

    Like most servers, this ignores the scheme: behind a TLS-terminating proxy the bridge
    itself speaks plain HTTP, and a page of another scheme on the very same host and port is
    not another site."""
    parts = parse_origin(origin)
    if parts is None or host is None:
        return False
    asked = split_host(host)
    offered = split_host(parts.netloc)
    return asked is not None and asked == offered


def check_socket_origin(request: web.Request) -> None:
    """Refuse (403, before any upgrade) a WebSocket opened by another site's page."""
    origin = request.headers.get("Origin")
    if origin is None:
        return  # not a browser: nothing to protect the user from
    allowed = request.config_dict[SETTINGS].web.allowed_origins
    if origin.lower() in allowed or origin_matches_host(origin, public_host(request)):
        return
    raise ApiError(
        403,
        "origin_not_allowed",
        f"pages of {origin[:100]!r} may not open the live socket; list the origin in "
        "web.allowed_origins",
    )
