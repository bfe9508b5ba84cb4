"""A strict local fake of an OpenAI-compatible ``POST /v1/chat/completions`` endpoint.

Strict so that tests catch what the real API would refuse: it checks the bearer token, the
JSON content type, the request's keys and the shape of every message, and answers mistakes
with OpenAI's error document ``{"error": {"message", "type", "param", "code"}}``.
Every request is recorded (headers, raw body, parsed JSON, the status answered).

A user message's ``content`` may be an array of ``text`` and ``image_url`` parts (an image
as a ``data:`` URL with valid base64, or https); :func:`user_parts` reads them back.

Function calling is checked as OpenAI checks it: ``tools`` entries must have the function
shape (a valid name, a JSON-schema ``parameters`` object), ``tool_choice`` needs ``tools``,
an assistant message with ``tool_calls`` must be followed by one ``tool`` message per call
id, and a ``tool`` message must answer a call of the assistant message just before it;
anything else is a 400.

Scriptable, first in first out, one scripted answer per accepted request:
:meth:`add_reply` (canned completions, ``None`` gives ``content: null``),
:meth:`add_tool_calls` (a message with ``tool_calls``; see :class:`ScriptedCall`),
:meth:`add_ask` (one ``ask_agent`` call), :meth:`fail_next` (the next N calls answer an
error status), :meth:`garbage_next` (a non-JSON body), :meth:`raw_next` (any JSON document),
:meth:`echo_request_next` (an error whose body repeats the request's headers and query, as
careless proxies and debug servers do).
A scripted tool call is only given to a request that allows one (``tools`` sent and
``tool_choice`` not ``"none"``), as a real model would; otherwise the fake answers 500 with
``record.error`` set, since the script is wrong, unless the call was scripted with
``ignore_tool_choice=True`` (a server that disregards ``tool_choice``).
``delay_seconds`` holds every answer back; it is cut short by :meth:`stop`, so a timed-out
test does not wait for the delay at teardown. When the script is empty the answer is
``default_reply``.

A request with ``"stream": true`` gets the same scripted answer as server-sent events, as
OpenAI streams it: ``chat.completion.chunk`` events (a first one with the role and empty
content, the content in deltas of ``chunk_chars`` characters, each tool call as a first
fragment with its id and name and then its arguments in pieces of ``chunk_chars``), one with
the ``finish_reason``, one with ``usage`` when ``stream_options.include_usage`` is set, then
``data: [DONE]``. :meth:`add_chunks` scripts the exact content deltas. ``release``, when set
to an event, holds the stream back after its first non-empty content delta until the test
sets it; ``events_sent`` counts the events written so far. :meth:`break_stream_next` cuts the
connection of the next streamed answer after N events, :meth:`end_stream_next` ends it
cleanly but early (no ``finish_reason``, no ``[DONE]``). Canned answers (:meth:`raw_next`,
:meth:`garbage_next`, :meth:`stream_body_next`) and errors are answered as they are,
streamed request or not.

Long-memory folds: with ``fold_marker`` set, a request whose first message is a system
message starting with it is a *fold* (the bridge asking for an updated summary). It is not
answered from the script: it is recorded in :attr:`folds` (the summary it carried and its
transcript lines, parsed from the user message ``"Summary so far:\n<summary or (none
yet)>\n\nNew messages, oldest first:\n<one line a message>"``) and answered, as one JSON
completion, with the previous summary followed by ``[line; line; ...]``: a summary that names
exactly what it was given. :meth:`fail_folds_next` makes the next folds answer 500 instead;
``fold_gate`` holds their answers back until the test sets it.

Usage::

    async with FakeOpenAIServer(api_key="sk-test") as fake:
        settings = OpenAIBackendSettings(base_url=fake.url, model="gpt-test")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from tests.fakes.server import Canned, LocalServer, RecordedRequest

__all__ = [
    "Cut",
    "EventStream",
    "FakeOpenAIServer",
    "Fold",
    "RecordedRequest",
    "ScriptedCall",
    "user_parts",
]

_MESSAGE_KEYS: Mapping[str, frozenset[str]] = {
    "system": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "tool_calls", "refusal"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_CHOICES = frozenset({"none", "auto", "required"})
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
        "stream_options",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
    }
)


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """One tool call for :meth:`FakeOpenAIServer.add_tool_calls`.

    ``arguments`` that are a ``str`` are sent as they are (so a test can send broken JSON);
    anything else is JSON-encoded. ``id`` defaults to a fresh ``call_fake_<n>``.
    """

    name: str
    arguments: Any
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Fold:
    """One fold request: the summary it carried (None: ``(none yet)``), its transcript lines,
    what the fake answered (None: it failed) and the request itself."""

    previous: str | None
    lines: tuple[str, ...]
    answer: str | None
    record: RecordedRequest


@dataclass(frozen=True, slots=True)
class _Reply:
    content: str | None
    chunks: tuple[str, ...] | None = None
    """The exact content deltas when streamed; None splits ``content`` by ``chunk_chars``."""


@dataclass(frozen=True, slots=True)
class Cut:
    """The next streamed answer stops after ``after`` events: ``abort`` cuts the connection,
    ``end`` finishes the body cleanly without the rest."""

    after: int
    how: Literal["abort", "end"]


@dataclass(frozen=True, slots=True)
class _ToolCalls:
    content: str | None
    calls: tuple[dict[str, Any], ...]
    ignore_tool_choice: bool


@dataclass(frozen=True, slots=True)
class _Error:
    status: int
    message: str


@dataclass(frozen=True, slots=True)
class _EchoRequest:
    status: int


_Action = _Reply | _ToolCalls | _Error | _EchoRequest


class EventStream(web.Response):
    """An answer written piece by piece after the fake has recorded it: ``parts`` in order,
    ``pause`` between them, holding after part ``hold_after`` until ``release`` is set, and
    stopping after ``cut.after`` parts when ``cut`` is set. ``sent`` counts the parts written.

    :meth:`LocalServer._respond` returns it like any answer; the fake's ``_handle`` then
    calls :meth:`send`.
    """

    def __init__(
        self,
        parts: Sequence[bytes],
        *,
        content_type: str,
        pause: float = 0.0,
        hold_after: int | None = None,
        release: asyncio.Event | None = None,
        cut: Cut | None = None,
    ) -> None:
        super().__init__(status=200, content_type=content_type)
        self.parts = tuple(parts)
        self.pause = pause
        self.hold_after = hold_after
        self.release = release
        self.cut = cut
        self.sent = 0

    async def send(self, request: web.Request, stopping: asyncio.Event) -> None:
        self.enable_chunked_encoding()
        await self.prepare(request)
        for number, part in enumerate(self.parts):
            if self.cut is not None and number == self.cut.after:
                if self.cut.how == "abort":
                    if request.transport is not None:
                        request.transport.abort()
                    return
                break
            if number and self.pause > 0:
                await _until(stopping, self.pause)
            await self.write(part)
            self.sent += 1
            if number == self.hold_after and self.release is not None:
                await _until(stopping, None, also=self.release)
        await self.write_eof()


async def _until(
    stopping: asyncio.Event, seconds: float | None, *, also: asyncio.Event | None = None
) -> None:
    """Wait ``seconds`` (forever when None) or until ``also`` is set, cut short by ``stopping``."""
    waiters = [asyncio.ensure_future(stopping.wait())]
    if also is not None:
        waiters.append(asyncio.ensure_future(also.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter


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
        fold_marker: str | None = None,
    ) -> None:
        super().__init__(route="/v1/chat/completions", url_path="/v1")
        self.fold_marker = fold_marker
        self.folds: list[Fold] = []
        """Every fold request, in order (see the module docstring)."""
        self._failing_folds = 0
        self.fold_gate: asyncio.Event | None = None
        """When set to an event, a fold's answer (recorded in :attr:`folds` already) waits for
        it; :meth:`stop` cuts the wait short."""
        self.api_key = api_key
        self.expected_model = expected_model
        self.default_reply = default_reply
        self._ids = itertools.count(1)
        self._call_ids = itertools.count(1)
        self.chunk_chars = 4
        """How many characters each streamed content delta or arguments piece carries."""
        self.chunk_delay_seconds = 0.0
        """The pause between streamed events (cut short by :meth:`stop`)."""
        self.release: asyncio.Event | None = None
        """When set, a stream holds after its first non-empty content delta until it is set."""
        self.usage: dict[str, int] = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        self.streams: list[EventStream] = []
        """Every streamed answer, in order; ``sent`` tells how far each has got."""
        self._cuts: list[Cut] = []

    # --- scripting -------------------------------------------------------------------------

    def add_reply(self, *contents: str | None) -> None:
        """Queue canned completions; ``None`` answers ``"content": null``."""
        self._script.extend(_Reply(content) for content in contents)

    def add_chunks(self, *chunks: str) -> None:
        """Queue one completion whose content, when streamed, comes in exactly these deltas."""
        self._script.append(_Reply("".join(chunks), chunks))

    def stream_body_next(self, body: bytes) -> None:
        """The next accepted call answers this ``text/event-stream`` body as it is."""
        self._script.append(Canned(200, body, "text/event-stream"))

    def break_stream_next(self, *, after: int) -> None:
        """The next streamed answer cuts its connection after ``after`` events."""
        self._cuts.append(Cut(after, "abort"))

    def end_stream_next(self, *, after: int) -> None:
        """The next streamed answer ends its body cleanly after ``after`` events, without the
        rest (``finish_reason``, usage, ``[DONE]``)."""
        self._cuts.append(Cut(after, "end"))

    def add_tool_calls(
        self,
        *calls: ScriptedCall,
        content: str | None = None,
        ignore_tool_choice: bool = False,
    ) -> list[str]:
        """Queue one completion whose message calls ``calls``, in order; returns their ids.

        ``content`` is the text beside the calls (usually null). A request that allows no
        tool call gets a 500 instead, unless ``ignore_tool_choice`` is set.
        """
        if not calls:
            raise ValueError("add_tool_calls needs at least one call")
        scripted: tuple[dict[str, Any], ...] = tuple(
            {
                "id": call.id or f"call_fake_{next(self._call_ids)}",
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.arguments
                    if isinstance(call.arguments, str)
                    else json.dumps(call.arguments),
                },
            }
            for call in calls
        )
        self._script.append(_ToolCalls(content, scripted, ignore_tool_choice))
        return [call["id"] for call in scripted]

    def add_ask(self, agent: str, text: str, *, ignore_tool_choice: bool = False) -> str:
        """Queue one completion calling ``ask_agent(agent, text)``; returns the call id."""
        (call_id,) = self.add_tool_calls(
            ScriptedCall("ask_agent", {"agent": agent, "text": text}),
            ignore_tool_choice=ignore_tool_choice,
        )
        return call_id

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

    def fail_folds_next(self, count: int = 1) -> None:
        """The next ``count`` fold requests answer 500 (answers are not affected)."""
        self._failing_folds += count

    @property
    def answers(self) -> list[RecordedRequest]:
        """The requests that were not folds: the answers asked for, in order."""
        folds = {id(fold.record) for fold in self.folds}
        return [record for record in self.requests if id(record) not in folds]

    def echo_request_next(self, count: int = 1, *, status: int = 500) -> None:
        """The next ``count`` accepted calls answer ``status`` with an error document that
        repeats every request header (``Authorization`` included) and the query string."""
        self._script.extend(_EchoRequest(status) for _ in range(count))

    # --- the endpoint ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        response = await super()._handle(request)
        if isinstance(response, EventStream):
            await response.send(request, self._stopping)
        if isinstance(response, _FoldAnswer) and self.fold_gate is not None:
            await _until(self._stopping, None, also=self.fold_gate)
        return response

    def _respond(self, request: web.Request, record: RecordedRequest) -> web.Response:
        try:
            self._check(request, record)
        except _Rejected as rejected:
            record.error = rejected.message
            return _error_response(rejected.status, rejected.message, code=rejected.code)
        if self._is_fold(record.json):
            return self._fold(record)
        echo = self._script[0] if self._script else None
        if isinstance(echo, _EchoRequest):  # needs the request itself, not only its record
            self._script.popleft()
            return _echo_response(request, echo.status)
        return self._scripted(record)

    def _is_fold(self, data: dict[str, Any]) -> bool:
        first = data["messages"][0]
        return (
            self.fold_marker is not None
            and first["role"] == "system"
            and first["content"].startswith(self.fold_marker)
        )

    def _fold(self, record: RecordedRequest) -> web.Response:
        """Record the fold and answer it (see the module docstring)."""
        messages = record.json["messages"]
        if len(messages) != 2 or messages[1]["role"] != "user" or record.json.get("stream"):
            record.error = "fake: a fold is one system and one user message, not streamed"
            return _error_response(400, record.error)
        head, _, transcript = messages[1]["content"].partition(f"\n\n{_FOLD_MESSAGES}\n")
        if not head.startswith(f"{_FOLD_SUMMARY}\n") or not transcript:
            record.error = "fake: the fold's user message does not have the expected shape"
            return _error_response(400, record.error)
        previous = head.removeprefix(f"{_FOLD_SUMMARY}\n")
        lines = tuple(transcript.split("\n"))
        if self._failing_folds:
            self._failing_folds -= 1
            self.folds.append(Fold(_previous(previous), lines, None, record))
            return _error_response(500, "The server had an error while summarizing.")
        answer = " ".join(
            part for part in (_previous(previous), f"[{'; '.join(lines)}]") if part is not None
        )
        self.folds.append(Fold(_previous(previous), lines, answer, record))
        return _FoldAnswer(
            {
                "id": f"chatcmpl-fake-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": record.json["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": dict(self.usage),
            }
        )

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
        _check_tools(data)

    def _scripted(self, record: RecordedRequest) -> web.Response:
        data: dict[str, Any] = record.json
        action = self._next_action() or _Reply(self.default_reply)
        assert not isinstance(action, _EchoRequest), "taken by _respond"
        if isinstance(action, _Error):
            return _error_response(action.status, action.message)
        if isinstance(action, Canned):
            return action.response()
        message: dict[str, Any] = {"role": "assistant", "content": action.content}
        finish_reason = "stop"
        if isinstance(action, _ToolCalls):
            allowed = "tools" in data and data.get("tool_choice") != "none"
            if not allowed and not action.ignore_tool_choice:
                record.error = "fake: a tool call is scripted but the request allows none"
                return _error_response(500, record.error)
            message["tool_calls"] = list(action.calls)
            finish_reason = "tool_calls"
        if data.get("stream") is True:
            return self._stream(data, action, finish_reason)
        return web.json_response(
            {
                "id": f"chatcmpl-fake-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": data["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": dict(self.usage),
            }
        )

    def _stream(
        self, data: dict[str, Any], action: _Reply | _ToolCalls, finish_reason: str
    ) -> EventStream:
        """The answer as OpenAI streams it (see the module docstring)."""
        base = {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": data["model"],
        }

        def event(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {**base, "choices": [choice]}

        content = action.content
        scripted = action.chunks if isinstance(action, _Reply) else None
        chunks: Sequence[str] = self._split(content or "") if scripted is None else scripted
        calls = action.calls if isinstance(action, _ToolCalls) else ()
        first: dict[str, Any] = {
            "role": "assistant",
            "content": "" if content is not None else None,
        }
        events = [event(first)]
        events.extend(event({"content": chunk}) for chunk in chunks if content is not None)
        hold_after = next((number for number, chunk in enumerate(chunks, start=1) if chunk), None)
        for index, call in enumerate(calls):
            function = call["function"]
            opening = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": function["name"], "arguments": ""},
            }
            events.append(event({"tool_calls": [opening]}))
            events.extend(
                event({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in self._split(function["arguments"])
            )
        events.append(event({}, finish_reason))
        options = data.get("stream_options") or {}
        if options.get("include_usage"):
            events.append({**base, "choices": [], "usage": dict(self.usage)})
        parts = [f"data: {json.dumps(item)}\n\n".encode() for item in events]
        parts.append(b"data: [DONE]\n\n")
        stream = EventStream(
            parts,
            content_type="text/event-stream",
            pause=self.chunk_delay_seconds,
            hold_after=hold_after if content is not None else None,
            release=self.release,
            cut=self._cuts.pop(0) if self._cuts else None,
        )
        self.streams.append(stream)
        return stream

    def _split(self, text: str) -> list[str]:
        size = self.chunk_chars
        if size <= 0 or not text:
            return [text] if text else []
        return [text[start : start + size] for start in range(0, len(text), size)]


class _FoldAnswer(web.Response):
    """A fold's JSON answer, told apart so that :attr:`FakeOpenAIServer.fold_gate` holds it."""

    def __init__(self, document: dict[str, Any]) -> None:
        super().__init__(text=json.dumps(document), content_type="application/json")


_FOLD_SUMMARY = "Summary so far:"
_FOLD_MESSAGES = "New messages, oldest first:"
_NO_SUMMARY = "(none yet)"


def _previous(text: str) -> str | None:
    return None if text == _NO_SUMMARY else text


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise _Rejected(400, "'messages' must be a non-empty array.")
    open_calls: set[str] = set()  # the call ids of the last assistant message with tool_calls
    unanswered: list[str] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _Rejected(400, f"{where} must be an object.")
        role = message.get("role")
        if not isinstance(role, str) or role not in _MESSAGE_KEYS:
            raise _Rejected(400, f"{where}.role must be one of system, user, assistant, tool.")
        unknown = sorted(set(message) - _MESSAGE_KEYS[role])
        if unknown:
            raise _Rejected(400, f"{where}: unrecognized key {unknown[0]!r}.")
        if role == "tool":
            _check_tool_message(message, where, open_calls, unanswered)
            continue
        if unanswered:
            raise _Rejected(400, _unanswered_message(unanswered))
        open_calls = set()
        calls = message.get("tool_calls")
        if role == "assistant" and calls is not None:
            unanswered = _check_tool_calls(calls, where)
            open_calls = set(unanswered)
            if message.get("content") is not None and not isinstance(message["content"], str):
                raise _Rejected(400, f"{where}.content must be a string or null.")
        elif role == "user" and isinstance(message.get("content"), list):
            _check_parts(message["content"], where)
        elif not isinstance(message.get("content"), str):
            raise _Rejected(400, f"{where}.content must be a string.")
    if unanswered:
        raise _Rejected(400, _unanswered_message(unanswered))


_DATA_URL = re.compile(r"data:(image/(?:png|jpeg|gif|webp));base64,([A-Za-z0-9+/]*={0,2})")


def _check_parts(parts: list[Any], where: str) -> None:
    """A user message's content parts: ``text`` and ``image_url`` (a ``data:`` URL of a
    supported image type with valid base64, or an https URL), as OpenAI accepts them."""
    if not parts:
        raise _Rejected(400, f"{where}.content: an array of content parts must not be empty.")
    for number, part in enumerate(parts):
        at = f"{where}.content[{number}]"
        if not isinstance(part, dict):
            raise _Rejected(400, f"{at} must be an object.")
        if part.get("type") == "text":
            if set(part) != {"type", "text"} or not isinstance(part["text"], str):
                raise _Rejected(400, f"{at}: a text part is {{type, text}} with text a string.")
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            if (
                set(part) != {"type", "image_url"}
                or not isinstance(image, dict)
                or not set(image) <= {"url", "detail"}
                or not isinstance(image.get("url"), str)
                or image.get("detail", "auto") not in ("auto", "low", "high")
            ):
                raise _Rejected(400, f"{at}: an image part is {{type, image_url: {{url}}}}.")
            url = image["url"]
            if not url.startswith("https://"):
                matched = _DATA_URL.fullmatch(url)
                if matched is None:
                    raise _Rejected(400, f"{at}: Invalid image URL (a data URL or https).")
                try:
                    base64.b64decode(matched[2], validate=True)
                except ValueError:
                    raise _Rejected(400, f"{at}: Invalid base64 image data.") from None
        else:
            raise _Rejected(400, f"{at}.type must be text or image_url.")


def user_parts(record: RecordedRequest) -> tuple[str, list[tuple[str, bytes]]]:
    """The last user message of a recorded request: its text (the text parts joined) and
    its images as (media type, decoded bytes), in order."""
    last = [m for m in record.json["messages"] if m["role"] == "user"][-1]
    content = last["content"]
    if isinstance(content, str):
        return content, []
    texts = [part["text"] for part in content if part["type"] == "text"]
    images = []
    for part in content:
        if part["type"] == "image_url":
            matched = _DATA_URL.fullmatch(part["image_url"]["url"])
            assert matched is not None
            images.append((matched[1], base64.b64decode(matched[2])))
    return "".join(texts), images


def _check_tool_calls(calls: Any, where: str) -> list[str]:
    """The ids of an assistant message's ``tool_calls``, which must have the right shape."""
    if not isinstance(calls, list) or not calls:
        raise _Rejected(400, f"{where}.tool_calls must be a non-empty array.")
    ids: list[str] = []
    for number, call in enumerate(calls):
        at = f"{where}.tool_calls[{number}]"
        if not isinstance(call, dict) or set(call) != {"id", "type", "function"}:
            raise _Rejected(400, f"{at} must have exactly id, type and function.")
        function = call["function"]
        if (
            not isinstance(call["id"], str)
            or call["type"] != "function"
            or not isinstance(function, dict)
            or set(function) != {"name", "arguments"}
            or not isinstance(function["name"], str)
            or not isinstance(function["arguments"], str)
        ):
            raise _Rejected(400, f"{at}: expected a function call with name and arguments text.")
        ids.append(call["id"])
    return ids


def _check_tool_message(
    message: dict[str, Any], where: str, open_calls: set[str], unanswered: list[str]
) -> None:
    if not open_calls:
        raise _Rejected(
            400,
            "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
            "message with 'tool_calls'.",
        )
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise _Rejected(400, f"Missing required parameter: '{where}.tool_call_id'.")
    if call_id not in open_calls:
        raise _Rejected(
            400,
            f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls' of "
            "previous message.",
        )
    if call_id in unanswered:
        unanswered.remove(call_id)
    if not isinstance(message.get("content"), str):
        raise _Rejected(400, f"{where}.content must be a string.")


def _unanswered_message(unanswered: list[str]) -> str:
    return (
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(unanswered)
    )


def _check_tools(data: dict[str, Any]) -> None:
    tool_choice = data.get("tool_choice")
    if "tools" not in data:
        if tool_choice is not None:
            raise _Rejected(
                400,
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
                "are specified.",
            )
        return
    tools = data["tools"]
    if not isinstance(tools, list) or not tools:
        raise _Rejected(400, "Invalid 'tools': expected a non-empty array.")
    names: set[str] = set()
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or set(tool) != {"type", "function"}:
            raise _Rejected(400, f"Invalid '{where}': expected exactly 'type' and 'function'.")
        if tool["type"] != "function":
            raise _Rejected(400, f"Invalid value for '{where}.type': expected 'function'.")
        function = tool["function"]
        if not isinstance(function, dict):
            raise _Rejected(400, f"Missing required parameter: '{where}.function'.")
        unknown = sorted(set(function) - {"name", "description", "parameters", "strict"})
        if unknown:
            raise _Rejected(400, f"Unrecognized parameter: '{where}.function.{unknown[0]}'.")
        name = function.get("name")
        if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
            raise _Rejected(
                400,
                f"Invalid '{where}.function.name': string does not match pattern. Expected a "
                "string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
            )
        if name in names:
            raise _Rejected(400, f"Duplicate function name in 'tools': {name}.")
        names.add(name)
        if not isinstance(function.get("description", ""), str):
            raise _Rejected(400, f"Invalid type for '{where}.function.description'.")
        if "parameters" in function:
            _check_schema(function["parameters"], f"Invalid schema for function '{name}'")
    if isinstance(tool_choice, str):
        if tool_choice not in _TOOL_CHOICES:
            raise _Rejected(400, f"Invalid value for 'tool_choice': {tool_choice!r}.")
    elif tool_choice is not None and not (
        isinstance(tool_choice, dict)
        and tool_choice.get("type") == "function"
        and isinstance(tool_choice.get("function"), dict)
        and tool_choice["function"].get("name") in names
    ):
        raise _Rejected(400, "Invalid value for 'tool_choice'.")


def _check_schema(schema: Any, prefix: str) -> None:
    """``parameters``: a JSON schema of ``type: object`` whose ``required`` keys it defines."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise _Rejected(400, f"{prefix}: schema must be a JSON Schema of 'type: \"object\"'.")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict) or not all(
        isinstance(value, dict) and isinstance(value.get("type"), str)
        for value in properties.values()
    ):
        raise _Rejected(400, f"{prefix}: 'properties' must map names to schemas with a type.")
    for key, value in properties.items():
        enum = value.get("enum")
        if enum is not None and (not isinstance(enum, list) or not enum):
            raise _Rejected(400, f"{prefix}: 'enum' of {key!r} must be a non-empty array.")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(key in properties for key in required):
        raise _Rejected(400, f"{prefix}: 'required' names a property that is not defined.")
    if not isinstance(schema.get("additionalProperties", False), bool):
        raise _Rejected(400, f"{prefix}: 'additionalProperties' must be a boolean.")


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
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise _Rejected(400, "'stream' must be a boolean.")
    options = data.get("stream_options")
    if options is not None:
        if not stream:
            raise _Rejected(
                400, "The 'stream_options' parameter is only allowed when 'stream' is enabled."
            )
        if (
            not isinstance(options, dict)
            or set(options) - {"include_usage"}
            or not isinstance(options.get("include_usage", False), bool)
        ):
            raise _Rejected(400, "Invalid 'stream_options': expected {'include_usage': bool}.")


def _echo_response(request: web.Request, status: int) -> web.Response:
    """An error that tells too much: the request as the server saw it."""
    headers = "; ".join(f"{name}: {value}" for name, value in request.headers.items())
    return web.json_response(
        {
            "error": {
                "message": f"upstream failed for {request.path_qs} with headers {headers}",
                "type": "server_error",
                "param": None,
                "code": None,
            },
            "request": {"headers": dict(request.headers), "query": request.query_string},
        },
        status=status,
    )


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
