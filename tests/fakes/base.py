"""What the platform fakes (Slack, Discord, Feishu) share.

:class:`FakePlatform` serves an aiohttp application on 127.0.0.1 and a free port, keeps the
queue of created posts that :meth:`FakePlatform.next_post` reads, wakes
:meth:`FakePlatform.wait_until` whenever the fake's state changes, and holds the injected
failures: one queue per endpoint, filled by one set of verbs (:meth:`~FakePlatform.rate_limit_next`,
:meth:`~FakePlatform.fail_next`, :meth:`~FakePlatform.error_next`,
:meth:`~FakePlatform.delay_next`, :meth:`~FakePlatform.drop_next`). Each fake answers a
:class:`Fault` in its platform's own shape.

The module functions are the JSON helpers every fake (and :mod:`tests.fakes.server`) uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, Literal, Self, TypeVar

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

__all__ = [
    "AsyncService",
    "FakePlatform",
    "Fault",
    "FaultKind",
    "HttpRecord",
    "abort",
    "compact",
    "json_response",
    "parse_json",
    "serve_on_loopback",
]

_PostT = TypeVar("_PostT")

FaultKind = Literal["rate_limit", "fail", "error", "delay", "drop"]

HTML_500 = b"<html><body>Internal Server Error</body></html>"


async def serve_on_loopback(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on 127.0.0.1 and a free port; the runner (to clean up) and the port."""
    runner = web.AppRunner(app, shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])


def parse_json(body: bytes) -> Any:
    """The JSON document in ``body``; None when it is empty or not JSON."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def compact(document: Any) -> bytes:
    """JSON without spaces and with non-ASCII kept, as the platforms send it."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(
    document: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    *,
    charset: bool = True,
) -> web.Response:
    """A JSON answer; ``charset=False`` sends the bare ``Content-Type: application/json``."""
    if charset:
        return web.json_response(document, status=status, headers=dict(headers or {}))
    response = web.Response(status=status, body=json.dumps(document).encode())
    response.headers["Content-Type"] = "application/json"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


@dataclass(slots=True, kw_only=True)
class HttpRecord:
    """One request as a fake received it; ``json`` is None when the body was not JSON.

    ``status`` is what the fake answered, ``error`` why it refused (None when it did not).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: bytes
    json: Any
    status: int = 0
    error: str | None = None

    @classmethod
    async def read(cls, request: web.Request) -> Self:
        body = await request.read()
        return cls(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            body=body,
            json=parse_json(body),
        )


class AsyncService:
    """``async with`` for every fake: it starts on entry and stops on exit."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure; which fields matter depends on ``kind``.

    ``retry_after``/``status`` None take the fake's defaults; ``error`` is a platform error
    string, ``code`` a platform error number, ``global_`` Discord's global rate limit.
    """

    kind: FaultKind
    status: int | None = None
    retry_after: float | None = None
    seconds: float = 0.0
    body: bytes = HTML_500
    content_type: str = "text/html"
    error: str = ""
    code: int | None = None
    global_: bool = False


class FakePlatform(AsyncService, Generic[_PostT]):
    """Serving, waiting and injected failures for a platform fake; see the module docstring.

    A subclass supplies :meth:`_add_routes`, may close its own connections in
    :meth:`_close_connections`, says how a post reads in :meth:`_describe_post`, and names
    the endpoint a verb without ``method=`` scripts in ``_FAULT_METHOD`` and the kinds of
    fault it can answer in ``_FAULT_KINDS``.
    """

    _FAULT_METHOD: ClassVar[str] = ""
    _FAULT_KINDS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self._post_queue: asyncio.Queue[_PostT] = asyncio.Queue()
        self._faults: dict[str, deque[Fault]] = {}
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def _close_connections(self) -> None:
        """Close what the fake holds open (sockets, gateway connections) before it stops."""

    async def start(self) -> None:
        app = web.Application()
        self._add_routes(app)
        self._runner, self._port = await serve_on_loopback(app)

    async def stop(self) -> None:
        """Stop serving; cuts scripted delays short, closes connections and the pusher."""
        self._stopping.set()
        await self._close_connections()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _started_port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    def _local_url(self, scheme: str = "http", path: str = "") -> str:
        return f"{scheme}://127.0.0.1:{self._started_port()}{path}"

    async def _pause(self, seconds: float) -> None:
        """Hold an answer back ``seconds``, cut short when the fake stops."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)

    # --- state changes and posts -----------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self,
        ready: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> None:
        """Wait until ``ready()`` holds; it is re-checked whenever the fake's state changes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def _describe_post(self, post: _PostT) -> str:
        return f"unexpected post: {post}"

    # The timeout parameters are the API the tests were promised: one call, one bound.
    async def next_post(self, timeout: float = 5.0) -> _PostT:  # noqa: ASYNC109
        """The next message the fake created; ``TimeoutError`` if none comes in time."""
        return await asyncio.wait_for(self._post_queue.get(), timeout)

    async def expect_no_post(self, within: float) -> None:
        """Fail if the fake creates a message in the next ``within`` seconds."""
        try:
            post = await asyncio.wait_for(self._post_queue.get(), within)
        except TimeoutError:
            return
        raise AssertionError(self._describe_post(post))

    # --- injected failures -----------------------------------------------------------------

    def inject(self, fault: Fault, count: int = 1, *, method: str | None = None) -> None:
        """The next ``count`` calls of ``method`` (default: the fake's post) meet ``fault``."""
        if fault.kind not in self._FAULT_KINDS:
            raise ValueError(f"{type(self).__name__} cannot inject a {fault.kind!r} fault")
        key = self._FAULT_METHOD if method is None else method
        self._faults.setdefault(key, deque()).extend([fault] * count)

    def _next_fault(self, method: str | None = None) -> Fault | None:
        queue = self._faults.get(self._FAULT_METHOD if method is None else method)
        return queue.popleft() if queue else None

    def rate_limit_next(
        self,
        count: int = 1,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        code: int | None = None,
        global_: bool = False,
        method: str | None = None,
    ) -> None:
        """The next ``count`` calls are throttled (the platform's 429 or equivalent)."""
        fault = Fault(
            "rate_limit", status=status, retry_after=retry_after, code=code, global_=global_
        )
        self.inject(fault, count, method=method)

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        *,
        body: bytes = HTML_500,
        content_type: str = "text/html",
        method: str | None = None,
    ) -> None:
        """The next ``count`` calls answer HTTP ``status`` (an HTML page unless the platform
        answers its errors in JSON) and take no effect."""
        fault = Fault("fail", status=status, body=body, content_type=content_type)
        self.inject(fault, count, method=method)

    def error_next(
        self, count: int = 1, error: str = "channel_not_found", *, method: str | None = None
    ) -> None:
        """The next ``count`` calls answer the platform's refusal ``error``."""
        self.inject(Fault("error", error=error), count, method=method)

    def delay_next(self, count: int, seconds: float, *, method: str | None = None) -> None:
        """The next ``count`` calls are answered normally, ``seconds`` late (cut short by stop)."""
        self.inject(Fault("delay", seconds=seconds), count, method=method)

    def drop_next(self, count: int = 1, *, method: str | None = None) -> None:
        """The next ``count`` calls take effect but the connection is cut before the answer:
        the client cannot tell whether its call landed."""
        self.inject(Fault("drop"), count, method=method)


def abort(request: web.Request) -> web.Response:
    """Cut the connection of ``request``: the client gets no answer."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=200)
