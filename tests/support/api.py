"""A small client for the bridge's HTTP API, as a program using it would be."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.api.tokens import create_token


@dataclass
class ApiResponse:
    status: int
    body: Any

    def ok(self, status: int = 200) -> Any:
        assert self.status == status, (self.status, self.body)
        return self.body

    def error(self, status: int, code: str | None = None) -> dict[str, Any]:
        assert self.status == status, (self.status, self.body)
        assert set(self.body) == {"error"} and set(self.body["error"]) == {"code", "message"}
        if code is not None:
            assert self.body["error"]["code"] == code, self.body
        return dict(self.body["error"])


class ApiClient:
    def __init__(self, *, http: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.http = http
        self.base_url = base_url
        self.token = token

    async def call(self, method: str, path: str, **kwargs: Any) -> ApiResponse:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        async with self.http.request(
            method, self.base_url + "/api/v1" + path, headers=headers, **kwargs
        ) as response:
            body = await response.json(content_type=None)
            return ApiResponse(status=response.status, body=body)

    async def get(self, path: str, **params: Any) -> ApiResponse:
        return await self.call("GET", path, params=params)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> ApiResponse:
        return await self.call("POST", path, json=body, **kwargs)

    async def new_session(self, agent: str = "assistant", title: str | None = None) -> Any:
        return (await self.post("/sessions", {"agent": agent, "title": title})).ok(201)

    async def say(self, session_id: int, text: str, **extra: Any) -> Any:
        return (await self.post(f"/sessions/{session_id}/messages", {"text": text, **extra})).ok(
            202
        )

    async def all_pages(self, path: str, cursor_param: str, **params: Any) -> list[Any]:
        items: list[Any] = []
        cursor = None
        while True:
            query = dict(params, **({cursor_param: cursor} if cursor else {}))
            page = (await self.get(path, **query)).ok()
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    @asynccontextmanager
    async def live(self, **params: str) -> AsyncIterator[LiveSocket]:
        async with self.http.ws_connect(
            self.base_url + "/api/v1/ws", params={"token": self.token, **params}
        ) as socket:
            live = LiveSocket(socket)
            live.ready = await live.next(lambda frame: frame["type"] == "ready")
            yield live


class LiveSocket:
    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.frames: list[dict[str, Any]] = []
        self.ready: dict[str, Any] = {}

    @property
    def last_event_id(self) -> int:
        """The highest event id received: what a reconnecting client resumes from."""
        return max(f["id"] for f in self.frames if "id" in f)

    async def next(
        self, match: Callable[[dict[str, Any]], bool], *, within: float = 10.0
    ) -> dict[str, Any]:
        """The first frame (received from now on) that ``match`` accepts."""
        async with asyncio.timeout(within):
            while True:
                message = await self.socket.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise AssertionError(f"socket closed: {message.type} {message.data}")
                frame = message.json()
                self.frames.append(frame)
                if match(frame):
                    return dict(frame)

    async def reply_to(self, message_id: int, *, within: float = 10.0) -> dict[str, Any]:
        frame = await self.next(
            lambda f: (
                f.get("message", {}).get("reply_to") == message_id
                and f["message"]["delivery"] == "delivered"
            ),
            within=within,
        )
        return dict(frame["message"])


async def token_for(
    sessions: async_sessionmaker[AsyncSession], name: str, *, admin: bool = False
) -> str:
    return await create_token(sessions, name=name, admin=admin)


@asynccontextmanager
async def api_clients(
    base_url: str, sessions: async_sessionmaker[AsyncSession], *names: str, admin: str = ""
) -> AsyncIterator[dict[str, ApiClient]]:
    """One client per user name (``admin`` names the one with an admin token)."""
    async with aiohttp.ClientSession() as http:
        clients = {
            name: ApiClient(
                http=http,
                base_url=base_url,
                token=await token_for(sessions, name, admin=name == admin),
            )
            for name in names
        }
        yield clients
