"""Display names looked up on a platform and kept in a :class:`NameCache`, shared by channels.

A name is cosmetic: a look-up that fails with one of the platform's own errors is logged as
``<platform>.lookup_failed`` and yields None (the message is stored without it); anything else
propagates. Only a non-empty name is cached, so a missing one is asked for again next time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bridge.infra.logs import log_event
from channels.name_cache import NameCache


class NameLookup:
    """Names by key (``user:…``, ``channel:…``), from the cache or fetched on a miss."""

    def __init__(
        self,
        *,
        platform: str,
        ttl_seconds: float,
        errors: tuple[type[BaseException], ...],
        logger: logging.Logger,
        timeout_seconds: float | None = None,
    ) -> None:
        self._platform = platform
        self._errors = errors
        self._timeout = timeout_seconds
        self._logger = logger
        self._cache = NameCache(ttl_seconds=ttl_seconds)

    def cached(self, key: str) -> str | None:
        """The cached name, without a look-up."""
        return self._cache.get(key)

    async def name(self, key: str, fetch: Callable[[], Awaitable[str | None]]) -> str | None:
        """The cached name, else what ``fetch`` finds (within ``timeout_seconds`` if given),
        or None when the look-up failed with one of ``errors`` (include ``TimeoutError`` for
        a timed-out look-up to count as failed rather than propagate)."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            async with asyncio.timeout(self._timeout):
                found = await fetch()
        except self._errors as error:
            log_event(
                self._logger,
                f"{self._platform}.lookup_failed",
                level=logging.WARNING,
                key=key,
                error=str(error),
            )
            return None
        if found:
            self._cache.put(key, found)
        return found
