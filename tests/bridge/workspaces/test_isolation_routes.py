"""Every route of ``bridge.api.routes.ROUTES``, walked at run time with acme's tokens (a user
and a workspace admin) against globex's objects: each answers as for an object that does not
exist (or is forbidden to that kind of token whatever the object), shows nothing of globex, and
changes nothing of globex's. A route added later is walked too; one with a path parameter or a
body this walk does not know fails the test until it is taught here."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from bridge.api.routes import PREFIX, ROUTES, Route
from tests.bridge.workspaces.isolation import (
    SECRET,
    Globex,
    globex_state,
    leaks,
    two_workspace_settings,
    two_workspaces,
)
from tests.support.api import ApiClient
from tests.support.harness import RunningBridge

MISSING_ID = "987654321"
FORBIDDEN_OR_MISSING = {401, 403, 404, 422}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: dict[str, Any] | None
    query: dict[str, str]
    sent: tuple[str, ...]
    """The values the request carries that an error may repeat back."""


def path_values(globex: Globex) -> tuple[dict[str, str], dict[str, str]]:
    """Per path parameter: globex's object, and one of the same kind that does not exist."""
    real = {
        "id": str(min(globex.session_ids)),
        "agent": "globex-desk",
        "to": "globex-bot",
        "identity": globex.identity,
        "workspace": "globex",
    }
    ghost = {
        "id": MISSING_ID,
        "agent": "ghost-desk",
        "to": "ghost-bot",
        "identity": "web:ghost",
        "workspace": "ghostws",
    }
    return real, ghost


def bodies(route: Route, globex: Globex, *, real: bool) -> dict[str, Any] | None:
    """A plausible valid body for the route's model, pointing at globex where it names an
    object (or at one that does not exist)."""
    if route.body is None:
        return None
    known: dict[str, dict[str, Any]] = {
        "AskAgent": {"from_agent": "acme-bot", "text": "walked here"},
        "AgentSend": {
            "session_id": min(globex.session_ids) if real else int(MISSING_ID),
            "text": "walked here",
        },
        "CreateSession": {"agent": "globex-bot" if real else "ghost-bot", "title": "walk"},
        "UpdateSession": {"title": "renamed by acme"},
        "PostMessage": {"text": "acme was here"},
        "ApproveCode": {"code": globex.code if real else "ZZZZ2222"},
        "CreateWorkspace": {"slug": "acme-made", "name": "made by acme"},
        "DevLogin": {},
    }
    name = route.body.__name__
    if name not in known:
        pytest.fail(f"{route.method} {route.path}: teach the walk a body for {name}")
    return known[name]


def queries(route: Route, *, real: bool) -> list[dict[str, str]]:
    """No query, and for a query that can name an agent, globex's (or a missing) one."""
    names = set(route.query.model_fields) if route.query is not None else set()
    found: list[dict[str, str]] = [{}]
    if "agent" in names:
        found.append({"agent": "globex-bot" if real else "ghost-bot"})
    return found


def requests(route: Route, globex: Globex, *, real: bool) -> list[Request]:
    values = path_values(globex)[0 if real else 1]
    params = re.findall(r"{([^}]+)}", route.path)
    for name in params:
        if name not in values:
            pytest.fail(f"{route.method} {route.path}: teach the walk a value for {{{name}}}")
    path = route.path.format(**{name: values[name] for name in params})
    body = bodies(route, globex, real=real)
    sent = [values[name] for name in params]
    if body is not None:
        sent += [str(v) for v in body.values()]
    return [
        Request(
            method=route.method,
            path=path,
            body=body,
            query=query,
            sent=(*sent, *query.values()),
        )
        for query in queries(route, real=real)
    ]


async def call(client: ApiClient, request: Request) -> tuple[int, Any]:
    async with client.http.request(
        request.method,
        client.base_url + PREFIX + request.path,
        headers={"Authorization": f"Bearer {client.token}"},
        params=request.query,
        json=request.body,
    ) as response:
        raw = await response.text()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw  # a streamed export, say


def replaced(value: Any, pairs: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        for old, new in pairs:
            value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {key: replaced(item, pairs) for key, item in value.items()}
    return value


async def setup_globex(bridge: RunningBridge, clients: dict[str, ApiClient]) -> Globex:
    """globex talks (its secret in a title and messages), approves one identity and has a live
    pairing code for another."""
    globex_user = clients["globex_user"]
    session = await globex_user.new_session("globex-bot", f"title {SECRET}")
    said = await globex_user.say(session["id"], f"message {SECRET}")
    await bridge.reply_to(said["id"], state="delivered")
    codes = []
    for name in ("carol", "dave"):
        desk = await clients[name].new_session("globex-desk")
        refused = await clients[name].post(f"/sessions/{desk['id']}/messages", {"text": "hi"})
        codes.append(refused.error(403, "pairing_required")["message"].split("code: ")[1][:8])
    await clients["globex_admin"].post("/access/approve", {"code": codes[0]})
    return Globex(session_ids={session["id"], desk["id"]}, identity="web:carol", code=codes[1])


async def walk_http_route(
    route: Route, clients: dict[str, ApiClient], globex: Globex, role: str
) -> None:
    client = clients[role]
    for request, ghost_request in zip(
        requests(route, globex, real=True), requests(route, globex, real=False), strict=True
    ):
        where = f"{role}: {request.method} {request.path} {request.query}"
        status, body = await call(client, request)
        assert leaks(body, globex, echoed=request.sent) == [], (where, status, body)
        if route.public:
            continue  # the same for everyone, whatever the token
        listing = route.method == "GET" and "{" not in route.path
        assert status in FORBIDDEN_OR_MISSING or (listing and status == 200), (where, status, body)
        if status >= 400:
            ghost_status, ghost_body = await call(client, ghost_request)
            pairs = [
                (real, fake)
                for real, fake in zip(request.sent, ghost_request.sent, strict=True)
                if real != fake
            ]
            assert (status, replaced(body, pairs)) == (ghost_status, ghost_body), (
                where,
                body,
                ghost_body,
            )


async def test_every_route_answers_acme_as_if_globex_did_not_exist(database_url: str) -> None:
    settings = two_workspace_settings(database_url)
    async with two_workspaces(settings, ("carol", "globex"), ("dave", "globex")) as (
        bridge,
        clients,
    ):
        globex = await setup_globex(bridge, clients)
        acme_session = await clients["acme_user"].new_session("acme-bot")
        before = await globex_state(bridge)
        assert before["sessions"] and before["grants"] and before["codes"]
        http_routes = [route for route in ROUTES if not route.websocket]
        socket_routes = [route for route in ROUTES if route.websocket]
        assert {(r.method, r.path) for r in http_routes} >= {
            ("GET", "/sessions/{id}"),
            ("DELETE", "/agents/{agent}/access/{identity}"),
        }
        for role in ("acme_user", "acme_admin"):
            for route in http_routes:
                await walk_http_route(route, clients, globex, role)
        assert await globex_state(bridge) == before

        # The socket: while globex talks, acme's sockets get nothing of it.
        for route in socket_routes:
            async with aiohttp.ClientSession() as http:
                sockets = []
                for role in ("acme_user", "acme_admin", "operator"):
                    sockets.append(
                        await http.ws_connect(
                            bridge.url + PREFIX + route.path,
                            params={"token": clients[role].token},
                        )
                    )
                globex_id = min(globex.session_ids)
                said = await clients["globex_user"].say(globex_id, f"live {SECRET}")
                await bridge.reply_to(said["id"], state="delivered")
                mine = await clients["acme_user"].say(acme_session["id"], "acme after")
                for role, socket in zip(
                    ("acme_user", "acme_admin", "operator"), sockets, strict=True
                ):
                    frames = await frames_until_reply(socket, mine["id"])
                    leaked = [f for f in frames if leaks(f, globex)]
                    if role == "operator":
                        assert leaked, "the operator sees globex's events"
                    else:
                        assert leaked == [], (role, leaked)
                    await socket.close()


async def frames_until_reply(
    socket: aiohttp.ClientWebSocketResponse, message_id: int
) -> list[dict[str, Any]]:
    """Every frame up to the delivered reply to ``message_id``."""
    frames = []
    while True:
        message = await socket.receive(timeout=20)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        frame = message.json()
        frames.append(frame)
        found = frame.get("message", {})
        if found.get("reply_to") == message_id and found.get("delivery") == "delivered":
            return frames
