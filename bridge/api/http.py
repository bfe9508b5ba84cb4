"""Small helpers every API handler uses: parse a body or query into its model, answer with a
model, and know the caller."""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bridge.api.errors import ApiError, invalid
from bridge.tokens import Caller

CALLER = web.RequestKey("caller", Caller)

Model = TypeVar("Model", bound=BaseModel)


async def read_body(request: web.Request, model: type[Model]) -> Model:
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
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
