"""``/api/v1/ws``: live events for the sessions a client may see, with catch-up by event id.

One :class:`LiveHub` per process tails the change feed, builds each batch's frames once and
hands every connected client the frames it may see. Frames carry the object's current state,
so a frame received twice is harmless; each connection still sends an event id only once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.api.http import caller_of
from bridge.api.views import members_of, messages_by_id, sessions_by_id
from bridge.feed import Change, ChangeFeed
from bridge.logs import log_event
from bridge.tasks import cancel_and_wait
from bridge.tokens import Caller, active_token_ids
from bridge.wakeups import WorkSignals

logger = logging.getLogger(__name__)

REVOKED = 4401
TOO_SLOW = 4408
TOKEN_CHECK_SECONDS = 1.0
QUEUE_FRAMES = 2000
REMEMBERED_IDS = 10_000

Frame = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Event:
    session_id: int
    frame: Frame


@dataclass(eq=False, kw_only=True)
class LiveClient:
    caller: Caller
    socket: web.WebSocketResponse
    queue: asyncio.Queue[Frame] = field(default_factory=lambda: asyncio.Queue(QUEUE_FRAMES))
    _sent: set[int] = field(default_factory=set)
    _order: deque[int] = field(default_factory=deque)

    def offer(self, frames: Sequence[Frame]) -> bool:
        """Queue frames; False when the client cannot keep up (it is then closed and may
        resume)."""
        try:
            for frame in frames:
                self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    def first_time(self, event_id: int) -> bool:
        if event_id in self._sent:
            return False
        self._sent.add(event_id)
        self._order.append(event_id)
        if len(self._order) > REMEMBERED_IDS:
            self._sent.discard(self._order.popleft())
        return True


class LiveHub:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        signals: WorkSignals,
        retention_hours: float,
    ) -> None:
        self._sessions = sessions
        self._clients: set[LiveClient] = set()
        self._next_token_check = 0.0
        self.feed = ChangeFeed(
            sessions=sessions,
            signals=signals,
            on_changes=self._publish,
            retention_hours=retention_hours,
        )

    async def start(self) -> None:
        await self.feed.start()

    async def stop(self) -> None:
        await self.feed.stop()

    async def close_all(self) -> None:
        """On shutdown: tell clients to reconnect (to another process, or to this one later)."""
        for client in list(self._clients):
            await client.socket.close(code=1001, message=b"server shutting down")

    def add(self, client: LiveClient) -> None:
        self._clients.add(client)

    def remove(self, client: LiveClient) -> None:
        self._clients.discard(client)

    async def _publish(self, changes: Sequence[Change]) -> None:
        if not self._clients:
            return
        await self._close_revoked()
        if not changes:
            return
        events = await self.events(changes)
        members = await self._members(
            events, needed=any(not c.caller.is_admin for c in self._clients)
        )
        for client in list(self._clients):
            frames = [e.frame for e in events if _may_see(client.caller, e.session_id, members)]
            if frames and not client.offer(frames):
                self._clients.discard(client)
                await client.socket.close(code=TOO_SLOW, message=b"too slow; reconnect and resume")

    async def events(self, changes: Sequence[Change]) -> list[_Event]:
        """The frames for these changes, with the current state of each object."""
        message_ids = {c.message_id for c in changes if c.message_id is not None}
        session_ids = {c.session_id for c in changes if c.message_id is None}
        async with self._sessions() as db:
            messages = await messages_by_id(db, message_ids) if message_ids else {}
            sessions = await sessions_by_id(db, session_ids) if session_ids else {}
        events = []
        for change in changes:
            base: Frame = {"type": change.kind, "id": change.id, "session_id": change.session_id}
            if change.message_id is not None:
                message = messages.get(change.message_id)
                if message is not None:
                    base["message"] = message.model_dump(mode="json")
                    events.append(_Event(change.session_id, base))
            else:
                session = sessions.get(change.session_id)
                if session is not None:
                    base["session"] = session.model_dump(mode="json")
                    events.append(_Event(change.session_id, base))
        return events

    async def visible_frames(self, caller: Caller, changes: Sequence[Change]) -> list[Frame]:
        events = await self.events(changes)
        members = await self._members(events, needed=not caller.is_admin)
        return [e.frame for e in events if _may_see(caller, e.session_id, members)]

    async def _members(self, events: Sequence[_Event], *, needed: bool) -> dict[int, set[int]]:
        if not events or not needed:
            return {}
        async with self._sessions() as db:
            return await members_of(db, sorted({e.session_id for e in events}))

    async def _close_revoked(self) -> None:
        """A revoked token stops working at once, also on an open socket."""
        now = asyncio.get_running_loop().time()
        if now < self._next_token_check:
            return
        self._next_token_check = now + TOKEN_CHECK_SECONDS
        clients = list(self._clients)
        active = await active_token_ids(self._sessions, {c.caller.token_id for c in clients})
        for client in clients:
            if client.caller.token_id not in active:
                self._clients.discard(client)
                log_event(logger, "live.token_revoked", user=client.caller.user)
                await client.socket.close(code=REVOKED, message=b"token revoked")


def _may_see(caller: Caller, session_id: int, members: dict[int, set[int]]) -> bool:
    return caller.is_admin or caller.participant_id in members.get(session_id, ())


LIVE = web.AppKey("live", LiveHub)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    hub = request.config_dict[LIVE]
    socket = web.WebSocketResponse(heartbeat=30)
    await socket.prepare(request)
    client = LiveClient(caller=caller_of(request), socket=socket)
    hub.add(client)
    sender = asyncio.create_task(_send_frames(client), name="bridge-live-sender")
    log_event(logger, "live.connected", user=client.caller.user)
    try:
        client.offer([{"type": "ready", "last_event_id": hub.feed.head}])
        async for frame in socket:
            if frame.type != WSMsgType.TEXT:
                continue
            await _on_client_frame(hub, client, frame.data)
    finally:
        hub.remove(client)
        await cancel_and_wait(sender)
        log_event(logger, "live.disconnected", user=client.caller.user)
    return socket


async def _send_frames(client: LiveClient) -> None:
    while True:
        frame = await client.queue.get()
        event_id = frame.get("id")
        if isinstance(event_id, int) and not client.first_time(event_id):
            continue
        try:
            await client.socket.send_str(json.dumps(frame))
        except (ConnectionError, RuntimeError):
            return


async def _on_client_frame(hub: LiveHub, client: LiveClient, data: str) -> None:
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    if not isinstance(message, dict) or message.get("type") != "resume":
        client.offer([{"type": "error", "message": 'expected {"type": "resume", ...}'}])
        return
    after = message.get("last_event_id")
    if type(after) is not int or after < 0:
        client.offer([{"type": "error", "message": "last_event_id must be an integer >= 0"}])
        return
    changes = await hub.feed.since(after)
    if changes is None:
        client.offer([{"type": "reset"}])
        return
    frames = await hub.visible_frames(client.caller, changes)
    head = max([after, *(change.id for change in changes)])
    if not client.offer(
        [*frames, {"type": "resumed", "last_event_id": head, "replayed": len(frames)}]
    ):
        await client.socket.close(code=TOO_SLOW, message=b"too much to replay; reload instead")
