"""Slow clients against the real server: a connection that trickles its request line and
headers, one that trickles its body and one that sends nothing are each cut off (the body one
with a 408), while normal requests, slow-but-timely bodies and live WebSockets keep working.

The clients here are raw TCP sockets: an HTTP client library would send a whole request at
once, and the attack is precisely not doing that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from sqlalchemy import func, select

from bridge.settings import Settings
from bridge.store.models import ChatSession
from tests.support.harness import RunningBridge, make_settings, running_bridge
from tests.support.shared_api import bridge_with_users, user_with_session

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
CUT_WITHIN = 10.0
"""Generous: the point is "not forever", not the exact moment."""


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """The server's read deadlines do not depend on the database: SQLite is enough here."""
    target = tmp_path / "bridge.db"
    shutil.copyfile(sqlite_template, target)
    return f"sqlite+aiosqlite:///{target}"


def slow_client_settings(database_url: str) -> Settings:
    settings = make_settings(database_url)
    http = settings.http.model_copy(
        update={"header_timeout_seconds": HEADER_TIMEOUT, "body_timeout_seconds": BODY_TIMEOUT}
    )
    return settings.model_copy(update={"http": http})


@asynccontextmanager
async def raw_connection(
    bridge: RunningBridge,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    address = urlsplit(bridge.url)
    assert address.hostname is not None and address.port is not None
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def trickle(writer: asyncio.StreamWriter, *, every: float = 0.3) -> None:
    """One byte at a time, forever (until the server hangs up)."""
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(every)


async def trickled_until_cut(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, start: bytes
) -> bytes:
    """Sends ``start``, then trickles on; everything received until the server hangs up."""
    writer.write(start)
    sender = asyncio.create_task(trickle(writer))
    try:
        return await received_until_cut(reader)
    finally:
        sender.cancel()


async def received_until_cut(reader: asyncio.StreamReader, *, within: float = CUT_WITHIN) -> bytes:
    """Everything the server sent before it closed the connection; fails if it never does."""
    received = b""
    try:
        async with asyncio.timeout(within):
            while True:
                try:
                    chunk = await reader.read(65536)
                except ConnectionError:
                    return received
                if not chunk:
                    return received
                received += chunk
    except TimeoutError:
        pytest.fail(f"the connection is still open after {within} s; received {received!r}")


async def session_count(bridge: RunningBridge) -> int:
    async with bridge.sessions() as db:
        return int((await db.execute(select(func.count()).select_from(ChatSession))).scalar_one())


def trickled_body_request(token: str, host: str) -> bytes:
    return (
        "POST /api/v1/sessions HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 100000\r\n"
        "\r\n"
        '{"agent": "assistant", "title": "'
    ).encode()


async def test_a_connection_trickling_its_headers_is_cut(sqlite_url: str) -> None:
    async with (
        running_bridge(slow_client_settings(sqlite_url)) as bridge,
        raw_connection(bridge) as (reader, writer),
    ):
        received = await trickled_until_cut(reader, writer, b"GET / HTTP/1.1\r\nHo")
        assert received == b"", "cut without an answer"


async def test_a_connection_that_sends_nothing_is_cut(sqlite_url: str) -> None:
    async with (
        running_bridge(slow_client_settings(sqlite_url)) as bridge,
        raw_connection(bridge) as (reader, _writer),
    ):
        assert await received_until_cut(reader) == b""


async def test_an_idle_keep_alive_connection_is_cut_after_its_answer(sqlite_url: str) -> None:
    async with (
        running_bridge(slow_client_settings(sqlite_url)) as bridge,
        raw_connection(bridge) as (reader, writer),
    ):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        received = await received_until_cut(reader)
        assert received.startswith(b"HTTP/1.1 200 "), received
        assert received.endswith(b'{"status": "ok"}'), "answered whole, then cut while idle"


async def test_a_trickled_body_gets_408_and_nothing_is_stored(sqlite_url: str) -> None:
    async with (
        bridge_with_users(slow_client_settings(sqlite_url), "alice") as (bridge, users),
        raw_connection(bridge) as (reader, writer),
    ):
        before = await session_count(bridge)
        start = trickled_body_request(users["alice"].token, urlsplit(bridge.url).netloc)
        received = await trickled_until_cut(reader, writer, start)
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), received
        assert b"connection: close" in head.lower()
        assert json.loads(body)["error"]["code"] == "request_timeout"
        assert await session_count(bridge) == before


async def test_a_trickled_body_outside_the_api_gets_408_too(sqlite_url: str) -> None:
    async with (
        running_bridge(slow_client_settings(sqlite_url)) as bridge,
        raw_connection(bridge) as (reader, writer),
    ):
        start = b"POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n"
        received = await trickled_until_cut(reader, writer, start)
        assert received.startswith(b"HTTP/1.1 408 "), received


async def test_normal_and_slow_but_timely_requests_still_work(sqlite_url: str) -> None:
    async with bridge_with_users(slow_client_settings(sqlite_url), "alice") as (_bridge, users):
        alice = users["alice"]
        assert (await alice.get("/me")).ok()["name"] == "alice"
        session = await alice.new_session(title="fast")

        async def in_two_parts() -> AsyncIterator[bytes]:
            yield b'{"agent": "assistant", '
            await asyncio.sleep(BODY_TIMEOUT / 4)
            yield b'"title": "slow but in time"}'

        slow = await alice.call(
            "POST",
            "/sessions",
            data=in_two_parts(),
            headers={"Content-Type": "application/json"},
        )
        assert slow.ok(201)["title"] == "slow but in time"
        assert slow.body["id"] != session["id"]
        # The same pooled keep-alive connection after a pause shorter than the timeout.
        await asyncio.sleep(HEADER_TIMEOUT / 4)
        assert (await alice.get(f"/sessions/{session['id']}")).ok()["title"] == "fast"


async def test_a_live_websocket_outlives_both_timeouts(sqlite_url: str) -> None:
    async with (
        user_with_session(slow_client_settings(sqlite_url)) as (_bridge, alice, session),
        alice.live() as live,
    ):
        await asyncio.sleep(HEADER_TIMEOUT + BODY_TIMEOUT + 1)
        sent = await alice.say(session["id"], "still there?")
        reply = await live.reply_to(sent["id"])
        assert reply["content"] == "still there?"


async def test_many_trickling_connections_do_not_starve_a_normal_request(
    sqlite_url: str,
) -> None:
    async with (
        bridge_with_users(slow_client_settings(sqlite_url), "alice") as (bridge, users),
        contextlib.AsyncExitStack() as stack,
    ):
        host = urlsplit(bridge.url).netloc
        readers: list[asyncio.StreamReader] = []
        senders: list[asyncio.Task[None]] = []
        for number in range(50):
            reader, writer = await stack.enter_async_context(raw_connection(bridge))
            if number % 2:
                writer.write(b"GET / HTTP/1.1\r\nHo")
            else:
                writer.write(trickled_body_request(users["alice"].token, host))
            senders.append(asyncio.create_task(trickle(writer)))
            readers.append(reader)
        try:
            async with asyncio.timeout(CUT_WITHIN):
                assert (await users["alice"].get("/me")).ok()["name"] == "alice"
            await asyncio.gather(*(received_until_cut(reader) for reader in readers))
        finally:
            for sender in senders:
                sender.cancel()
        async with aiohttp.ClientSession() as http, http.get(bridge.url + "/healthz") as response:
            assert response.status == 200
