"""What the local fakes share: an aiohttp server on 127.0.0.1, recording and a script.

:class:`LocalServer` serves one POST route on a free port. It records every request, holds
each answer back by ``delay_seconds`` (cut short by :meth:`LocalServer.stop`, so a
timed-out test does not wait for the delay at teardown) and keeps a first-in-first-out
script of answers. A fake subclasses it and supplies :meth:`LocalServer._respond`: check
the request, then answer from the script or with its default.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web
from multidict import CIMultiDict

from tests.fakes.base import AsyncService, parse_json, serve_on_loopback

__all__ = ["AsyncService", "Canned", "LocalServer", "RecordedRequest", "serve_on_loopback"]

_ActionT = TypeVar("_ActionT")


@dataclass(slots=True, kw_only=True)
class RecordedRequest:
    """One request as the fake received it; ``json`` is None when the body was not JSON.

    ``error`` says why the fake refused the request, for fakes that record it.
    """

    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes
    json: Any
    status: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Canned:
    """A scripted answer given exactly as it is."""

    status: int
    body: bytes
    content_type: str

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)


class LocalServer(AsyncService, Generic[_ActionT]):
    """Serves ``route`` on 127.0.0.1 and a free port; ``url`` ends with ``url_path``.

    The script holds :class:`Canned` answers and the fake's own kind of action, ``_ActionT``.
    """

    def __init__(self, *, route: str, url_path: str) -> None:
        self.delay_seconds = 0.0
        self.requests: list[RecordedRequest] = []
        self._script: deque[Canned | _ActionT] = deque()
        self._route = route
        self._url_path = url_path
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._url

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(self._route, self._handle)
        self._runner, port = await serve_on_loopback(app)
        self._url = f"http://127.0.0.1:{port}{self._url_path}"

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- scripting -------------------------------------------------------------------------

    def raw_next(self, document: Any, *, status: int = 200) -> None:
        """The next accepted call answers exactly this JSON document."""
        self._script.append(Canned(status, json.dumps(document).encode(), "application/json"))

    def _garbage_next(self, count: int, *, body: bytes, status: int) -> None:
        self._script.extend(Canned(status, body, "text/html") for _ in range(count))

    def _next_action(self) -> Canned | _ActionT | None:
        return self._script.popleft() if self._script else None

    # --- the endpoint ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=CIMultiDict(request.headers),
            body=body,
            json=parse_json(body),
        )
        self.requests.append(record)
        if self.delay_seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.delay_seconds)
        response = self._respond(request, record)
        record.status = response.status
        return response

    def _respond(self, request: web.Request, record: RecordedRequest) -> web.Response:
        """Check the request and answer it; a refusal may set ``record.error``."""
        raise NotImplementedError
