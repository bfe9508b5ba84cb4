"""Who is really asking: the client's address and the host it asked for, believing forwarding
headers only from the reverse proxies the operator lists in ``http.trusted_proxies``.

Anyone can send ``X-Forwarded-For``; only a proxy we trust appends to it truthfully. So the
chain is read from the right: every address a trusted proxy added is skipped, and the first one
that is not a trusted proxy is the client. Whatever is further left came from the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from aiohttp import web
from multidict import MultiMapping

from bridge.appkeys import SETTINGS

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDING_HEADERS = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Real-IP",
)
"""Headers that say a request was relayed (and try to say for whom)."""


def parse_network(entry: str) -> Network:
    """An address or CIDR network; ValueError for anything else."""
    return ipaddress.ip_network(entry.strip(), strict=False)


@lru_cache(maxsize=16)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(parse_network(entry) for entry in entries)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in one hop of a chain: ``1.2.3.4``, ``1.2.3.4:5``, ``[::1]:5``, ``::1``."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return found


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``, also IPv4-mapped)."""
    if host is None:
        return False
    if host == "localhost":
        return True
    found = _address(host if ":" not in host or host.startswith("[") else f"[{host}]")
    return found is not None and found.is_loopback


def _values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every comma-separated item of every line of header ``name``."""
    if isinstance(headers, MultiMapping):
        lines = list(headers.getall(name, []))
    else:
        lines = [value for key, value in headers.items() if key.lower() == name.lower()]
    return [item.strip() for line in lines for item in line.split(",") if item.strip()]


def _forwarded_param(element: str, wanted: str) -> str | None:
    """One parameter (``for``, ``host``, ``proto``) of one ``Forwarded`` element."""
    for pair in element.split(";"):
        key, _, value = pair.partition("=")
        if key.strip().lower() == wanted:
            return value.strip().strip('"')
    return None


def _is_trusted(address: str | None, trusted: Sequence[Network]) -> bool:
    found = _address(address) if address else None
    return found is not None and any(found in network for network in trusted)


def _chain(headers: Mapping[str, str]) -> list[str]:
    """The hops a proxy reported, oldest first: ``Forwarded`` if sent, else X-Forwarded-For."""
    forwarded = _values(headers, "Forwarded")
    if forwarded:
        return [_forwarded_param(element, "for") or "unknown" for element in forwarded]
    return _values(headers, "X-Forwarded-For")


def _plain(hop: str) -> str:
    found = _address(hop)
    return str(found) if found is not None else hop.strip().strip('"')[:100]


def real_client(
    peer: str | None, headers: Mapping[str, str], *, trusted: Iterable[str]
) -> str | None:
    """The client's address: the TCP peer, or, when the peer is a trusted proxy, the
    right-most address in the forwarding chain that is not a trusted proxy (unparsable text
    is returned as it is, cut short: it is nobody's address)."""
    networks = _networks(tuple(trusted))
    if not _is_trusted(peer, networks):
        return peer
    client = peer
    for hop in reversed(_chain(headers)):
        client = _plain(hop)
        if not _is_trusted(client, networks):
            break
    return client


def client_address(request: web.Request) -> str | None:
    """``real_client`` of this request, with the configured trusted proxies."""
    trusted = request.config_dict[SETTINGS].http.trusted_proxies
    return real_client(request.remote, request.headers, trusted=trusted)


def public_host(request: web.Request) -> str | None:
    """The host (``name[:port]``) the client asked for: what the nearest trusted proxy says
    in ``X-Forwarded-Host``/``Forwarded: host=``, else the ``Host`` header."""
    trusted = _networks(tuple(request.config_dict[SETTINGS].http.trusted_proxies))
    if _is_trusted(request.remote, trusted):
        forwarded = _values(request.headers, "Forwarded")
        hosts = [_forwarded_param(element, "host") for element in forwarded]
        named = [host for host in hosts if host] or _values(request.headers, "X-Forwarded-Host")
        if named:
            return named[-1]
    return request.headers.get("Host")


def forwarding_headers(request: web.Request) -> list[str]:
    """The forwarding headers this request carries."""
    return [name for name in FORWARDING_HEADERS if name in request.headers]
