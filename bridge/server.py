"""The HTTP server around the app, with the read deadlines a public server needs.

aiohttp waits for a request's headers and body as long as the client likes, so one slow
client (or thousands) can hold connections and buffers forever. Two deadlines close that:

- **Headers** (``http.header_timeout_seconds``): a connection must send a complete request
  line and headers within this of connecting or of its previous answer, else it is cut
  without an answer. It is aiohttp's keep-alive timer: the timer runs from the moment a
  connection opens (aiohttp >= 3.14.5) and after each answer, and closes the connection if it
  is still waiting for a complete request when it fires, which covers a connection that
  sends nothing, one that trickles its headers and one idling between requests. A request
  being handled (a long answer, a live WebSocket) is never cut by it.
- **Body** (``http.body_timeout_seconds``): a middleware reads every request body in full,
  within the deadline, before any handler runs; handlers and the channels' webhook adapters
  then get it from aiohttp's buffer through ``request.read()``/``text()``/``json()`` (and
  ``post()`` for urlencoded forms). A body that does not arrive in time gets 408 and the
  connection closes. The one exception is a multipart upload to a handler marked with
  :func:`bridge.api.http.streams_multipart`: it reads the parts itself, with the same
  deadline and its own size limit (``files.*``), so a file is never buffered twice.

The CLI and the test harness both serve through :func:`serving`, so tests exercise exactly
the configuration operators run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

from bridge.api.errors import error_response
from bridge.api.http import reads_own_body
from bridge.api.routes import PREFIX
from bridge.settings import HttpSettings

SHUTDOWN_TIMEOUT_SECONDS = 5.0
"""How long a stop waits for requests in flight before cancelling them."""
LINGER_SECONDS = 2.0
"""After refusing a request whose body is still arriving, how long to read and drop the rest
(so the client sees the answer rather than a reset) before closing."""


def make_runner(app: web.Application, http: HttpSettings) -> web.AppRunner:
    """A runner for ``app`` with the read deadlines of ``http``; call before the app starts."""
    app.middlewares.append(
        body_deadline(timeout=http.body_timeout_seconds, max_bytes=http.max_body_bytes)
    )
    return web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        keepalive_timeout=http.header_timeout_seconds,
        lingering_time=min(LINGER_SECONDS, http.body_timeout_seconds),
    )


@asynccontextmanager
async def serving(
    app: web.Application, http: HttpSettings, *, host: str, port: int
) -> AsyncIterator[web.AppRunner]:
    """``app`` listening on ``host:port`` (``runner.addresses`` says where) until the block
    ends; then open requests get :data:`SHUTDOWN_TIMEOUT_SECONDS` and the app stops."""
    runner = make_runner(app, http)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield runner
    finally:
        await runner.cleanup()


def body_deadline(*, timeout: float, max_bytes: int) -> Middleware:
    """Middleware reading each request body whole within ``timeout`` seconds (see above)."""

    @web.middleware
    async def read_body_within_deadline(
        request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if not request.can_read_body or reads_own_body(request):
            return await handler(request)
        too_large = (413, "payload_too_large", f"the body is over {max_bytes} bytes")
        if request.content_length is not None and request.content_length > max_bytes:
            return _refusal(request, *too_large)
        try:
            async with asyncio.timeout(timeout):
                await request.read()
        except TimeoutError:
            return _refusal(
                request, 408, "request_timeout", f"the body did not arrive within {timeout:g} s"
            )
        except web.HTTPRequestEntityTooLarge:
            return _refusal(request, *too_large)
        except (ConnectionError, HttpProcessingError):
            # The client went away or broke the framing mid-body; the answer may not arrive.
            return _refusal(request, 400, "bad_request", "the body is incomplete or malformed")
        return await handler(request)

    return read_body_within_deadline


def _refusal(request: web.Request, status: int, code: str, message: str) -> web.Response:
    """An answer that closes the connection: the rest of the body is never read as a request.
    JSON for the API, plain text elsewhere (webhooks, the page)."""
    if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
        response = error_response(status, code, message)
    else:
        response = web.Response(status=status, text=f"{status}: {message}")
    response.force_close()
    return response
