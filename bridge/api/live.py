"""``/api/v1/ws``: live events for the sessions a client may see, with catch-up by event id.

One :class:`LiveHub` per process tails the change feed, builds (and serializes) each batch's
frames once and queues for every connected client the frames it may see; each client's own task
writes them (see :mod:`bridge.api.live_client`), so a slow client delays nobody. Frames carry the
object's current state, so a frame received twice is harmless; each connection still sends an
event id only once.

A catch-up (``{"type": "resume", "last_event_id": N}``) pages through the feed in SQL, only
through the sessions the client may see, and answers ``reset`` when more than
``web.live_max_catch_up_events`` events followed ``N``: its cost does not grow with what the
feed retains. The protocol and its close codes are in the README ("WebSocket").
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import WSMessage, WSMsgType, web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.api.http import caller_of
from bridge.api.live_client import (
    GOING_AWAY,
    INTERNAL_ERROR,
    REVOKED,
    TOO_SLOW,
    Frame,
    LiveClient,
    Outgoing,
    outgoing,
)
from bridge.api.tokens import Caller, active_token_ids
from bridge.api.views import (
    in_scope,
    members_of,
    scoped_messages_by_id,
    scoped_sessions_by_id,
    session_scopes,
)
from bridge.infra.logs import log_event
from bridge.store.deltas import Delta, DeltaBus
from bridge.store.feed import MAX_EVENT_ID, Change, ChangeFeed
from bridge.store.wakeups import WorkSignals

__all__ = ["LIVE", "REVOKED", "TOO_SLOW", "LiveClient", "LiveHub", "websocket"]

logger = logging.getLogger(__name__)

TOKEN_CHECK_SECONDS = 1.0
REPLAY_PAGE = 250
"""Events read (and frames built) per step of a catch-up: bounded statements, bounded memory."""
CLIENT_FRAME_BYTES = 4096
"""Clients only ever send small control frames; a larger one closes the socket with 1009."""
HEARTBEAT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class _Event:
    session_id: int
    workspace_id: int
    item: Outgoing


class LiveHub:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        signals: WorkSignals,
        retention_hours: float,
        send_timeout_seconds: float = 5.0,
        max_catch_up_events: int = 5_000,
        deltas: DeltaBus | None = None,
    ) -> None:
        self._sessions = sessions
        self._deltas = deltas
        self._send_timeout = send_timeout_seconds
        self._max_catch_up = max_catch_up_events
        self._clients: set[LiveClient] = set()
        self._connections: set[LiveClient] = set()
        self._next_token_check = 0.0
        self.feed = ChangeFeed(
            sessions=sessions,
            signals=signals,
            on_changes=self._publish,
            retention_hours=retention_hours,
            wanted=lambda: bool(self._clients),
        )

    @property
    def clients(self) -> frozenset[LiveClient]:
        """The clients being sent live events (not those being closed)."""
        return frozenset(client for client in self._clients if not client.closing)

    async def start(self) -> None:
        await self.feed.start()
        if self._deltas is not None:
            self._deltas.subscribe(self._publish_delta)

    async def stop(self) -> None:
        if self._deltas is not None:
            self._deltas.unsubscribe(self._publish_delta)
        await self.feed.stop()
        for client in list(self._connections):
            await client.finish()

    async def close_all(self) -> None:
        """On shutdown: tell clients to reconnect (to another process, or to this one later),
        each close bounded in time, all at once."""
        for client in list(self._clients):
            self.drop(client, GOING_AWAY, "server shutting down")
        await asyncio.gather(*(client.closed() for client in list(self._connections)))

    def connect(
        self, *, caller: Caller, socket: web.WebSocketResponse, transport: asyncio.Transport | None
    ) -> LiveClient:
        client = LiveClient(
            caller=caller, socket=socket, transport=transport, send_timeout=self._send_timeout
        )
        client.start()
        self._clients.add(client)
        self._connections.add(client)
        return client

    async def disconnect(self, client: LiveClient) -> None:
        self._clients.discard(client)
        try:
            await client.finish()
        finally:
            self._connections.discard(client)

    def drop(self, client: LiveClient, code: int, reason: str) -> None:
        """Stop sending to ``client`` and have its own task close it: never waits."""
        self._clients.discard(client)
        client.kick(code, reason)

    def send(self, client: LiveClient, frames: Sequence[Frame]) -> None:
        if not client.offer([outgoing(frame) for frame in frames]):
            self.drop(client, TOO_SLOW, "too slow; reconnect and resume")

    async def _publish(self, changes: Sequence[Change]) -> None:
        self._clients = {client for client in self._clients if not client.closing}
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
            items = [e.item for e in events if _may_see(client.caller, e, members)]
            if items and not client.offer(items):
                self.drop(client, TOO_SLOW, "too slow; reconnect and resume")

    async def _publish_delta(self, delta: Delta) -> None:
        """A reply's text so far, to the clients that may see its session; never stored,
        never replayed (the stored reply follows as ``message.created``)."""
        clients = [client for client in self._clients if not client.closing]
        if not clients:
            return
        item = outgoing(
            {
                "type": "message.delta",
                "session_id": delta.session_id,
                "reply_to": delta.reply_to,
                "text": delta.text,
            }
        )
        if all(client.caller.is_operator for client in clients):
            allowed = clients  # the operator sees every session: no look-up
        else:
            async with self._sessions() as db:
                scopes = await session_scopes(db, [delta.session_id])
            if delta.session_id in scopes:
                workspace_id, members = scopes[delta.session_id]
                event = _Event(delta.session_id, workspace_id, item)
                seen = {delta.session_id: members}
                allowed = [client for client in clients if _may_see(client.caller, event, seen)]
            else:
                allowed = [client for client in clients if client.caller.is_operator]
        for client in allowed:
            if not client.offer([item]):
                self.drop(client, TOO_SLOW, "too slow; reconnect and resume")

    async def events(self, changes: Sequence[Change]) -> list[_Event]:
        """The frames for these changes (a bounded batch), with the current state of each
        object."""
        message_ids = {c.message_id for c in changes if c.message_id is not None}
        session_ids = {c.session_id for c in changes if c.message_id is None}
        async with self._sessions() as db:
            messages = await scoped_messages_by_id(db, message_ids) if message_ids else {}
            sessions = await scoped_sessions_by_id(db, session_ids) if session_ids else {}
        events = []
        for change in changes:
            base: Frame = {"type": change.kind, "id": change.id, "session_id": change.session_id}
            if change.message_id is not None:
                found_message = messages.get(change.message_id)
                if found_message is not None:
                    message, workspace_id = found_message
                    base["message"] = message.model_dump(mode="json")
                    events.append(_Event(change.session_id, workspace_id, outgoing(base)))
            else:
                found_session = sessions.get(change.session_id)
                if found_session is not None:
                    session, workspace_id = found_session
                    base["session"] = session.model_dump(mode="json")
                    events.append(_Event(change.session_id, workspace_id, outgoing(base)))
        return events

    async def resume(self, client: LiveClient, after: int) -> None:
        """Replay what ``client`` may see after event ``after``, page by page at the pace it
        reads, then ``resumed``; or ``reset`` when that is too much (it reloads instead)."""
        catch_up = await self.feed.catch_up(after, max_events=self._max_catch_up)
        if catch_up.reset:
            log_event(logger, "live.reset", user=client.caller.user, after=after)
            self.send(client, [{"type": "reset", "last_event_id": catch_up.head}])
            return
        caller = client.caller
        participant = None if caller.is_admin else caller.participant_id
        since, replayed = 0, 0
        while True:
            changes = await self.feed.replay_page(
                catch_up,
                since=since,
                participant_id=participant,
                workspace_id=caller.workspace_id,
                limit=REPLAY_PAGE,
            )
            if changes:
                since = changes[-1].id
                events = await self.events(changes)
                items = [e.item for e in events if in_scope(caller, e.workspace_id)]
                if not await client.offer_paced(items):
                    self.drop(client, TOO_SLOW, "too slow; reconnect and resume")
                    return
                replayed += len(items)
            if len(changes) < REPLAY_PAGE:
                break
        log_event(logger, "live.resumed", user=client.caller.user, after=after, replayed=replayed)
        self.send(
            client, [{"type": "resumed", "last_event_id": catch_up.head, "replayed": replayed}]
        )

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
                self.drop(client, REVOKED, "token revoked")


def _may_see(caller: Caller, event: _Event, members: dict[int, set[int]]) -> bool:
    """As :func:`~bridge.api.views.visible_to`: the operator everything, a workspace admin its
    workspace, a user the sessions of its workspace it takes part in."""
    if not in_scope(caller, event.workspace_id):
        return False
    return caller.is_admin or caller.participant_id in members.get(event.session_id, ())


LIVE = web.AppKey("live", LiveHub)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    hub = request.config_dict[LIVE]
    socket = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, max_msg_size=CLIENT_FRAME_BYTES)
    await socket.prepare(request)
    # From here on the connection is a WebSocket: a failure closes it with a code, it never
    # becomes an HTTP error answer written into the socket.
    await hub.feed.follow()
    client = hub.connect(caller=caller_of(request), socket=socket, transport=request.transport)
    log_event(logger, "live.connected", user=client.caller.user)
    try:
        hub.send(client, [{"type": "ready", "last_event_id": hub.feed.head}])
        async for frame in socket:
            await _on_client_frame(hub, client, frame)
    except Exception as error:
        log_event(
            logger,
            "live.failed",
            level=logging.ERROR,
            user=client.caller.user,
            error=f"{type(error).__name__}: {error}",
        )
        hub.drop(client, INTERNAL_ERROR, "internal error; reconnect and resume")
    finally:
        await hub.disconnect(client)
        log_event(logger, "live.disconnected", user=client.caller.user)
    return socket


async def _on_client_frame(hub: LiveHub, client: LiveClient, frame: WSMessage) -> None:
    if frame.type == WSMsgType.BINARY:
        hub.send(client, [_error("frames must be JSON text")])
    elif frame.type == WSMsgType.TEXT:
        after = _resume_point(frame.data)
        if isinstance(after, str):
            hub.send(client, [_error(after)])
        else:
            await hub.resume(client, after)


def _resume_point(data: str) -> int | str:
    """The event id a ``resume`` frame asks for, or what is wrong with the frame."""
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):
        message = None
    if not isinstance(message, dict) or message.get("type") != "resume":
        return 'expected {"type": "resume", "last_event_id": <event id>}'
    after = message.get("last_event_id")
    if type(after) is not int or not 0 <= after <= MAX_EVENT_ID:
        return "last_event_id must be an integer from 0 to 2**63 - 1"
    return after


def _error(message: str) -> Frame:
    return {"type": "error", "message": message}
