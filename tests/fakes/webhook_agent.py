"""A strict local fake of a webhook agent: the receiving end of ``bridge.agents.webhook``.

It does what a careful receiver should: checks the JSON content type, recomputes the
signature with :func:`bridge.agents.webhook.sign` over the exact body bytes and compares it
with :func:`hmac.compare_digest`, refuses timestamps more than ``max_skew_seconds`` away from
its clock (401), and checks every key and type of the body (400), including the optional
``attachments`` list (absolute ``url`` or a ``reason``). Errors are
``{"error": "<reason>"}``. Every request is recorded, accepted or not, with the reason it was
refused.

Scriptable, first in first out, one scripted answer per accepted request:
:meth:`add_reply` (``{"reply": text}``), :meth:`fail_next` (an error status),
:meth:`garbage_next` (a non-JSON body), :meth:`raw_next` (any JSON document),
:meth:`echo_request_next` (an error whose body repeats the request's headers and query, as
careless receivers do), :meth:`add_stream` (the reply streamed as NDJSON deltas, with pauses,
held after the first delta until ``release`` is set, optionally without ``{"done": true}``
or cut off), :meth:`add_lines` (NDJSON-typed lines exactly as given, to stream broken ones).
``streams`` keeps every streamed answer, whose ``sent`` counts the lines written so far.
Answers with files: :meth:`add_reply` and :meth:`add_stream` take ``attachments`` (the
answer's ``"attachments"`` list, beside ``reply`` or on the done line), built with
:func:`inline_file` (base64) or :meth:`linked_file` (a URL on this server, which serves
``files`` at ``GET /files/<name>`` and records each fetch in ``file_fetches``).
``delay_seconds`` holds every answer back and is cut short by :meth:`stop`. With an empty
script the answer is ``reply_with(body)`` when set, else ``{"reply": "echo: <message text>"}``.

Usage::

    async with FakeWebhookAgent(secret="s3cret") as fake:
        settings = WebhookBackendSettings(url=fake.url, secret="s3cret")
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from bridge.agents.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.fakes.base import serve_on_loopback
from tests.fakes.openai_server import Cut, EventStream
from tests.fakes.server import Canned, LocalServer, RecordedRequest

__all__ = ["FakeWebhookAgent", "RecordedRequest", "inline_file"]


def inline_file(name: str, data: bytes, content_type: str | None = None) -> dict[str, Any]:
    """An answer's file given inline: ``{"name", "content_type"?, "data_base64"}``."""
    item: dict[str, Any] = {"name": name, "data_base64": base64.b64encode(data).decode()}
    if content_type is not None:
        item["content_type"] = content_type
    return item


class _Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# The body's exact shape: key -> allowed types, nested for objects.
_Shape = dict[str, Any]
_OPTIONAL_STR = (str, type(None))
_BODY_SHAPE: _Shape = {
    "agent": {"slug": (str,), "name": (str,)},
    "session": {
        "id": (int,),
        "external_conv_id": (str,),
        "channel": (str,),
        "is_group": (bool,),
        "group_name": _OPTIONAL_STR,
    },
    "sender": {"external_id": (str,), "display_name": _OPTIONAL_STR, "kind": (str,)},
    "message": {"id": (int,), "text": (str,)},
    "history": (list,),
    "system_prompt": (str,),
}
_HISTORY_SHAPE: _Shape = {"role": (str,), "content": (str,), "sender_name": _OPTIONAL_STR}
_ATTACHMENT_SHAPE: _Shape = {
    "id": (int,),
    "name": (str,),
    "content_type": _OPTIONAL_STR,
    "size": (int, type(None)),
    "url": _OPTIONAL_STR,
    "reason": _OPTIONAL_STR,
}


@dataclass(frozen=True, slots=True)
class _EchoRequest:
    status: int


@dataclass(frozen=True, slots=True)
class _Stream:
    lines: tuple[bytes, ...]
    pause: float
    cut: Cut | None


class FakeWebhookAgent(LocalServer[_EchoRequest | _Stream]):
    """An aiohttp server on 127.0.0.1 and a free port; ``url`` is the webhook URL."""

    def __init__(
        self,
        *,
        secret: str | bytes,
        max_skew_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(route="/agent", url_path="/agent")
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.max_skew_seconds = max_skew_seconds
        self.clock = clock
        self.reply_with: Callable[[dict[str, Any]], str] | None = None
        """Computes the answer from the request body when nothing is scripted (an agent
        with behaviour of its own, such as one that always mentions another)."""
        self.release: asyncio.Event | None = None
        """When set, a streamed answer holds after its first line until it is set."""
        self.streams: list[EventStream] = []
        self.files: dict[str, tuple[bytes, str]] = {}
        """Served at ``GET /files/<name>``: name -> (content, content type)."""
        self.file_fetches: list[str] = []
        """The name of each file fetched, in order (unknown ones too)."""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(self._route, self._handle)
        app.router.add_get("/files/{name}", self._serve_file)
        self._runner, port = await serve_on_loopback(app)
        self._url = f"http://127.0.0.1:{port}{self._url_path}"

    def linked_file(self, name: str, *, content_type: str | None = None) -> dict[str, Any]:
        """An answer's file given by URL on this server: ``{"name", "url"}``."""
        item: dict[str, Any] = {"name": name, "url": self.url.replace("/agent", f"/files/{name}")}
        if content_type is not None:
            item["content_type"] = content_type
        return item

    async def _serve_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.file_fetches.append(name)
        if name not in self.files:
            return web.json_response({"error": "no such file"}, status=404)
        data, content_type = self.files[name]
        return web.Response(body=data, content_type=content_type)

    # --- scripting -------------------------------------------------------------------------

    def add_reply(self, *replies: str, attachments: list[dict[str, Any]] | None = None) -> None:
        """Queue canned ``{"reply": ...}`` answers (each with ``attachments``, when given)."""
        for reply in replies:
            extra = {} if attachments is None else {"attachments": attachments}
            self.raw_next({"reply": reply, **extra})

    def add_stream(
        self,
        *deltas: str,
        pause_seconds: float = 0.0,
        done: bool = True,
        cut: Literal["abort", "end"] | None = None,
        cut_after: int = 0,
        attachments: list[dict[str, Any]] | None = None,
    ) -> None:
        """Queue one reply streamed as NDJSON: ``{"delta": d}`` per delta, then
        ``{"done": true}`` (with ``attachments``, when given) unless ``done`` is false,
        ``pause_seconds`` between lines (cut short by :meth:`stop`). ``cut`` stops after
        ``cut_after`` lines: ``"abort"`` cuts the connection, ``"end"`` ends the body cleanly."""
        lines = [json.dumps({"delta": delta}).encode() for delta in deltas]
        if done:
            extra = {} if attachments is None else {"attachments": attachments}
            lines.append(json.dumps({"done": True, **extra}).encode())
        self.add_lines(*lines, pause_seconds=pause_seconds, cut=cut, cut_after=cut_after)

    def add_lines(
        self,
        *lines: bytes,
        pause_seconds: float = 0.0,
        cut: Literal["abort", "end"] | None = None,
        cut_after: int = 0,
    ) -> None:
        """Queue one ``application/x-ndjson`` answer of exactly these lines (each ended by
        a newline); see :meth:`add_stream` for the options."""
        self._script.append(
            _Stream(
                tuple(line + b"\n" for line in lines),
                pause_seconds,
                cut=None if cut is None else Cut(cut_after, cut),
            )
        )

    def fail_next(self, count: int = 1, *, status: int = 500, error: str = "agent crashed") -> None:
        """The next ``count`` accepted calls answer ``status`` with ``{"error": ...}``."""
        body = json.dumps({"error": error}).encode()
        self._script.extend(Canned(status, body, "application/json") for _ in range(count))

    def garbage_next(
        self, count: int = 1, *, body: bytes = b"<html>oops</html>", status: int = 200
    ) -> None:
        """The next ``count`` accepted calls answer a body that is not JSON."""
        self._garbage_next(count, body=body, status=status)

    def echo_request_next(self, count: int = 1, *, status: int = 500) -> None:
        """The next ``count`` accepted calls answer ``status`` with ``{"error": ...}`` that
        repeats every request header (the signature included) and the query string."""
        self._script.extend(_EchoRequest(status) for _ in range(count))

    # --- the endpoint ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        response = await super()._handle(request)
        if isinstance(response, EventStream):
            await response.send(request, self._stopping)
        return response

    def _respond(self, request: web.Request, record: RecordedRequest) -> web.Response:
        try:
            self._verify(request, record.body)
            _check_body(record.json)
        except _Rejected as rejected:
            record.error = rejected.reason
            return web.json_response({"error": rejected.reason}, status=rejected.status)
        return self._scripted(request, record.json)

    def _verify(self, request: web.Request, body: bytes) -> None:
        if request.content_type != "application/json":
            raise _Rejected(
                400, f"Content-Type must be application/json, not {request.content_type}"
            )
        timestamp = request.headers.get(TIMESTAMP_HEADER)
        signature = request.headers.get(SIGNATURE_HEADER)
        if not timestamp or not signature:
            raise _Rejected(401, f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}")
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise _Rejected(401, f"{TIMESTAMP_HEADER} is not unix seconds")
        if abs(self.clock() - int(timestamp)) > self.max_skew_seconds:
            raise _Rejected(401, "stale timestamp")
        expected = sign(self.secret, timestamp, body).encode()
        if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape")):
            raise _Rejected(401, "bad signature")

    def _scripted(self, request: web.Request, data: dict[str, Any]) -> web.Response:
        action = self._next_action()
        if isinstance(action, _EchoRequest):
            headers = "; ".join(f"{name}: {value}" for name, value in request.headers.items())
            return web.json_response(
                {
                    "error": f"agent failed on {request.path_qs} with headers {headers}",
                    "headers": dict(request.headers),
                    "query": request.query_string,
                },
                status=action.status,
            )
        if isinstance(action, _Stream):
            stream = EventStream(
                action.lines,
                content_type="application/x-ndjson",
                pause=action.pause,
                hold_after=0,
                release=self.release,
                cut=action.cut,
            )
            self.streams.append(stream)
            return stream
        if action is not None:
            return action.response()
        if self.reply_with is not None:
            return web.json_response({"reply": self.reply_with(data)})
        return web.json_response({"reply": f"echo: {data['message']['text']}"})


def _check_body(data: Any) -> None:
    if not isinstance(data, dict):
        raise _Rejected(400, "body is not a JSON object")
    # ``attachments`` is there only when the message carries files: never an empty list.
    files = "attachments" in data
    _check_shape(data, {**_BODY_SHAPE, "attachments": (list,)} if files else _BODY_SHAPE, "body")
    for index, item in enumerate(data.get("attachments", [])):
        where = f"attachments[{index}]"
        if not isinstance(item, dict):
            raise _Rejected(400, f"{where} is not an object")
        _check_shape(item, _ATTACHMENT_SHAPE, where)
        url, reason = item["url"], item["reason"]
        if url is not None and (not url.startswith(("http://", "https://")) or reason):
            raise _Rejected(400, f"{where}: url must be absolute, with no reason beside it")
        if url is None and not reason:
            raise _Rejected(400, f"{where}: a file without url must say why")
    if files and not data["attachments"]:
        raise _Rejected(400, "attachments is empty (leave the key out)")
    if data["sender"]["kind"] not in ("user", "agent"):
        raise _Rejected(400, "sender.kind must be user or agent")
    for index, item in enumerate(data["history"]):
        where = f"history[{index}]"
        if not isinstance(item, dict):
            raise _Rejected(400, f"{where} is not an object")
        _check_shape(item, _HISTORY_SHAPE, where)
        if item["role"] not in ("user", "assistant"):
            raise _Rejected(400, f"{where}.role must be user or assistant")


def _check_shape(data: dict[str, Any], shape: _Shape, where: str) -> None:
    if set(data) != set(shape):
        raise _Rejected(400, f"{where} keys are {sorted(data)}, expected {sorted(shape)}")
    for key, expected in shape.items():
        value = data[key]
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise _Rejected(400, f"{where}.{key} is not an object")
            _check_shape(value, expected, f"{where}.{key}")
        # bool is an int in Python; an id must not be true/false.
        elif not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            raise _Rejected(400, f"{where}.{key} has the wrong type")
