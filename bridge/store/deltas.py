"""Reply text as it is written, for live web clients of every process: never stored.

A delta is the whole text so far of the reply to one message. On PostgreSQL it travels as
``NOTIFY bridge_delta`` (in pieces: a payload holds at most 8,000 bytes; the pieces of one
delta are sent in one transaction, so they arrive together and in order); on SQLite, which runs
in one process, it goes straight to the subscribers. A lost delta is harmless: the next one
carries the whole text again, and the stored reply follows as a ``message.created`` change.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.infra.logs import log_event

logger = logging.getLogger(__name__)

DELTA_CHANNEL = "bridge_delta"
PIECE_CHARS = 1_500
"""Characters of text per NOTIFY payload: at most 4 bytes each in UTF-8, well under 8,000."""
MAX_ASSEMBLING = 256
"""Deltas whose pieces are being put together, at most (the oldest incomplete one is dropped)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Delta:
    session_id: int
    reply_to: int
    text: str


Subscriber = Callable[[Delta], Awaitable[None]]


class DeltaBus:
    """Publishes deltas to every process's subscribers (the live hub of each)."""

    def __init__(self, *, engine: AsyncEngine | None) -> None:
        """``engine``: the PostgreSQL engine to NOTIFY through; None in a single process."""
        self._engine = engine
        self._subscribers: list[Subscriber] = []
        self._assembling: OrderedDict[str, list[str | None]] = OrderedDict()

    @property
    def subscribed(self) -> bool:
        return bool(self._subscribers) or self._engine is not None

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    async def publish(self, delta: Delta) -> None:
        if self._engine is None:
            await self._deliver(delta)
            return
        key = secrets.token_hex(4)
        pieces = [
            delta.text[start : start + PIECE_CHARS]
            for start in range(0, max(1, len(delta.text)), PIECE_CHARS)
        ]
        payloads = [
            json.dumps(
                {
                    "k": key,
                    "s": delta.session_id,
                    "r": delta.reply_to,
                    "i": index,
                    "n": len(pieces),
                    "t": piece,
                },
                ensure_ascii=False,
            )
            for index, piece in enumerate(pieces)
        ]
        async with self._engine.begin() as connection:
            for payload in payloads:
                await connection.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": DELTA_CHANNEL, "payload": payload},
                )

    async def receive(self, payload: str) -> None:
        """One NOTIFY payload (from the listener); a delta is delivered once all its pieces
        are in."""
        try:
            piece = json.loads(payload)
            key, index, count = str(piece["k"]), int(piece["i"]), int(piece["n"])
            parts = self._assembling.setdefault(key, [None] * count)
            parts[index] = str(piece["t"])
            if len(self._assembling) > MAX_ASSEMBLING:
                self._assembling.popitem(last=False)
            if any(part is None for part in parts):
                return
            del self._assembling[key]
            delta = Delta(
                session_id=int(piece["s"]),
                reply_to=int(piece["r"]),
                text="".join(part or "" for part in parts),
            )
        except (ValueError, KeyError, IndexError, TypeError) as error:
            log_event(logger, "delta.unreadable", level=logging.WARNING, error=str(error))
            return
        await self._deliver(delta)

    async def _deliver(self, delta: Delta) -> None:
        for subscriber in list(self._subscribers):
            try:
                await subscriber(delta)
            except Exception as error:
                log_event(
                    logger, "delta.subscriber_failed", level=logging.WARNING, error=str(error)
                )
