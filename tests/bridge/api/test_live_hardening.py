"""The live WebSocket against hostile and broken clients, through the real server.

A client that never reads must not hold up anyone else and is cut off within seconds; a resume
costs the same however much the feed retains; every frame a client sends is checked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from sqlalchemy import func, select

from bridge.api.live import LIVE
from bridge.settings import Settings
from bridge.store.feed import FEED
from bridge.store.models import CHANGES, MESSAGES, MessageState, utcnow
from tests.support.api import ApiClient, LiveSocket, api_clients
from tests.support.harness import RunningBridge, make_settings, running_bridge


def live_settings(database_url: str, **web: Any) -> Settings:
    settings = make_settings(database_url)
    # The tests' HTTP clients sit idle while waiting for a drop: keep their pooled keep-alive
    # connections open meanwhile (a POST on one the server is just closing would fail).
    http = settings.http.model_copy(update={"header_timeout_seconds": 120.0})
    return settings.model_copy(update={"web": settings.web.model_copy(update=web), "http": http})


@asynccontextmanager
async def stalled_client(url: str, token: str) -> AsyncIterator[socket.socket]:
    """A WebSocket client with a tiny receive buffer that, after the handshake, never reads:
    the server's writes to it block once the TCP buffers are full."""
    parts = urlsplit(url)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(raw, (parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            raw,
            (
                f"GET /api/v1/ws?token={token} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        head = b""
        async with asyncio.timeout(10):
            while b"\r\n\r\n" not in head:
                head += await loop.sock_recv(raw, 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        yield raw
    finally:
        raw.close()


async def connection_ends(raw: socket.socket, *, within: float) -> bool:
    """Read (and drop) whatever the server sent until it closes or resets the connection."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(within):
            while await loop.sock_recv(raw, 1 << 20):
                pass
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return True


async def flood(bridge: RunningBridge, *, session_id: int, message_id: int, events: int) -> int:
    """``events`` live events about one message, as a busy bridge would produce; returns the
    last one's id."""
    now = utcnow()
    async with bridge.sessions() as db, db.begin():
        await db.execute(
            CHANGES.insert(),
            [
                {
                    "kind": "message.updated",
                    "session_id": session_id,
                    "message_id": message_id,
                    "created_at": now,
                }
                for _ in range(events)
            ],
        )
        last = int((await db.execute(select(func.max(CHANGES.c.id)))).scalar())
    bridge.pipeline.signals.wake(FEED)
    return last


async def until(condition: Any, *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.05)


async def sees_promptly(
    client: ApiClient, live: LiveSocket, session_id: int, text: str, *, within: float
) -> None:
    sent = await client.say(session_id, text)
    await live.next(lambda f: f.get("message", {}).get("id") == sent["id"], within=within)


# The stalled client's socket is filled with large frames first. Then one case sends more small
# events than its queue holds (it is dropped at once), the other nothing more (it is dropped when
# a send times out, and until then it is connected, stuck in a send, while the other is served).
@pytest.mark.parametrize(
    ("small_events", "send_timeout"), [(2_520, 60.0), (0, 10.0)], ids=["queue-full", "socket-full"]
)
async def test_a_client_that_never_reads_delays_no_one(
    database_url: str, small_events: int, send_timeout: float
) -> None:
    settings = live_settings(database_url, live_send_timeout_seconds=send_timeout)
    async with (
        running_bridge(settings) as bridge,
        api_clients(bridge.url, bridge.sessions, "root", admin="root") as users,
    ):
        root = users["root"]
        hub = bridge.app[LIVE]
        session = await root.new_session()
        big = await root.say(session["id"], "x" * 30_000)
        small = await root.say(session["id"], "s")
        await bridge.reply_to(small["id"], state=MessageState.DELIVERED)
        async with root.live() as healthy, stalled_client(bridge.url, root.token) as stalled:
            await until(lambda: len(hub.clients) == 2, within=10, what="both clients connected")
            await flood(bridge, session_id=session["id"], message_id=big["id"], events=400)
            # In steps the healthy client takes as they come; the stalled one takes none.
            for _ in range(small_events // 420):
                last = await flood(
                    bridge, session_id=session["id"], message_id=small["id"], events=420
                )
                await healthy.next(lambda f, last=last: f.get("id") == last, within=15)
            started = time.monotonic()
            # The healthy client keeps getting every new message while the other one stalls.
            await sees_promptly(root, healthy, session["id"], "still live", within=15)
            if not small_events:
                assert len(hub.clients) == 2, "served while the stalled client was connected"
            for index in range(2):
                await sees_promptly(root, healthy, session["id"], f"live {index}", within=15)
            await until(lambda: len(hub.clients) == 1, within=30, what="stalled client dropped")
            assert time.monotonic() - started < 30
            assert await connection_ends(stalled, within=15), "the server closed it"
            # and nothing got stuck on the way: live events still flow.
            await sees_promptly(root, healthy, session["id"], "after the drop", within=15)


async def test_shutdown_does_not_wait_for_a_client_that_never_reads(database_url: str) -> None:
    # The send to the stalled client would block for a minute; shutting down must not.
    settings = live_settings(database_url, live_send_timeout_seconds=60.0)
    async with AsyncExitStack() as outer:
        server = AsyncExitStack()
        outer.push_async_callback(server.aclose)
        bridge = await server.enter_async_context(running_bridge(settings))
        users = await server.enter_async_context(
            api_clients(bridge.url, bridge.sessions, "root", admin="root")
        )
        root = users["root"]
        session = await root.new_session()
        big = await root.say(session["id"], "y" * 30_000)
        await bridge.reply_to(big["id"], state=MessageState.DELIVERED)
        hub = bridge.app[LIVE]
        # Still open (and not reading) while the server stops.
        await outer.enter_async_context(stalled_client(bridge.url, root.token))
        await until(lambda: len(hub.clients) == 1, within=10, what="client connected")
        await flood(bridge, session_id=session["id"], message_id=big["id"], events=400)
        await asyncio.sleep(3)  # its socket is full by now
        started = time.monotonic()
        async with asyncio.timeout(60):
            await server.aclose()
        assert time.monotonic() - started < 20


async def _bulk_feed(bridge: RunningBridge, *, session_id: int, count: int, age: timedelta) -> int:
    """``count`` messages in one session, each with its ``message.created`` event, ``age`` old:
    a feed retaining that many distinct messages. Returns the highest event id."""
    when = utcnow() - age
    async with bridge.sessions() as db, db.begin():
        first = int((await db.execute(select(func.coalesce(func.max(MESSAGES.c.id), 0)))).scalar())
        await db.execute(
            MESSAGES.insert(),
            [
                {
                    "id": first + 1 + i,
                    "session_id": session_id,
                    "role": "user",
                    "content": f"retained {i}",
                    "channel": "web",
                    "state": MessageState.RECORDED,
                    "created_at": when,
                    "updated_at": when,
                }
                for i in range(count)
            ],
        )
        await db.execute(
            CHANGES.insert(),
            [
                {
                    "kind": "message.created",
                    "session_id": session_id,
                    "message_id": first + 1 + i,
                    "created_at": when,
                }
                for i in range(count)
            ],
        )
        return int((await db.execute(select(func.max(CHANGES.c.id)))).scalar())


async def resume(live: LiveSocket, last_event_id: int, *, within: float = 60) -> dict[str, Any]:
    await live.socket.send_json({"type": "resume", "last_event_id": last_event_id})
    return await live.next(lambda f: f["type"] in ("resumed", "reset", "error"), within=within)


async def test_resume_over_a_large_retained_feed(database_url: str) -> None:
    settings = live_settings(database_url, live_max_catch_up_events=5_000)
    async with (
        running_bridge(settings) as bridge,
        api_clients(bridge.url, bridge.sessions, "alice", "bob", "root", admin="root") as users,
    ):
        alice, bob, root = users["alice"], users["bob"], users["root"]
        session = await alice.new_session()
        head = await _bulk_feed(
            bridge, session_id=session["id"], count=40_000, age=timedelta(hours=1)
        )
        # With nobody connected the tail reads nothing; a client that connects starts the
        # stream at the newest event, so only frames of the resume itself arrive here.
        for client in (alice, bob, root):
            async with client.live() as live:
                # From the start, or from an id long ago: too far behind, reload instead.
                for point in (0, 1, head - 20_000):
                    answer = await resume(live, point)
                    assert answer == {"type": "reset", "last_event_id": head}, answer
                # A recent point replays what came after it, as far as this user may see.
                answer = await resume(live, head - 100)
                assert answer["type"] == "resumed", answer
                assert answer["last_event_id"] == head
                replayed = [f for f in live.frames if f["type"] == "message.created"]
                if client is bob:
                    assert answer["replayed"] == 0 and replayed == []
                else:
                    assert answer["replayed"] == 100
                    assert [f["id"] for f in replayed] == list(range(head - 99, head + 1))
                    assert replayed[-1]["message"]["content"] == "retained 39999"


async def test_the_late_commit_resend_is_bounded(database_url: str) -> None:
    """Events from the last seconds are sent again on resume (a late commit is not missed), but
    only a bounded number of them, however busy those seconds were."""
    async with (
        running_bridge(live_settings(database_url)) as bridge,
        api_clients(bridge.url, bridge.sessions, "root", admin="root") as users,
    ):
        root = users["root"]
        session = await root.new_session()
        head = await _bulk_feed(bridge, session_id=session["id"], count=3_000, age=timedelta())
        async with root.live() as live:
            answer = await resume(live, head)
            assert answer["type"] == "resumed" and answer["last_event_id"] == head
            assert 0 < answer["replayed"] <= 500


BAD_RESUMES: list[tuple[str, Any]] = [
    ("beyond int64", {"type": "resume", "last_event_id": 2**70}),
    ("int64 + 1", {"type": "resume", "last_event_id": 2**63}),
    ("negative", {"type": "resume", "last_event_id": -1}),
    ("float", {"type": "resume", "last_event_id": 1.5}),
    ("string", {"type": "resume", "last_event_id": "5"}),
    ("bool", {"type": "resume", "last_event_id": True}),
    ("null", {"type": "resume", "last_event_id": None}),
    ("missing", {"type": "resume"}),
    ("other type", {"type": "subscribe", "last_event_id": 1}),
    ("list", [1, 2, 3]),
    ("number", 7),
]


async def expect_error_then_still_working(live: LiveSocket, send: Any) -> None:
    await send()
    frame = await live.next(lambda f: f["type"] in ("error", "resumed", "reset"))
    assert frame["type"] == "error" and isinstance(frame["message"], str), frame
    answer = await resume(live, live.ready["last_event_id"], within=10)
    assert answer["type"] == "resumed", answer


async def test_every_client_frame_is_checked(database_url: str) -> None:
    async with (
        running_bridge(live_settings(database_url)) as bridge,
        api_clients(bridge.url, bridge.sessions, "alice") as users,
    ):
        alice = users["alice"]
        await alice.new_session()
        async with alice.live() as live:
            for _name, body in BAD_RESUMES:
                await expect_error_then_still_working(
                    live, lambda body=body: live.socket.send_str(json.dumps(body))
                )
            deep = '{"type": "resume", "last_event_id": ' + "[" * 1_500 + "]" * 1_500 + "}"
            for text in ("not json", "{", deep, '{"type": "resume", "last_event_id": 1e400}'):
                await expect_error_then_still_working(
                    live, lambda text=text: live.socket.send_str(text)
                )
            await expect_error_then_still_working(
                live, lambda: live.socket.send_bytes(b'{"type": "resume"}')
            )
        # Client frames are small: a huge one closes the socket with 1009 (message too big).
        async with alice.live() as live:
            await live.socket.send_str(json.dumps({"type": "resume", "pad": "x" * 1_000_000}))
            async with asyncio.timeout(10):
                while (await live.socket.receive()).type == aiohttp.WSMsgType.TEXT:
                    pass
            assert live.socket.close_code == 1009
        # Nothing above hurt the server.
        async with alice.live() as live:
            answer = await resume(live, live.ready["last_event_id"], within=10)
            assert answer["type"] == "resumed"
