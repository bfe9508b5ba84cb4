"""Small helpers every API handler uses: parse a body or query into its model, answer with a
model, and know the caller."""

from __future__ import annotations

import asyncio
import json
import re
from array import array
from itertools import accumulate
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bridge.api.errors import ApiError, invalid
from bridge.api.tokens import Caller

CALLER = web.RequestKey("caller", Caller)

Model = TypeVar("Model", bound=BaseModel)
Marked = TypeVar("Marked")

MULTIPART = "multipart/form-data"
_STREAMS_MULTIPART = "_streams_multipart"

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a body may have; the API's own documents need 2.
Checked before parsing: the parser recurses, so a deeper document is refused unread."""
_INLINE_CHECK_BYTES = 64 * 1024
"""Bodies up to this size are checked on the event loop; larger ones in a worker thread."""
# A string, its closing quote optional so that an unterminated one cannot make it backtrack.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?')
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and -1 as signed bytes


def nested_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether the JSON text ``raw`` nests arrays and objects more than ``limit`` deep
    (brackets inside strings do not count). Linear in ``len(raw)``; stops at the first
    bracket too deep."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    steps = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS).translate(_STEPS)
    return any(depth > limit for depth in accumulate(array("b", steps)))


async def read_body(request: web.Request, model: type[Model]) -> Model:
    raw = await request.read()
    if len(raw) <= _INLINE_CHECK_BYTES:
        too_deep = nested_deeper_than(raw, MAX_JSON_DEPTH)
    else:
        too_deep = await asyncio.to_thread(nested_deeper_than, raw, MAX_JSON_DEPTH)
    if too_deep:
        raise ApiError(400, "malformed_json", f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid", "body: the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise invalid(error) from None


def read_query(request: web.Request, model: type[Model]) -> Model:
    try:
        return model.model_validate({key: request.query.getone(key) for key in request.query})
    except ValidationError as error:
        raise invalid(error) from None


def respond(body: BaseModel, *, status: int = 200) -> web.Response:
    return web.Response(
        body=body.model_dump_json().encode(), status=status, content_type="application/json"
    )


def caller_of(request: web.Request) -> Caller:
    return request[CALLER]


def streams_multipart(handler: Marked) -> Marked:
    """Marks a handler that reads a ``multipart/form-data`` body itself, part by part,
    bounded and within the body deadline (:mod:`bridge.api.uploads`): the server's body
    middleware (:func:`bridge.server.body_deadline`) leaves such a body to it."""
    setattr(handler, _STREAMS_MULTIPART, True)
    return handler


def reads_own_body(request: web.Request) -> bool:
    """Whether the matched handler streams this request's body (a multipart upload)."""
    return request.content_type == MULTIPART and bool(
        getattr(request.match_info.handler, _STREAMS_MULTIPART, False)
    )
