"""The OpenAPI 3.1 document, generated from the route table and its pydantic models (3.1 is
JSON Schema 2020-12, which pydantic writes as it is)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from bridge.access.settings import IDENTITY_PATTERN
from bridge.api.access_models import SLUG_PATTERN
from bridge.api.cursors import MAX_ID
from bridge.api.export import MEDIA_TYPE as EXPORT_MEDIA_TYPE
from bridge.api.export import export_session
from bridge.api.models import ErrorBody, LiveEvent, SessionOut
from bridge.api.routes import PREFIX, ROUTES, Route

REF = "#/components/schemas/{model}"


def _models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = [ErrorBody, LiveEvent]
    for route in ROUTES:
        found += [m for m in (route.body, route.response) if m is not None]
    return list(dict.fromkeys(found))


def _parameters(route: Route) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    if "{id}" in route.path:
        parameters.append(
            {
                "name": "id",
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            }
        )
    for name, description in (
        ("to", "The asked agent's slug."),
        ("agent", "The agent's slug."),
        ("workspace", "The workspace's slug."),
    ):
        if "{" + name + "}" in route.path:
            parameters.append(
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": SLUG_PATTERN},
                    "description": description,
                }
            )
    if "{identity}" in route.path:
        parameters.append(
            {
                "name": "identity",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": IDENTITY_PATTERN.pattern},
                "description": "`{channel}:{user id}` (URL-encoded), e.g. `web:alice`.",
            }
        )
    if route.query is not None:
        schema = route.query.model_json_schema(ref_template=REF)
        for name, prop in schema["properties"].items():
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in schema.get("required", ()),
                    "schema": {k: v for k, v in prop.items() if k != "title"},
                }
            )
    if route.websocket:
        parameters.append(
            {
                "name": "token",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "The token, for clients that cannot set a header (browsers).",
            }
        )
    return parameters


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}


def _operation_id(route: Route) -> str:
    name = f"{route.method.lower()}_{route.path.strip('/')}"
    return "".join(c if c.isalnum() else "_" for c in name.replace("{", "").replace("}", ""))


def _links(route: Route) -> dict[str, Any]:
    """From a created session to what can be done with it (schemathesis follows these)."""
    if route.response is not SessionOut or "{id}" in route.path:
        return {}
    return {
        _operation_id(other): {
            "operationId": _operation_id(other),
            "parameters": {"id": "$response.body#/id"},
        }
        for other in ROUTES
        if "{id}" in other.path
    }


def _operation(route: Route) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if route.response is not None:
        for status in (route.status, *route.also_ok):
            responses[str(status)] = {"description": "OK", "content": _json(route.response)}
        if links := _links(route):
            responses[str(route.status)]["links"] = links
    elif route.websocket:
        responses[str(route.status)] = {
            "description": "Switching to the WebSocket protocol; frames are LiveEvent objects."
        }
    elif route.handler is export_session:
        responses[str(route.status)] = {
            "description": "JSON lines: one session object, then its messages (see README)",
            "content": {EXPORT_MEDIA_TYPE: {"schema": {"type": "string"}}},
        }
    else:
        responses[str(route.status)] = {"description": "Done (no body)"}
    errors = set(route.errors) | ({401} if not route.public else set())
    for status in sorted(errors):
        responses[str(status)] = {"description": "Error", "content": _json(ErrorBody)}
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": _operation_id(route),
        "parameters": _parameters(route),
        "responses": responses,
    }
    if route.body is not None:
        operation["requestBody"] = {"required": True, "content": _json(route.body)}
    if route.public:
        operation["security"] = []
    return operation


@cache
def openapi_document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(model, "serialization") for model in _models()], ref_template=REF
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = _operation(route)
    paths[PREFIX + "/openapi.json"] = {
        "get": {
            "summary": "This document",
            "operationId": "get_openapi",
            "security": [],
            "responses": {"200": {"description": "The OpenAPI 3.1 document"}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Chat bridge API",
            "version": "1",
            "description": "Sessions and messages of every channel; errors are ErrorBody.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


async def openapi_json(_request: web.Request) -> web.Response:
    return web.json_response(openapi_document())
