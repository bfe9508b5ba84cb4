"""Display names fetched from a platform, kept for a while.

Only cosmetic data lives here: a miss costs a lookup, never correctness. Keys come from
outside (every user or chat that writes), so the cache is bounded both ways: an entry
expires ``ttl_seconds`` after it was fetched, and past ``max_entries`` the least recently
used one goes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import ClassVar


class NameCache:
    """Names by key (user or chat id), each kept for ``ttl_seconds``, at most ``max_entries``."""

    DEFAULT_MAX_ENTRIES: ClassVar[int] = 10_000

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._clock = clock
        # Least recently used first; each value is (fetched at, name).
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._expired(entry[0]):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, value: str) -> None:
        # Sweep expired entries off the cold end: amortised O(1), never a full scan.
        while self._entries and self._expired(next(iter(self._entries.values()))[0]):
            self._entries.popitem(last=False)
        self._entries[key] = (self._clock(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def _expired(self, fetched_at: float) -> bool:
        return self._clock() - fetched_at > self._ttl
