"""Agent backends, chosen by name in each agent's settings."""

from __future__ import annotations

import aiohttp

from bridge.agents.base import AgentBackend, AgentError, AgentRequest, HistoryMessage
from bridge.agents.echo import EchoBackend
from bridge.agents.openai import OpenAIBackend
from bridge.agents.webhook import WebhookBackend
from bridge.settings import AgentSettings

__all__ = ["AgentBackend", "AgentError", "AgentRequest", "HistoryMessage", "build_backend"]


def build_backend(agent: AgentSettings, *, http: aiohttp.ClientSession) -> AgentBackend:
    """The backend an agent's settings name. ``http`` is shared and owned by the app."""
    if agent.backend == "openai":
        assert agent.openai is not None
        return OpenAIBackend(settings=agent.openai, http=http)
    if agent.backend == "webhook":
        assert agent.webhook is not None
        return WebhookBackend(settings=agent.webhook, http=http)
    return EchoBackend()
