"""The default backend: answers with exactly the user's text (the bot mention already removed)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from bridge.agents.base import AgentRequest


class EchoBackend:
    async def answer(self, request: AgentRequest) -> AsyncIterator[str]:
        yield request.text

    async def aclose(self) -> None:
        return None
