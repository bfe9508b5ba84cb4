"""Display names fetched from a platform, kept for a while.

Only cosmetic data lives here: a miss costs a lookup, never correctness.
"""

from __future__ import annotations

import time


class NameCache:
    """Names by key (user or chat id), each kept for ``ttl_seconds``."""

    def __init__(self, *, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._entries: dict[str, tuple[float, str]] = {}

    def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > self._ttl:
            return None
        return entry[1]

    def put(self, key: str, value: str) -> None:
        self._entries[key] = (time.monotonic(), value)
