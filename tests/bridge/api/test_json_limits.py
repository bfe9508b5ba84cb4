"""Hostile JSON to every JSON endpoint of the API: refused with a 4xx, nothing stored.

Deep nesting made the parser raise RecursionError, which the API answered with a 500 where
``malformed_json`` is promised. Every POST/PATCH/PUT route of the route table is tried, so a
new endpoint is covered the day it is added.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from bridge.api.http import MAX_JSON_DEPTH, nested_deeper_than
from bridge.api.routes import PREFIX, ROUTES, Route
from bridge.store.models import ChatMessage, ChatSession
from tests.support.api import ApiClient
from tests.support.harness import RunningBridge, make_settings
from tests.support.shared_api import user_with_session

DEPTH = 100_000
HOSTILE_BODIES = {
    "deep array": "[" * DEPTH + "]" * DEPTH,
    "deep object": '{"a":' * DEPTH + "1" + "}" * DEPTH,
    "deep value in a valid body": (
        '{"text": "hi", "title": "t", "agent": "assistant", "from_agent": "assistant", "x": '
        + "[" * 5_000
        + "]" * 5_000
        + "}"
    ),
    "deep unclosed": '{"text": ' + "[" * DEPTH,
}
JSON_ROUTES = [route for route in ROUTES if route.method in ("POST", "PATCH", "PUT")]


def _path(route: Route, session_id: int) -> str:
    path = route.path.replace("{id}", str(session_id))
    return path.replace("{to}", "assistant").replace("{agent}", "assistant")


async def _stored(bridge: RunningBridge) -> tuple[int, int]:
    async with bridge.sessions() as db:
        messages = (await db.execute(select(func.count()).select_from(ChatMessage))).scalar_one()
        sessions = (await db.execute(select(func.count()).select_from(ChatSession))).scalar_one()
    return messages, sessions


async def _post_raw(root: ApiClient, route: Route, path: str, body: str) -> tuple[int, object]:
    response = await root.call(
        route.method, path, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    return response.status, response.body


def test_the_route_table_has_json_endpoints() -> None:
    assert {route.path for route in JSON_ROUTES if route.body is not None} >= {
        "/sessions",
        "/sessions/{id}",
        "/sessions/{id}/messages",
        "/agents/{to}/messages",
    }


@pytest.mark.parametrize("shape", sorted(HOSTILE_BODIES))
async def test_nested_json_on_every_json_endpoint_is_malformed_json(
    database_url: str, shape: str
) -> None:
    body = HOSTILE_BODIES[shape]
    settings = make_settings(database_url)
    async with user_with_session(settings, "root", admin=True) as (bridge, root, session):
        before = await _stored(bridge)
        for route in JSON_ROUTES:
            status, answer = await _post_raw(root, route, _path(route, session["id"]), body)
            where = f"{route.method} {PREFIX}{route.path}"
            assert status < 500, (where, status, answer)
            if route.body is not None:
                assert status == 400, (where, status, answer)
                assert isinstance(answer, dict) and answer["error"]["code"] == "malformed_json"
        assert await _stored(bridge) == before
        assert (await root.get("/me")).ok()["name"] == "root"
        # A normal request still works after all that.
        sent = await root.say(session["id"], "still here?")
        assert sent["content"] == "still here?"


async def test_a_body_over_the_limit_is_413_on_every_json_endpoint(database_url: str) -> None:
    settings = make_settings(database_url)
    limit = settings.http.max_body_bytes
    async with user_with_session(settings, "root", admin=True) as (bridge, root, session):
        before = await _stored(bridge)
        huge = "[" * (limit + 1)
        for route in JSON_ROUTES:
            if route.body is None:
                continue
            status, answer = await _post_raw(root, route, _path(route, session["id"]), huge)
            assert status == 413, (route.path, status, answer)
            assert isinstance(answer, dict) and answer["error"]["code"] == "payload_too_large"
        assert await _stored(bridge) == before
        assert (await root.get("/me")).ok()["name"] == "root"


@pytest.mark.parametrize(
    ("body", "deeper"),
    [
        ("[" * 32 + "]" * 32, False),
        ("[" * 33 + "]" * 33, True),
        ('{"a":' * 32 + "1" + "}" * 32, False),
        ('{"a":' * 33 + "1" + "}" * 33, True),
        ('{"text": "' + "[" * 1000 + '"}', False),  # brackets in a string do not count
        ('{"text": "\\"' + "[" * 1000 + '"}', False),  # nor after an escaped quote
        ('{"text": "\\\\"' + ", " + "[" * 33 + "]" * 33 + "}", True),  # an escaped backslash
        ("[" + "[1]," * 1000 + "[]]", False),  # wide is not deep
        ('"' + "[" * 1000, False),  # an unterminated string is for the parser to refuse
    ],
)
def test_nesting_is_measured_outside_strings(body: str, deeper: bool) -> None:
    assert nested_deeper_than(body.encode(), MAX_JSON_DEPTH) is deeper


async def test_a_body_within_the_depth_limit_is_read_as_before(database_url: str) -> None:
    depth = MAX_JSON_DEPTH - 1  # inside the body object: exactly the limit
    nested = "[" * depth + "]" * depth
    async with user_with_session(make_settings(database_url)) as (_bridge, alice, session):
        body = '{"text": "hi", "unknown": ' + nested + "}"
        refused = await alice.call(
            "POST",
            f"/sessions/{session['id']}/messages",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        refused.error(422, "invalid")  # parsed, then refused by the model: not malformed
