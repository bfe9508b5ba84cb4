"""What may be stored, logged and shown about a failure: text with every secret taken out.

Upstream error bodies and exception messages are written by someone else and may repeat the
request they answer: its headers (an API key, a signature), its URL (a password, a token in
the query). Every piece of such text passes :func:`redact` before it is stored or logged,
with the exact secrets the request carried and, as a safety net, anything shaped like a
credential. A stored failure is :func:`failure`: a short reason the bridge built (ordinary
users see only that) and a redacted detail for admins.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, urlsplit

__all__ = [
    "REDACTED",
    "config_secrets",
    "excerpt",
    "failure",
    "header_secrets",
    "reason_of",
    "redact",
    "redacted_url",
    "url_secrets",
]

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 4
"""Shorter exact secrets are not searched for: they would blank ordinary words."""
MIN_PATH_TOKEN_CHARS = 16
"""A URL path segment this long is treated as a token (``/hooks/T0/B0/<token>``)."""
_EXCERPT_CHARS = 200
_CONFIG_SECRET_KEY = re.compile(r"(?i)token|secret|key|passw|credential")
_NOT_SECRET_HEADERS = frozenset(
    {"accept", "content-type", "content-length", "user-agent", "x-bridge-timestamp"}
)

_CREDENTIAL_NAME = (
    r"[\w-]*(?:token(?!s\b)|secret|signature|passw(?:or)?d|api[_-]?key|apikey|authorization"
    r"|credential|cookie)[\w-]*|(?<![\w-])(?:key|sig|auth)(?![\w-])"
)
# name, separator, then a quoted value or a bare one (with its auth scheme, if any)
_NAMED_VALUE = re.compile(
    rf"""(?ix)
    (?P<head>(?:{_CREDENTIAL_NAME})\\?["']?\s*[:=]\s*)
    (?:
        (?P<q>\\?["'])(?P<quoted>.*?)(?P=q)
      | (?P<bare>(?:(?:bearer|basic|digest)\s+)?[^\s"'&,;}}\]\\]+)
    )
    """
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # URL credentials: scheme://user:password@host and scheme://token@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@\"'<>]+@"), rf"\1{REDACTED}@"),
    # An auth scheme and its credential wherever it appears
    (re.compile(r"\b([Bb]earer|Basic|Digest)(\s+)[A-Za-z0-9._~+/=-]{6,}"), rf"\1\2{REDACTED}"),
    # Well-known token shapes
    (re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{12,}"), REDACTED),
    (re.compile(r"\bx(?:ox[abeprs]|app)-[A-Za-z0-9-]{8,}"), REDACTED),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), REDACTED),
    (re.compile(r"(?i)\bsha(?:1|256|512)=[0-9a-f]{16,}"), REDACTED),
    (re.compile(r"(?i)(?<![0-9a-z])[0-9a-f]{40,}(?![0-9a-z])"), REDACTED),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without ``secrets`` (in any case, also URL- or JSON-escaped) and without
    anything shaped like a credential: auth headers, ``token=...`` fields, URL passwords,
    API-key and signature shapes."""
    forms = _forms(secrets)
    if forms:
        exact = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
        text = re.sub(exact, REDACTED, text, flags=re.IGNORECASE)
    text = _NAMED_VALUE.sub(_redact_named, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def excerpt(raw: bytes | str, *, secrets: Iterable[str] = (), limit: int = _EXCERPT_CHARS) -> str:
    """The start of an upstream body on one line, redacted, at most ``limit`` characters.

    Redaction runs before the cut, so a secret is never shown in part; a word cut by the
    reading window is dropped, since it could be the first half of a secret.
    """
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    window = limit * 20
    words = text[:window].split()
    if len(text) > window and words:
        words.pop()
    shown = redact(" ".join(words), secrets)
    if not shown:
        return "(empty body)"
    return shown if len(shown) <= limit else shown[:limit] + "…"


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """Every header value a request carried that could be a credential, and its token part
    (``Bearer <token>``, ``sha256=<hex>``)."""
    found: list[str] = []
    for name, value in headers.items():
        if name.lower() in _NOT_SECRET_HEADERS:
            continue
        found.append(value)
        found.append(value.split(maxsplit=1)[-1])
        found.append(value.partition("=")[2])
    return found


def url_secrets(url: str) -> list[str]:
    """What in a URL is a credential: the password (and ``user:password`` as Basic auth sends
    it), a user that is a token, query values and token-sized path segments."""
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return [url]
    found: list[str] = []
    if password:
        found.append(password)
        found.append(base64.b64encode(f"{username or ''}:{password}".encode()).decode())
    elif username:
        found.append(username)
    found.extend(value for _, value in parse_qsl(parts.query, keep_blank_values=True))
    found.extend(
        segment for segment in parts.path.split("/") if len(segment) >= MIN_PATH_TOKEN_CHARS
    )
    return found


def config_secrets(section: Mapping[str, object]) -> list[str]:
    """The credentials in a raw config table (a channel's section): string values whose key
    names one (``bot_token``, ``signing_secret``, ``encrypt_key`` …), in nested tables too."""
    found: list[str] = []
    for key, value in section.items():
        if isinstance(value, Mapping):
            found.extend(config_secrets(value))
        elif isinstance(value, str) and _CONFIG_SECRET_KEY.search(key):
            found.append(value)
    return found


def redacted_url(url: str, *, keep_path: bool) -> str:
    """``url`` for display: never the password or query values; the path only if
    ``keep_path`` (a database name), else ``/…``; the user only next to a password."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if not parts.scheme or "://" not in url:
        return "***"
    userinfo, at, host = parts.netloc.rpartition("@")
    user = ""
    if at:
        name, colon, _ = userinfo.partition(":")
        user = f"{name}:***@" if colon and keep_path else "***@"
    path = parts.path if keep_path else ("/…" if parts.path.strip("/") else "")
    query = ""
    if parts.query:
        keys = [key for key, _ in parse_qsl(parts.query, keep_blank_values=True)]
        query = "?" + "&".join(f"{key}=***" for key in keys) if keep_path else "?…"
    return f"{parts.scheme}://{user}{host}{path}{query}"


def failure(reason: str, detail: str | None = None) -> str:
    """The stored form of a failure: the bridge's one-line ``reason``, then the redacted
    ``detail`` on the next line(s)."""
    return f"{' '.join(reason.split())}\n{detail or ''}"


def reason_of(stored: str) -> str | None:
    """The reason line of a stored :func:`failure`, else None (a one-line text, such as a
    channel's delivery error, is not known to be the bridge's own words)."""
    reason, newline, _ = stored.partition("\n")
    return reason if newline and reason else None


def _forms(secrets: Iterable[str]) -> set[str]:
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) < MIN_SECRET_CHARS:
            continue
        forms.update((secret, quote(secret, safe=""), json.dumps(secret)[1:-1]))
    return {form for form in forms if len(form) >= MIN_SECRET_CHARS}


def _redact_named(match: re.Match[str]) -> str:
    quote_mark = match.group("q")
    if quote_mark is not None:
        return f"{match.group('head')}{quote_mark}{REDACTED}{quote_mark}"
    return f"{match.group('head')}{REDACTED}"
