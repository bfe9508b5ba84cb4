"""A strict local fake of an OpenAI-compatible ``POST /v1/chat/completions`` endpoint.

Strict so that tests catch what the real API would refuse: it checks the bearer token, the
JSON content type, the request's keys and the shape of every message, and answers mistakes
with OpenAI's error document ``{"error": {"message", "type", "param", "code"}}``.
Every request is recorded (headers, raw body, parsed JSON, the status answered).

Scriptable, first in first out, one scripted answer per accepted request:
:meth:`add_reply` (canned completions, ``None`` gives ``content: null``), :meth:`fail_next`
(the next N calls answer an error status), :meth:`garbage_next` (a non-JSON body),
:meth:`raw_next` (any JSON document). ``delay_seconds`` holds every answer back; it is cut
short by :meth:`stop`, so a timed-out test does not wait for the delay at teardown.
When the script is empty the answer is ``default_reply``.

Usage::

    async with FakeOpenAIServer(api_key="sk-test") as fake:
        settings = OpenAIBackendSettings(base_url=fake.url, model="gpt-test")
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.server import Canned, LocalServer, RecordedRequest

__all__ = ["FakeOpenAIServer", "RecordedRequest"]

_ROLES = frozenset({"system", "user", "assistant"})
_MESSAGE_KEYS = frozenset({"role", "content", "name"})
_REQUEST_KEYS = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "max_tokens",
        "top_p",
        "n",
        "stop",
        "user",
        "stream",
        "presence_penalty",
        "frequency_penalty",
        "seed",
    }
)


@dataclass(frozen=True, slots=True)
class _Reply:
    content: str | None


@dataclass(frozen=True, slots=True)
class _Error:
    status: int
    message: str


_Action = _Reply | _Error


class _Rejected(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class FakeOpenAIServer(LocalServer[_Action]):
    """An aiohttp server on 127.0.0.1 and a free port; ``url`` is the ``base_url`` (…/v1)."""

    def __init__(
        self,
        *,
        api_key: str = "sk-fake-test-key",
        expected_model: str | None = None,
        default_reply: str = "Hello from the fake model.",
    ) -> None:
        super().__init__(route="/v1/chat/completions", url_path="/v1")
        self.api_key = api_key
        self.expected_model = expected_model
        self.default_reply = default_reply
        self._ids = itertools.count(1)

    # --- scripting -------------------------------------------------------------------------

    def add_reply(self, *contents: str | None) -> None:
        """Queue canned completions; ``None`` answers ``"content": null``."""
        self._script.extend(_Reply(content) for content in contents)

    def fail_next(
        self, count: int = 1, *, status: int = 500, message: str = "The server had an error."
    ) -> None:
        """The next ``count`` accepted calls answer ``status`` with OpenAI's error shape."""
        self._script.extend(_Error(status, message) for _ in range(count))

    def garbage_next(
        self, count: int = 1, *, body: bytes = b"<html>502 Bad Gateway</html>", status: int = 200
    ) -> None:
        """The next ``count`` accepted calls answer a body that is not JSON."""
        self._garbage_next(count, body=body, status=status)

    # --- the endpoint ----------------------------------------------------------------------

    def _respond(self, request: web.Request, record: RecordedRequest) -> web.Response:
        try:
            self._check(request, record)
        except _Rejected as rejected:
            return _error_response(rejected.status, rejected.message, code=rejected.code)
        return self._scripted(record.json)

    def _check(self, request: web.Request, record: RecordedRequest) -> None:
        authorization = request.headers.get("Authorization")
        if authorization is None:
            raise _Rejected(401, "You didn't provide an API key.", code="invalid_api_key")
        if authorization != f"Bearer {self.api_key}":
            raise _Rejected(401, "Incorrect API key provided.", code="invalid_api_key")
        if request.content_type != "application/json":
            raise _Rejected(
                400, f"Content-Type must be application/json, not {request.content_type}"
            )
        data = record.json
        if not isinstance(data, dict):
            raise _Rejected(400, "We could not parse the JSON body of your request.")
        unknown = sorted(set(data) - _REQUEST_KEYS)
        if unknown:
            raise _Rejected(400, f"Unrecognized request argument supplied: {unknown[0]}")
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise _Rejected(400, "you must provide a model parameter")
        if self.expected_model is not None and model != self.expected_model:
            raise _Rejected(404, f"The model `{model}` does not exist.", code="model_not_found")
        _check_messages(data.get("messages"))
        _check_options(data)

    def _scripted(self, data: dict[str, Any]) -> web.Response:
        action = self._next_action() or _Reply(self.default_reply)
        if isinstance(action, _Error):
            return _error_response(action.status, action.message)
        if isinstance(action, Canned):
            return action.response()
        return web.json_response(
            {
                "id": f"chatcmpl-fake-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": data["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": action.content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise _Rejected(400, "'messages' must be a non-empty array.")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _Rejected(400, f"{where} must be an object.")
        unknown = sorted(set(message) - _MESSAGE_KEYS)
        if unknown:
            raise _Rejected(400, f"{where}: unrecognized key {unknown[0]!r}.")
        if message.get("role") not in _ROLES:
            raise _Rejected(400, f"{where}.role must be one of system, user, assistant.")
        if not isinstance(message.get("content"), str):
            raise _Rejected(400, f"{where}.content must be a string.")


def _check_options(data: dict[str, Any]) -> None:
    temperature = data.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise _Rejected(400, "temperature must be a number between 0 and 2.")
    max_tokens = data.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise _Rejected(400, "max_tokens must be a positive integer.")
    if data.get("stream"):
        raise _Rejected(400, "This fake does not stream.")


def _error_response(status: int, message: str, *, code: str | None = None) -> web.Response:
    if status == 429:
        kind, code = "requests", code or "rate_limit_exceeded"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status=status,
    )
