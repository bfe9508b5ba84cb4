"""One live WebSocket client: its bounded outgoing queue and the one task that writes to it.

Publishing only ever appends to a client's queue, never waits for a socket. The client's own
task does every write and the final close, each under a deadline: a client whose socket stops
taking data (its peer does not read) costs nobody else anything and is cut off within seconds,
with a close code saying why when the close frame still gets through, by dropping the
connection when it does not.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bridge.api.tokens import Caller
from bridge.infra.logs import log_event
from bridge.infra.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

GOING_AWAY = 1001
"""The server is shutting down: reconnect (to another process, or to this one later)."""
INTERNAL_ERROR = 1011
"""The server failed to handle the connection: reconnect and resume."""
REVOKED = 4401
"""The token was revoked: sign in again."""
TOO_SLOW = 4408
"""The client did not take its frames in time: reconnect and resume (or reload on ``reset``)."""

QUEUE_FRAMES = 2000
"""Frames waiting for one client at most; a client further behind is closed with 4408."""
REMEMBERED_IDS = 10_000
CLOSE_SECONDS = 2.0
"""How long a close frame may take to go out before the connection is simply dropped."""
FLUSH_POLL_SECONDS = 0.05

Frame = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A frame as sent, serialized once however many clients get it."""

    text: str
    event_id: int | None = None


def outgoing(frame: Frame) -> Outgoing:
    event_id = frame.get("id")
    return Outgoing(json.dumps(frame), event_id if isinstance(event_id, int) else None)


class LiveClient:
    """A connected client; :meth:`start` its sender, :meth:`finish` when the connection ends."""

    def __init__(
        self,
        *,
        caller: Caller,
        socket: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        send_timeout: float,
    ) -> None:
        self.caller = caller
        self._socket = socket
        self._transport = transport
        self._send_timeout = send_timeout
        self._close_timeout = min(send_timeout, CLOSE_SECONDS)
        self._queue: deque[Outgoing] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._close: tuple[int, str] | None = None
        self._sending: asyncio.Timeout | None = None
        self._sent: set[int] = set()
        self._order: deque[int] = deque()
        self._task: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        return self._close is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bridge-live-sender")

    def offer(self, items: Sequence[Outgoing]) -> bool:
        """Queue ``items`` without waiting; False when they do not fit (the client is too far
        behind and should be closed)."""
        if self._close is not None:
            return True
        if len(self._queue) + len(items) > QUEUE_FRAMES:
            return False
        self._queue.extend(items)
        if len(self._queue) > QUEUE_FRAMES // 2:
            self._room.clear()
        self._wake.set()
        return True

    async def offer_paced(self, items: Sequence[Outgoing]) -> bool:
        """For a replay, which may wait: queue ``items`` once the queue is at most half full,
        leaving the other half to live events. False when they did not fit or the client is
        closing."""
        while self._close is None and not self._room.is_set():
            await self._room.wait()
        return self._close is None and self.offer(items)

    def kick(self, code: int, reason: str) -> None:
        """Close this client soon, from its own task: what is queued is dropped and a send in
        progress is given up."""
        if self._close is not None:
            return
        self._close = (code, reason)
        log_event(logger, "live.closing", user=self.caller.user, code=code, reason=reason)
        self._queue.clear()
        self._wake.set()
        self._room.set()
        if self._sending is not None and not self._sending.expired():
            self._sending.reschedule(asyncio.get_running_loop().time())

    async def closed(self) -> None:
        """Wait (a bounded time) for a close in progress to finish."""
        if self._task is not None and self._close is not None:
            await asyncio.wait({self._task}, timeout=self._close_timeout + 1.0)

    async def finish(self) -> None:
        """The connection ended: let a close in progress finish, then stop the task."""
        await self.closed()
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        interrupted = False
        while self._close is None:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._queue.popleft()
            if len(self._queue) <= QUEUE_FRAMES // 2:
                self._room.set()
            if item.event_id is not None and not self._first_time(item.event_id):
                continue
            try:
                async with asyncio.timeout(self._send_timeout) as deadline:
                    self._sending = deadline
                    try:
                        await self._socket.send_str(item.text)
                    finally:
                        self._sending = None
            except TimeoutError:
                interrupted = True
                self.kick(TOO_SLOW, "too slow; reconnect and resume")
            except (ConnectionError, RuntimeError):
                self.kick(GOING_AWAY, "connection lost")
        await self._shut(interrupted=interrupted)

    async def _shut(self, *, interrupted: bool) -> None:
        """Send the close frame and wait for it (and what is still buffered) to go out, within
        the close deadline; otherwise drop the connection: the peer is not reading, and a plain
        close would wait for the unsent data forever."""
        assert self._close is not None
        code, reason = self._close
        transport = self._transport
        try:
            async with asyncio.timeout(self._close_timeout):
                # aiohttp cannot wait for its buffer to drain again after an interrupted wait:
                # then the close frame just goes out behind the unsent data.
                await self._socket.close(code=code, message=reason.encode(), drain=not interrupted)
                # asyncio signals nothing when a closing transport's buffer empties: poll.
                while transport is not None and transport.get_write_buffer_size():  # noqa: ASYNC110
                    await asyncio.sleep(FLUSH_POLL_SECONDS)
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this task is being stopped; else it was aiohttp's spent drain wait
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        if transport is not None:
            transport.abort()

    def _first_time(self, event_id: int) -> bool:
        """Each event id is sent once per connection (a replay and the live tail may both
        carry it)."""
        if event_id in self._sent:
            return False
        self._sent.add(event_id)
        self._order.append(event_id)
        if len(self._order) > REMEMBERED_IDS:
            self._sent.discard(self._order.popleft())
        return True
