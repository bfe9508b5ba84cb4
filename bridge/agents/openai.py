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
from yarl import URL

from bridge.agents.base import AgentError, AgentRequest
from bridge.settings import OpenAIBackendSettings

__all__ = ["MAX_RESPONSE_BYTES", "OpenAIBackend", "build_messages", "build_payload"]

# A chat completion is a few KiB; anything far bigger is a broken or hostile server.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_SNIPPET_CHARS = 200


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
        self._shown_url = _display_url(self._url)

    async def answer(self, request: AgentRequest) -> AsyncIterator[str]:
        """Yield the whole completion as one chunk; raise AgentError on any failure."""
        api_key = self._api_key()
        body = json.dumps(build_payload(self._settings, request), ensure_ascii=False).encode()
        status, raw = await self._post(body, api_key)
        if not 200 <= status < 300:
            raise AgentError(
                f"openai backend: HTTP {status} from {self._shown_url}: {_snippet(raw)}"
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

    async def _post(self, body: bytes, api_key: str) -> tuple[int, bytes]:
        timeout = self._settings.timeout_seconds
        try:
            async with self._http.post(
                self._url,
                data=body,
                headers={
                    "Authorization": f"Bearer {api_key}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
                timeout=aiohttp.ClientTimeout(total=timeout),
                # A redirect would replay the key to wherever it points; treat it as an error.
                allow_redirects=False,
            ) as response:
                return response.status, await _read_limited(response)
        except TimeoutError:
            raise AgentError(
                f"openai backend: no answer from {self._shown_url} within {timeout:g} s"
            ) from None
        except aiohttp.ClientError as error:
            raise AgentError(
                f"openai backend: request to {self._shown_url} failed: {_describe(error)}"
            ) from None


def _parse_reply(raw: bytes) -> str:
    """``choices[0].message.content``, which must be a non-empty string."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise AgentError(f"openai backend: response is not JSON: {_snippet(raw)}") from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise AgentError(
            f"openai backend: response has no choices[0].message.content: {_snippet(raw)}"
        ) from None
    if not isinstance(content, str):
        raise AgentError(
            f"openai backend: choices[0].message.content is {type(content).__name__}, not text"
        )
    if not content.strip():
        raise AgentError("openai backend: the model returned an empty reply")
    return content.strip()


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    """The body, refusing to buffer more than MAX_RESPONSE_BYTES."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise AgentError(f"openai backend: response larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _display_url(url: str) -> str:
    """The URL without credentials or query string, safe to put in a log line."""
    try:
        return str(URL(url).with_user(None).with_query(None).with_fragment(None))
    except ValueError:
        return "(invalid URL)"


def _describe(error: aiohttp.ClientError) -> str:
    """A one-line cause that never repeats the full request URL."""
    if isinstance(error, aiohttp.InvalidURL):
        return "invalid URL"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"{type(error).__name__}: {error.status} {error.message}"
    return f"{type(error).__name__}: {error}"


def _snippet(raw: bytes) -> str:
    """The first ~200 characters of a body, on one line, for an error message."""
    text = " ".join(raw.decode("utf-8", "replace").split())
    if not text:
        return "(empty body)"
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "…"
