"""A backend for any OpenAI-compatible ``/chat/completions`` endpoint.

OpenAI, Azure-style proxies, vLLM, Ollama and LiteLLM all speak this shape, so one small
client covers most hosted and self-hosted models. The API key is read from the environment
variable the settings name, at call time, so keys never sit in the config file and can be
rotated without a restart.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from bridge.agents.base import AgentError, AgentRequest
from bridge.agents.http import MAX_RESPONSE_BYTES, display_url, post_for_reply, snippet
from bridge.settings import OpenAIBackendSettings

__all__ = ["MAX_RESPONSE_BYTES", "OpenAIBackend", "build_messages", "build_payload"]


def build_messages(request: AgentRequest) -> list[dict[str, str]]:
    """The ``messages`` list: system prompt (if any), the history window, the new message.

    Chat-completions has no notion of several human speakers, so in a group chat each user
    turn whose speaker is known is written as ``"Name: text"`` (history and the new message
    alike); the model can then tell people apart. Assistant turns and one-to-one chats are
    sent unchanged.
    """
    messages: list[dict[str, str]] = []
    if request.system_prompt.strip():
        messages.append({"role": "system", "content": request.system_prompt})
    for item in request.history:
        content = item.content
        if request.is_group and item.role == "user" and item.sender_name:
            content = f"{item.sender_name}: {content}"
        messages.append({"role": item.role, "content": content})
    text = request.text
    if request.is_group and request.sender.display_name:
        text = f"{request.sender.display_name}: {text}"
    messages.append({"role": "user", "content": text})
    return messages


def build_payload(settings: OpenAIBackendSettings, request: AgentRequest) -> dict[str, Any]:
    """The request body; optional sampling options are sent only when configured."""
    payload: dict[str, Any] = {"model": settings.model, "messages": build_messages(request)}
    if settings.temperature is not None:
        payload["temperature"] = settings.temperature
    if settings.max_tokens is not None:
        payload["max_tokens"] = settings.max_tokens
    return payload


class OpenAIBackend:
    """Answers with one chat completion; the shared ``http`` session belongs to the app."""

    def __init__(self, *, settings: OpenAIBackendSettings, http: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._http = http
        self._url = f"{settings.base_url.rstrip('/')}/chat/completions"
        self._shown_url = display_url(self._url)

    async def answer(self, request: AgentRequest) -> AsyncIterator[str]:
        """Yield the whole completion as one chunk; raise AgentError on any failure."""
        api_key = self._api_key()
        body = json.dumps(build_payload(self._settings, request), ensure_ascii=False).encode()
        raw = await post_for_reply(
            self._http,
            url=self._url,
            shown_url=self._shown_url,
            body=body,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            timeout_seconds=self._settings.timeout_seconds,
            label="openai",
        )
        yield _parse_reply(raw)

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is owned and closed by the app."""
        return None

    def _api_key(self) -> str:
        # Name the variable, never its value: error messages end up in logs.
        name = self._settings.api_key_env
        key = os.environ.get(name, "").strip()
        if not key:
            raise AgentError(f"openai backend: environment variable {name} is not set or empty")
        return key


def _parse_reply(raw: bytes) -> str:
    """``choices[0].message.content``, which must be a non-empty string."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise AgentError(f"openai backend: response is not JSON: {snippet(raw)}") from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise AgentError(
            f"openai backend: response has no choices[0].message.content: {snippet(raw)}"
        ) from None
    if not isinstance(content, str):
        raise AgentError(
            f"openai backend: choices[0].message.content is {type(content).__name__}, not text"
        )
    if not content.strip():
        raise AgentError("openai backend: the model returned an empty reply")
    return content.strip()
