"""The default backend: answers with exactly the user's text (the bot mention already removed).

With ``chunk_chars`` above 0 it streams the text in pieces of that many characters,
``delay_ms`` apart (the agent settings ``echo_stream_chunk_chars`` and
``echo_stream_delay_ms``), which shows how streamed replies look without a model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from bridge.agents.base import AgentRequest


class EchoBackend:
    def __init__(self, *, chunk_chars: int = 0, delay_ms: int = 0) -> None:
        if chunk_chars < 0 or delay_ms < 0:
            raise ValueError("chunk_chars and delay_ms must not be negative")
        self._chunk_chars = chunk_chars
        self._delay_seconds = delay_ms / 1000

    async def answer(self, request: AgentRequest) -> AsyncIterator[str]:
        text = request.text
        size = self._chunk_chars
        if size == 0 or len(text) <= size:
            yield text
            return
        for start in range(0, len(text), size):
            if start and self._delay_seconds > 0:
                await asyncio.sleep(self._delay_seconds)
            yield text[start : start + size]

    async def aclose(self) -> None:
        return None
