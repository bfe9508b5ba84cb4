"""Agent backends, chosen by name in each agent's settings."""

from __future__ import annotations

import os

import aiohttp

from bridge.agents.base import AgentBackend, AgentError, AgentRequest, HistoryMessage
from bridge.agents.echo import EchoBackend
from bridge.agents.openai import OpenAIBackend
from bridge.agents.webhook import WebhookBackend
from bridge.files.settings import FilesSettings
from bridge.infra.redact import url_secrets
from bridge.settings import AgentSettings

__all__ = [
    "AgentBackend",
    "AgentError",
    "AgentRequest",
    "HistoryMessage",
    "build_backend",
    "settings_secrets",
]


def build_backend(
    agent: AgentSettings, *, http: aiohttp.ClientSession, files: FilesSettings | None = None
) -> AgentBackend:
    """The backend an agent's settings name. ``http`` is shared and owned by the app;
    ``files`` bounds the files an answer may carry."""
    if agent.backend == "openai":
        assert agent.openai is not None
        return OpenAIBackend(settings=agent.openai, http=http)
    if agent.backend == "webhook":
        assert agent.webhook is not None
        return WebhookBackend(settings=agent.webhook, http=http, files=files)
    return EchoBackend(
        chunk_chars=agent.echo_stream_chunk_chars, delay_ms=agent.echo_stream_delay_ms
    )


def settings_secrets(agent: AgentSettings) -> list[str]:
    """The secrets an agent's backend settings hold, to take out of any text about it: the
    API key (read now, as the backend reads it), the webhook secret, URL credentials."""
    found: list[str] = []
    if agent.openai is not None:
        found.extend(url_secrets(agent.openai.base_url.get_secret_value()))
        key = os.environ.get(agent.openai.api_key_env, "").strip()
        if key:
            found.append(key)
    if agent.webhook is not None:
        found.extend(url_secrets(agent.webhook.url.get_secret_value()))
        found.append(agent.webhook.secret.get_secret_value())
    return found
