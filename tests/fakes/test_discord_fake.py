"""The Discord fake speaks Discord's protocol: proven with the real, unmodified discord.py.

Only the two endpoints are redirected (``Route.BASE`` and ``DEFAULT_GATEWAY``, reference
§2.7). If these pass, a service test against :class:`tests.fakes.discord.FakeDiscord` meets
the same login, gateway sequence, errors, rate limits, resumes and replays as at Discord.
Every test fails if anything logs an ERROR: discord.py logging one means the fake is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest
import yarl

from tests.fakes.discord import (
    DEFAULT_BOT_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_THREAD_ID,
    DEFAULT_TOKEN,
    DEFAULT_USER_ID,
    EDIT_METHOD,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILDS,
    INTENT_MESSAGE_CONTENT,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    shard_for,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures"
GOLDEN_MENTION = FIXTURE / "discord_message_create_guild_mention.json"
WAIT = 5.0


# --- wiring --------------------------------------------------------------------------------


def redirect(monkeypatch: pytest.MonkeyPatch, fake: FakeDiscord) -> None:
    """Point discord.py at the fake; test-only patching of library internals (§2.7)."""
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base_url)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url)
    )


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Silence nothing: an ERROR from discord.py (or aiohttp, asyncio) is a bug in the fake."""
    caplog.set_level(logging.INFO, logger="discord")
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        redirect(monkeypatch, server)
        yield server


def message_content_intents() -> discord.Intents:
    intents = discord.Intents.default()
    intents.message_content = True
    return intents


class Recorder:
    """What the tests observe of a client: messages, edits, deletes, ready and resumed."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.edits: asyncio.Queue[tuple[discord.Message, discord.Message]] = asyncio.Queue()
        self.deletes: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.ready = asyncio.Event()
        self.resumed = 0
        self.own_id = int(DEFAULT_BOT_ID)  # the client's user id, set by running()

    async def next_message(self, *, skip_own: bool = True) -> discord.Message:
        """The next message from someone else (the bot's own posts come back over the
        gateway too, as at Discord)."""
        async with asyncio.timeout(WAIT):
            while True:
                message = await self.messages.get()
                if not (skip_own and message.author.id == self.own_id):
                    return message

    async def expect_no_message(self, within: float = 0.3) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                message = await self.next_message()
                raise AssertionError(f"unexpected message: {message.content!r}")


class RecordingMixin:
    """Hooks a :class:`Recorder` into a client. ``before_identify_hook`` is overridden so a
    re-IDENTIFY (or a second shard) does not wait discord.py's default 5 seconds."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("intents", message_content_intents())
        options.setdefault("guild_ready_timeout", 0.1)
        super().__init__(**options)  # the client's
        self.recorder = Recorder()

    async def on_message(self, message: discord.Message) -> None:
        self.recorder.messages.put_nowait(message)

    async def on_message_edit(self, before: discord.Message, after: discord.Message) -> None:
        self.recorder.edits.put_nowait((before, after))

    async def on_message_delete(self, message: discord.Message) -> None:
        self.recorder.deletes.put_nowait(message)

    async def on_ready(self) -> None:
        self.recorder.ready.set()

    async def on_resumed(self) -> None:
        self.recorder.resumed += 1

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None


class Bot(RecordingMixin, discord.Client):
    pass


class ShardedBot(RecordingMixin, discord.AutoShardedClient):
    pass


@contextlib.asynccontextmanager
async def running(
    client: Bot | ShardedBot, token: str = DEFAULT_TOKEN, *, ready: bool = True
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``client.start`` in a task until the block ends; then close it and re-raise
    anything ``start`` raised, so a crashed client fails the test."""
    task = asyncio.create_task(client.start(token))
    try:
        if ready:
            waiter = asyncio.create_task(client.recorder.ready.wait())
            try:
                await asyncio.wait({task, waiter}, timeout=WAIT, return_when="FIRST_COMPLETED")
            finally:
                waiter.cancel()
            if task.done():
                task.result()  # start() ended before on_ready: raise what it raised
            assert client.is_ready(), "no on_ready in time"
            assert client.user is not None
            client.recorder.own_id = client.user.id
        yield task
    finally:
        await client.close()
        async with asyncio.timeout(WAIT):
            await task


async def start_expecting(client: Bot, error: type[BaseException]) -> BaseException:
    """``client.start`` must fail with ``error``; the client is closed either way."""
    try:
        with pytest.raises(error) as caught:
            async with asyncio.timeout(WAIT):
                await client.start(DEFAULT_TOKEN)
    finally:
        await client.close()
    return caught.value


async def text_channel(client: discord.Client, channel_id: str = DEFAULT_CHANNEL_ID) -> Any:
    channel = client.get_channel(int(channel_id))
    assert channel is not None
    return channel


# --- REST, raw ------------------------------------------------------------------------------


async def test_rest_answers_bare_json_checks_the_token_and_records(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http:
        good = {"Authorization": f"Bot {DEFAULT_TOKEN}"}
        async with http.get(f"{fake.api_base_url}/users/@me", headers=good) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json"
            me = await response.json()
        assert me["id"] == DEFAULT_BOT_ID and me["bot"] is True
        async with http.get(
            f"{fake.api_base_url}/users/@me", headers={"Authorization": "Bot nope"}
        ) as response:
            assert response.status == 401
            assert await response.json() == {"message": "401: Unauthorized", "code": 0}
        async with http.get(f"{fake.api_base_url}/gateway/bot", headers=good) as response:
            gateway = await response.json()
        assert gateway["url"] == fake.gateway_url
        assert set(gateway["session_start_limit"]) == {
            "total",
            "remaining",
            "reset_after",
            "max_concurrency",
        }
        async with http.get(f"{fake.api_base_url}/gateway", headers=good) as response:
            assert await response.json() == {"url": fake.gateway_url}
        async with http.post(f"{fake.api_base_url}/no/such/route", headers=good) as response:
            assert response.status == 404
            assert response.headers["Content-Type"] == "application/json"
            assert await response.json() == {"message": "404: Not Found", "code": 0}
        async with http.post(
            f"{fake.api_base_url}/channels/{DEFAULT_CHANNEL_ID}/messages", headers=good, json={}
        ) as response:
            assert response.status == 400
            assert (await response.json())["code"] == 50006  # empty message
        async with http.post(
            f"{fake.api_base_url}/channels/999/messages", headers=good, json={"content": "x"}
        ) as response:
            assert response.status == 404
            assert (await response.json()) == {"message": "Unknown Channel", "code": 10003}
    assert [(r.method, r.path, r.status) for r in fake.requests] == [
        ("GET", "/api/v10/users/@me", 200),
        ("GET", "/api/v10/users/@me", 401),
        ("GET", "/api/v10/gateway/bot", 200),
        ("GET", "/api/v10/gateway", 200),
        ("POST", "/api/v10/no/such/route", 404),
        ("POST", f"/api/v10/channels/{DEFAULT_CHANNEL_ID}/messages", 400),
        ("POST", "/api/v10/channels/999/messages", 404),
    ]
    assert fake.posts == []


# --- login and the gateway sequence ---------------------------------------------------------


async def test_client_logs_in_and_builds_the_guild(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        assert client.user is not None and client.user.id == int(DEFAULT_BOT_ID)
        assert client.application_id == int(DEFAULT_BOT_ID)
        guild = client.get_guild(int(DEFAULT_GUILD_ID))
        assert guild is not None and guild.name == "Test Guild"
        channel = guild.get_channel(int(DEFAULT_CHANNEL_ID))
        assert isinstance(channel, discord.TextChannel) and channel.name == "general"
        thread = guild.get_thread(int(DEFAULT_THREAD_ID))
        assert isinstance(thread, discord.Thread) and thread.parent == channel
        assert guild.me is not None and guild.me.bot
        assert guild.default_role.id == guild.id
        assert channel.permissions_for(guild.me).send_messages
    paths = [r.path for r in fake.requests]
    assert paths[:2] == ["/api/v10/users/@me", "/api/v10/oauth2/applications/@me"]
    assert "/api/v10/gateway/bot" not in paths  # a plain Client never asks (§2.2)
    (identify,) = fake.identifies
    assert identify.intents == message_content_intents().value
    assert (identify.shard_id, identify.shard_count) == (0, 1)
    connection = fake.connections[0]
    assert connection.query == {"v": "10", "encoding": "json", "compress": "zlib-stream"}
    assert connection.heartbeats >= 1  # discord.py beats at once after HELLO
    assert [p["t"] for p in fake.session(0).log] == ["READY", "GUILD_CREATE"]


async def test_guild_mention_reaches_on_message_like_the_golden_payload(
    fake: FakeDiscord,
) -> None:
    golden = json.loads(GOLDEN_MENTION.read_text())["d"]
    client = Bot()
    async with running(client):
        sent = await fake.send_message(content="what's the weather?", mentions_bot=True)
        message = await client.recorder.next_message()
        assert message.id == int(sent["id"])
        assert message.content == f"<@{DEFAULT_BOT_ID}> what's the weather?"
        assert isinstance(message.channel, discord.TextChannel)
        assert isinstance(message.author, discord.Member) and not message.author.bot
        assert client.user in message.mentions
        # The fake's payload has every key of the golden one, so parsers see the same shape.
        assert set(golden) - set(sent) <= {"nonce"} and "nonce" in sent
        assert set(golden["member"]) <= set(sent["member"])
        # The golden payload itself, dispatched as is, is accepted by discord.py too.
        await fake.dispatch_event("MESSAGE_CREATE", golden)
        replayed = await client.recorder.next_message()
        assert replayed.id == int(golden["id"]) and client.user in replayed.mentions


async def test_reply_creates_a_post_with_reference_and_nonce(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        await fake.send_message(content="hello", mentions_bot=True)
        message = await client.recorder.next_message()
        reply = await message.reply("x")
        post = await fake.next_post()
        assert post["id"] == str(reply.id) and post["content"] == "x" and post["type"] == 19
        assert post["message_reference"]["message_id"] == str(message.id)
        assert post["author"]["id"] == DEFAULT_BOT_ID
        (request,) = fake.requests_to("POST", r"/api/v10/channels/\d+/messages")
        assert request.json["message_reference"] == {
            "message_id": message.id,
            "channel_id": message.channel.id,
            "guild_id": message.guild.id if message.guild else None,
        }
        assert request.json["enforce_nonce"] is True
        assert post["nonce"] == request.json["nonce"]
        assert reply.reference is not None and reply.reference.message_id == message.id
        # Discord sends the bot its own message over the gateway: the loop guard's case.
        async with asyncio.timeout(WAIT):
            echo = await client.recorder.messages.get()
        assert echo.author == client.user and echo.id == reply.id


async def test_long_content_is_a_400_and_creates_nothing(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        channel = await text_channel(client)
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send("x" * 2001)
        assert caught.value.status == 400 and caught.value.code == 50035
        assert "In content: Must be 2000 or fewer in length." in caught.value.text
        refused = fake.requests_to("POST", r".*/messages")[-1].response
        assert refused == {
            "code": 50035,
            "message": "Invalid Form Body",
            "errors": {
                "content": {
                    "_errors": [
                        {
                            "code": "BASE_TYPE_MAX_LENGTH",
                            "message": "Must be 2000 or fewer in length.",
                        }
                    ]
                }
            },
        }
        assert fake.posts == []
        await channel.send("x" * 2000)
        assert len(fake.posts) == 1


async def test_reference_to_an_unknown_message_is_a_400(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        channel = await text_channel(client)
        reference = discord.MessageReference(message_id=12345, channel_id=channel.id)
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send("x", reference=reference)
        assert caught.value.status == 400 and caught.value.code == 50035
        refused = fake.requests_to("POST", r".*/messages")[-1].response
        assert "MESSAGE_REFERENCE_UNKNOWN_MESSAGE" in json.dumps(refused)
        loose = discord.MessageReference(
            message_id=12345, channel_id=channel.id, fail_if_not_exists=False
        )
        sent = await channel.send("y", reference=loose)
        assert sent.reference is None and len(fake.posts) == 1


async def test_a_429_is_waited_out_and_retried_once(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        channel = await text_channel(client)
        fake.fail_next_posts(1, retry_after=0.2)
        started = time.monotonic()
        sent = await channel.send("after the limit")
        assert time.monotonic() - started >= 0.2
        assert [p["id"] for p in fake.posts] == [str(sent.id)]
        first, second = fake.requests_to("POST", r"/api/v10/channels/\d+/messages")
        assert (first.status, second.status) == (429, 200)
        assert first.json == second.json  # the same request, nonce included


async def test_a_500_is_retried_and_posts_can_be_slowed(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        channel = await text_channel(client)
        fake.fail_next_posts(1, status=500)
        await channel.send("after a 500")  # discord.py waits 1 s before the retry
        assert [r.status for r in fake.requests_to("POST", r".*/messages")] == [500, 200]
        fake.post_delay_seconds = 0.3
        started = time.monotonic()
        await channel.send("slow")
        assert time.monotonic() - started >= 0.3
        assert len(fake.posts) == 2


async def test_the_same_nonce_returns_the_original_message(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        channel = await text_channel(client)
        first = await channel.send("once", nonce="delivery-42")
        again = await channel.send("once", nonce="delivery-42")
        assert again.id == first.id
        assert len(fake.posts) == 1 and len(fake.nonce_hits) == 1
        other = await channel.send("twice", nonce="delivery-43")
        assert other.id != first.id and len(fake.posts) == 2


# --- channels, threads, DMs, history ---------------------------------------------------------


async def test_threads_dms_typing_history_and_fetches(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        await fake.send_message(channel_id=DEFAULT_THREAD_ID, content="in a thread")
        in_thread = await client.recorder.next_message()
        assert isinstance(in_thread.channel, discord.Thread)
        await in_thread.reply("thread answer")
        assert (await fake.next_post())["channel_id"] == DEFAULT_THREAD_ID

        dm_id = fake.create_dm_channel(DEFAULT_USER_ID)
        await fake.send_message(channel_id=dm_id, content="psst")
        in_dm = await client.recorder.next_message()
        assert isinstance(in_dm.channel, discord.DMChannel) and in_dm.guild is None
        await in_dm.reply("hi back")
        post = await fake.next_post()
        assert post["channel_id"] == dm_id and "guild_id" not in post["message_reference"]
        user = await client.fetch_user(int(DEFAULT_USER_ID))
        dm = await user.create_dm()
        assert dm.id == int(dm_id)

        channel = await text_channel(client)
        await channel.typing()
        assert fake.typing == [DEFAULT_CHANNEL_ID]
        await fake.send_message(content="one")
        await fake.send_message(content="two")
        history = [m.content async for m in channel.history(limit=10)]
        assert history == ["two", "one"]  # newest first
        fetched = await client.fetch_channel(int(DEFAULT_THREAD_ID))
        assert isinstance(fetched, discord.Thread)
        with pytest.raises(discord.NotFound):
            await client.fetch_channel(42)


async def test_edits_and_deletes_are_dispatched(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        sent = await fake.send_message(content="typo")
        await client.recorder.next_message()
        await fake.edit_message(channel_id=DEFAULT_CHANNEL_ID, message_id=sent["id"], content="ok")
        async with asyncio.timeout(WAIT):
            before, after = await client.recorder.edits.get()
        assert (before.content, after.content) == ("typo", "ok")
        await fake.delete_message(channel_id=DEFAULT_CHANNEL_ID, message_id=sent["id"])
        async with asyncio.timeout(WAIT):
            deleted = await client.recorder.deletes.get()
        assert deleted.id == int(sent["id"])

        # The bot's own message, edited and deleted through REST (PATCH / DELETE).
        channel = await text_channel(client)
        own = await channel.send("draft")
        edited = await own.edit(content="final")
        assert edited.content == "final" and edited.edited_at is not None
        assert fake.messages(DEFAULT_CHANNEL_ID)[-1]["content"] == "final"
        await own.delete()
        assert all(m["id"] != str(own.id) for m in fake.messages(DEFAULT_CHANNEL_ID))
        theirs = await fake.send_message(content="not yours", dispatch=False)
        fetched = await channel.fetch_message(int(theirs["id"]))
        with pytest.raises(discord.Forbidden):
            await fetched.edit(content="x")


async def test_attachments_are_uploaded_as_multipart(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        channel = await text_channel(client)
        sent = await channel.send("see file", file=discord.File(io.BytesIO(b"abc"), "a.txt"))
        assert [(a.filename, a.size) for a in sent.attachments] == [("a.txt", 3)]
        post = await fake.next_post()
        assert post["content"] == "see file" and post["attachments"][0]["filename"] == "a.txt"
        (request,) = fake.requests_to("POST", r".*/messages")
        assert request.headers["Authorization"] == f"Bot {DEFAULT_TOKEN}"
        assert request.json["content"] == "see file"  # from payload_json


# --- resume, replay, reconnects --------------------------------------------------------------


async def test_reconnect_op7_makes_the_client_resume(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        await fake.request_reconnect()
        await fake.wait_resumed()
        assert fake.resume_count(0) == 1 and fake.identify_count(0) == 1
        assert len(fake.connections) == 2
        await fake.send_message(content="after the resume")
        assert (await client.recorder.next_message()).content == "after the resume"
        assert client.recorder.resumed == 1


async def test_a_replay_after_resume_delivers_a_message_twice(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        sent = await fake.send_message(content="only once, please", mentions_bot=True)
        first = await client.recorder.next_message()
        from_seq = await fake.force_resume_replaying_last(1)
        await fake.wait_resumed()
        second = await client.recorder.next_message()
        assert first.id == second.id == int(sent["id"])
        (resume,) = [r for r in fake.resumes if r.accepted]
        assert resume.seq is not None and resume.seq > from_seq and resume.replayed == 1


async def test_a_dropped_connection_is_resumed(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        await fake.drop_connection()
        await fake.wait_resumed()
        await fake.send_message(content="still here")
        assert (await client.recorder.next_message()).content == "still here"


async def test_close_4000_resumes_and_4009_forces_a_new_identify(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        await fake.close_gateway(4000)
        await fake.wait_resumed()
        await fake.close_gateway(4009)  # session timed out: Discord forgets it
        await fake.wait_identified(count=2)
        assert [r.accepted for r in fake.resumes] == [True, False]
        await fake.send_message(content="new session")
        assert (await client.recorder.next_message()).content == "new session"


async def test_invalid_session(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        await fake.invalidate_session(resumable=True)
        await fake.wait_resumed()
        await fake.invalidate_session(resumable=False)
        await fake.wait_identified(count=2)
        assert fake.resume_count() == 1
        await fake.send_message(content="after op 9")
        assert (await client.recorder.next_message()).content == "after op 9"


async def test_missing_heartbeat_acks_make_the_client_resume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeDiscord(heartbeat_interval_ms=100) as fake:
        redirect(monkeypatch, fake)
        client = Bot(heartbeat_timeout=0.5)
        async with running(client):
            fake.ack_heartbeats = False
            await fake.wait_resumed()
            fake.ack_heartbeats = True
            await fake.send_message(content="alive")
            assert (await client.recorder.next_message()).content == "alive"


async def test_zlib_stream_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeDiscord(zlib_stream=True) as fake:
        redirect(monkeypatch, fake)
        client = Bot()
        async with running(client):
            await fake.send_message(content="compressed", mentions_bot=True)
            assert (await client.recorder.next_message()).content.endswith("compressed")
        assert fake.connections[0].compressor is not None


# --- refusals -------------------------------------------------------------------------------


async def test_wrong_token_is_a_login_failure(fake: FakeDiscord) -> None:
    client = Bot()
    try:
        with pytest.raises(discord.LoginFailure):
            async with asyncio.timeout(WAIT):
                await client.start("not-the-token")
    finally:
        await client.close()
    assert [(r.path, r.status) for r in fake.requests] == [("/api/v10/users/@me", 401)]
    assert fake.connections == []


async def test_disallowed_message_content_intent_closes_4014(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeDiscord(message_content_allowed=False) as fake:
        redirect(monkeypatch, fake)
        await start_expecting(Bot(), discord.PrivilegedIntentsRequired)
        assert fake.connections[0].close_code == 4014
        assert fake.identifies == []


async def test_a_token_revoked_after_login_closes_4004(fake: FakeDiscord) -> None:
    class RevokedBot(Bot):
        async def setup_hook(self) -> None:
            fake.token = "rotated"  # between the REST login and IDENTIFY

    error = await start_expecting(RevokedBot(), discord.ConnectionClosed)
    assert isinstance(error, discord.ConnectionClosed) and error.code == 4004


async def test_close_4004_on_a_live_connection_ends_start(fake: FakeDiscord) -> None:
    client = Bot()
    with pytest.raises(discord.ConnectionClosed) as caught:
        async with running(client) as task:
            await fake.close_gateway(4004)
            await asyncio.wait_for(task, WAIT)
    assert caught.value.code == 4004


async def test_without_message_content_guild_text_is_blank(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeDiscord(message_content_allowed=False) as fake:
        redirect(monkeypatch, fake)
        client = Bot(intents=discord.Intents.default())
        async with running(client):
            assert not fake.identifies[0].intents & INTENT_MESSAGE_CONTENT
            await fake.send_message(content="no mention")
            assert (await client.recorder.next_message()).content == ""
            await fake.send_message(content="mention", mentions_bot=True)
            assert (await client.recorder.next_message()).content.endswith("mention")
            dm_id = fake.create_dm_channel(DEFAULT_USER_ID)
            await fake.send_message(channel_id=dm_id, content="a DM")
            assert (await client.recorder.next_message()).content == "a DM"


# --- sharding -------------------------------------------------------------------------------

GUILD_A = DEFAULT_GUILD_ID  # shard 0 of 2
GUILD_B = str(int(DEFAULT_GUILD_ID) + (1 << 22))  # shard 1 of 2
CHANNEL_B = str(int(GUILD_B) + 1)


@pytest.fixture
async def two_shard_fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    assert (shard_for(GUILD_A, 2), shard_for(GUILD_B, 2)) == (0, 1)
    guilds = [
        FakeGuild(GUILD_A, "A", channels=[FakeChannel(DEFAULT_CHANNEL_ID, "a-general")]),
        FakeGuild(GUILD_B, "B", channels=[FakeChannel(CHANNEL_B, "b-general")]),
    ]
    async with FakeDiscord(guilds=guilds, recommended_shards=2) as server:
        redirect(monkeypatch, server)
        yield server


async def test_shard_0_of_2_gets_only_its_guilds(two_shard_fake: FakeDiscord) -> None:
    fake = two_shard_fake
    client = Bot(shard_id=0, shard_count=2)
    async with running(client):
        assert [g.id for g in client.guilds] == [int(GUILD_A)]
        assert fake.session(0).log[0]["d"]["guilds"] == [{"id": GUILD_A, "unavailable": True}]
        await fake.send_message(channel_id=CHANNEL_B, content="for shard 1")
        await client.recorder.expect_no_message()
        await fake.send_message(channel_id=DEFAULT_CHANNEL_ID, content="for shard 0")
        assert (await client.recorder.next_message()).content == "for shard 0"


async def test_auto_sharded_client_with_shard_ids(two_shard_fake: FakeDiscord) -> None:
    client = ShardedBot(shard_ids=[0], shard_count=2)
    async with running(client):
        assert [g.id for g in client.guilds] == [int(GUILD_A)]
        assert [(r.shard_id, r.shard_count) for r in two_shard_fake.identifies] == [(0, 2)]


async def test_auto_sharded_client_asks_gateway_bot_and_runs_both_shards(
    two_shard_fake: FakeDiscord,
) -> None:
    fake = two_shard_fake
    client = ShardedBot()
    async with running(client):
        assert fake.requests_to("GET", "/api/v10/gateway/bot")
        assert sorted(g.id for g in client.guilds) == sorted([int(GUILD_A), int(GUILD_B)])
        assert sorted(r.shard_id for r in fake.identifies) == [0, 1]
        await fake.send_message(channel_id=CHANNEL_B, content="on shard 1")
        message = await client.recorder.next_message()
        assert message.guild is not None and message.guild.shard_id == 1
        await fake.request_reconnect(shard_id=1)
        await fake.wait_resumed(shard_id=1)
        await fake.send_message(channel_id=CHANNEL_B, content="shard 1 resumed")
        assert (await client.recorder.next_message()).content == "shard 1 resumed"


# --- several bots in one fake ---------------------------------------------------------------

PEER_TOKEN = "fake-peer-token"
PEER_ID = "1100000000000000002"


def test_add_bot_refuses_a_known_token_or_user() -> None:
    fake = FakeDiscord()
    peer = fake.add_bot(token=PEER_TOKEN, user_id=int(PEER_ID), name="peerbot")
    assert (peer.id, peer.name, peer.application_id) == (PEER_ID, "peerbot", PEER_ID)
    assert fake.bot_by_id(PEER_ID) is peer and fake.bot_by_id().user is fake.bot
    assert fake.users[PEER_ID].bot and [b.id for b in fake.bots] == [DEFAULT_BOT_ID, PEER_ID]
    with pytest.raises(ValueError, match="token"):
        fake.add_bot(token=PEER_TOKEN, user_id="1100000000000000003", name="again")
    with pytest.raises(ValueError, match="exists"):
        fake.add_bot(token="other", user_id=DEFAULT_USER_ID, name="alice-bot")
    with pytest.raises(ValueError, match="unknown bot"):
        fake.bot_by_id("42")


async def test_each_token_logs_in_as_its_own_bot_in_the_same_guild(fake: FakeDiscord) -> None:
    fake.add_bot(token=PEER_TOKEN, user_id=PEER_ID, name="peerbot")
    first, peer = Bot(), Bot()
    async with running(first), running(peer, PEER_TOKEN):
        assert first.user is not None and first.user.id == int(DEFAULT_BOT_ID)
        assert peer.user is not None and peer.user.id == int(PEER_ID)
        assert peer.application_id == int(PEER_ID)
        for client in (first, peer):
            guild = client.get_guild(int(DEFAULT_GUILD_ID))
            assert guild is not None and guild.me is not None and client.user is not None
            assert guild.me.id == client.user.id
            (own_role,) = [r for r in guild.me.roles if r.managed]
            assert own_role.tags is not None and own_role.tags.bot_id == client.user.id
            assert (await text_channel(client)).permissions_for(guild.me).send_messages
        assert sorted(r.bot_id for r in fake.identifies) == [DEFAULT_BOT_ID, PEER_ID]
        assert fake.identify_count() == 1 and fake.identify_count(bot_id=PEER_ID) == 1
        assert [p["t"] for p in fake.session(bot_id=PEER_ID).log] == ["READY", "GUILD_CREATE"]
    me = [r for r in fake.requests_to("GET", "/api/v10/users/@me") if r.status == 200]
    assert sorted((r.bot_id, r.response["id"]) for r in me) == [
        (DEFAULT_BOT_ID, DEFAULT_BOT_ID),
        (PEER_ID, PEER_ID),
    ]


async def test_a_message_reaches_every_bot_and_a_bots_post_reaches_the_others(
    fake: FakeDiscord,
) -> None:
    fake.add_bot(token=PEER_TOKEN, user_id=PEER_ID, name="peerbot")
    first, peer = Bot(), Bot()
    async with running(first), running(peer, PEER_TOKEN):
        asked = await fake.send_message(content="over to you", mentions_bot=True, bot_id=PEER_ID)
        assert asked["content"] == f"<@{PEER_ID}> over to you"
        seen_by_first = await first.recorder.next_message()
        seen_by_peer = await peer.recorder.next_message()
        assert seen_by_first.id == seen_by_peer.id == int(asked["id"])
        assert peer.user in seen_by_peer.mentions and first.user not in seen_by_first.mentions

        sent = await (await text_channel(peer)).send(f"<@{DEFAULT_BOT_ID}> yours", nonce="n-1")
        post = await fake.next_post()
        assert post["id"] == str(sent.id) and post["author"]["id"] == PEER_ID
        assert fake.posts_by(PEER_ID) == [post] and fake.posts_by() == []
        (request,) = fake.requests_to("POST", r"/api/v10/channels/\d+/messages")
        assert request.bot_id == PEER_ID
        handed = await first.recorder.next_message()
        assert handed.id == sent.id and handed.author.bot and handed.author.id == int(PEER_ID)
        assert first.user in handed.mentions
        await peer.recorder.expect_no_message()  # its own post comes back, and is skipped

        # Discord dedups a nonce per author: the same nonce from another bot is a new message.
        own = await (await text_channel(first)).send("mine", nonce="n-1")
        assert own.id != sent.id and fake.nonce_hits == []
        assert [p["author"]["id"] for p in fake.posts] == [PEER_ID, DEFAULT_BOT_ID]
        with pytest.raises(discord.Forbidden):
            await (await (await text_channel(first)).fetch_message(sent.id)).edit(content="x")


async def test_a_dm_belongs_to_one_bot_and_echoes_can_be_off_for_the_author(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeDiscord(echo_own_messages=False) as fake:
        redirect(monkeypatch, fake)
        fake.add_bot(token=PEER_TOKEN, user_id=PEER_ID, name="peerbot")
        first, peer = Bot(), Bot()
        async with running(first), running(peer, PEER_TOKEN):
            dm_id = fake.create_dm_channel(DEFAULT_USER_ID, bot_id=PEER_ID)
            assert fake.create_dm_channel(DEFAULT_USER_ID) != dm_id
            await fake.send_message(channel_id=dm_id, content="psst")
            assert (await peer.recorder.next_message()).content == "psst"
            await first.recorder.expect_no_message()
            with pytest.raises(discord.Forbidden):
                await first.fetch_channel(int(dm_id))

            await (await text_channel(peer)).send("heard by the other bot only")
            assert (await first.recorder.next_message()).author.id == int(PEER_ID)
            await peer.recorder.expect_no_message()
            assert all(
                p["d"]["author"]["id"] != PEER_ID
                for p in fake.dispatched(event="MESSAGE_CREATE", bot_id=PEER_ID)
            )


async def test_raw_gateway_identify_and_resume_are_per_bot(fake: FakeDiscord) -> None:
    fake.add_bot(token=PEER_TOKEN, user_id=PEER_ID, name="peerbot")
    url = f"{fake.gateway_url}?v=10&encoding=json"
    intents = INTENT_GUILDS | INTENT_GUILD_MESSAGES | INTENT_MESSAGE_CONTENT
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url) as ws:
            assert (await ws.receive_json(timeout=WAIT))["op"] == 10
            await ws.send_json(
                {"op": 2, "d": {"token": PEER_TOKEN, "intents": intents, "properties": {}}}
            )
            ready = await ws.receive_json(timeout=WAIT)
            guild = await ws.receive_json(timeout=WAIT)
        assert ready["t"] == "READY" and ready["d"]["user"]["id"] == PEER_ID
        assert ready["d"]["application"]["id"] == PEER_ID
        assert guild["t"] == "GUILD_CREATE"
        assert [m["user"]["id"] for m in guild["d"]["members"]] == [PEER_ID]
        session_id = ready["d"]["session_id"]
        assert fake.session(bot_id=PEER_ID).id == session_id
        with pytest.raises(RuntimeError, match="has not identified"):
            fake.session()  # the first bot never connected

        async with http.ws_connect(url) as ws:
            await ws.receive_json(timeout=WAIT)  # HELLO
            resume = {"token": DEFAULT_TOKEN, "session_id": session_id, "seq": 2}
            await ws.send_json({"op": 6, "d": resume})
            assert await ws.receive_json(timeout=WAIT) == {
                "op": 9,
                "d": False,
                "s": None,
                "t": None,
            }
        async with http.ws_connect(url) as ws:
            await ws.receive_json(timeout=WAIT)  # HELLO
            await ws.send_json({"op": 6, "d": {**resume, "token": PEER_TOKEN}})
            assert (await ws.receive_json(timeout=WAIT))["t"] == "RESUMED"
    assert [(r.bot_id, r.accepted) for r in fake.resumes] == [
        (DEFAULT_BOT_ID, False),
        (PEER_ID, True),
    ]


# --- live replies: edits, reactions, rate limits ---------------------------------------------


async def test_edits_are_checked_recorded_and_answered_with_the_message(
    fake: FakeDiscord,
) -> None:
    client = Bot()
    async with running(client):
        channel = await text_channel(client)
        own = await channel.send("draft")
        edited = await own.edit(content="draft, longer")
        assert edited.id == own.id and edited.content == "draft, longer"
        assert fake.edits_of(str(own.id)) == ["draft, longer"]
        with pytest.raises(discord.HTTPException) as too_long:
            await own.edit(content="x" * 2001)
        assert too_long.value.status == 400 and too_long.value.code == 50035
        gone = channel.get_partial_message(42)
        with pytest.raises(discord.NotFound) as unknown:
            await gone.edit(content="x")
        assert unknown.value.code == 10008
        theirs = await fake.send_message(content="not yours", dispatch=False)
        with pytest.raises(discord.Forbidden) as foreign:
            await channel.get_partial_message(int(theirs["id"])).edit(content="x")
        assert foreign.value.code == 50005
        # Only the edits that took effect are recorded, with their content.
        assert [e["content"] for e in fake.edits] == ["draft, longer"]
        assert fake.messages(DEFAULT_CHANNEL_ID)[0]["content"] == "draft, longer"


async def test_an_edit_over_the_bucket_is_a_429_discord_py_waits_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeDiscord(edit_rate_limit=(2, 0.4)) as fake:
        redirect(monkeypatch, fake)
        async with aiohttp.ClientSession() as http:
            good = {"Authorization": f"Bot {DEFAULT_TOKEN}"}
            # In the thread: buckets are per channel, the client's below is another's.
            async with http.post(
                f"{fake.api_base_url}/channels/{DEFAULT_THREAD_ID}/messages",
                headers=good,
                json={"content": "live"},
            ) as response:
                message_id = (await response.json())["id"]
            url = f"{fake.api_base_url}/channels/{DEFAULT_THREAD_ID}/messages/{message_id}"
            answers = []
            for text in ("one", "two", "three"):
                async with http.patch(url, headers=good, json={"content": text}) as response:
                    answers.append((response.status, dict(response.headers), await response.json()))
        (ok, first_headers, _), (_, second_headers, _), (throttled, headers, body) = answers
        assert ok == 200 and first_headers["X-RateLimit-Remaining"] == "1"
        assert second_headers["X-RateLimit-Remaining"] == "0"
        assert throttled == 429
        assert headers["Via"] and headers["X-RateLimit-Scope"] == "user"
        assert body["global"] is False and 0 < body["retry_after"] <= 0.4
        assert fake.edits_of(message_id) == ["one", "two"]  # the throttled one took no effect

        # discord.py reads the bucket's headers and waits instead of meeting the 429; an
        # injected one it waits out and retries.
        client = Bot()
        async with running(client):
            channel = await text_channel(client)
            own = await channel.send("live")
            fake.rate_limit_next(1, retry_after=0.2, method=EDIT_METHOD)
            for text in ("a", "b", "c", "d"):
                own = await own.edit(content=text)
            edits = fake.requests_to("PATCH", rf"/api/v10/channels/\d+/messages/{own.id}")
            assert [r.status for r in edits] == [429, 200, 200, 200, 200]
            assert fake.edits_of(str(own.id)) == ["a", "b", "c", "d"]


async def test_injected_faults_work_on_edits(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        channel = await text_channel(client)
        own = await channel.send("live")
        fake.fail_next(1, 403, method=EDIT_METHOD)
        with pytest.raises(discord.Forbidden):
            await own.edit(content="refused")
        fake.drop_next(1, method=EDIT_METHOD)
        with pytest.raises(aiohttp.ClientError):
            await own.edit(content="landed unanswered")
        assert fake.edits_of(str(own.id)) == ["landed unanswered"]


async def test_reactions_are_percent_decoded_idempotent_and_bounded(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        channel = await text_channel(client)
        asked = await fake.send_message(content="react to me", dispatch=False)
        message = channel.get_partial_message(int(asked["id"]))
        await message.add_reaction("👀")
        await message.add_reaction("👀")  # again: no change
        [put, _] = fake.requests_to("PUT", r".*/reactions/.*/@me")
        assert put.status == 204 and put.path.endswith("/reactions/👀/@me")  # decoded
        assert fake.reactions_on(DEFAULT_CHANNEL_ID, asked["id"]) == ["👀"]
        assert fake.reactions[(DEFAULT_CHANNEL_ID, asked["id"])]["👀"] == [DEFAULT_BOT_ID]
        assert client.user is not None
        await message.remove_reaction("👀", client.user)
        await message.add_reaction("✅")
        assert fake.reactions_on(DEFAULT_CHANNEL_ID, asked["id"]) == ["✅"]
        with pytest.raises(discord.HTTPException) as unknown:
            await message.add_reaction("notanemoji")
        assert unknown.value.code == 10014
        fake.custom_emojis["123"] = "party"
        await message.add_reaction("party:123")
        with pytest.raises(discord.NotFound) as gone:
            await channel.get_partial_message(42).add_reaction("👀")
        assert gone.value.code == 10008
        digits = [f"{n}\N{COMBINING ENCLOSING KEYCAP}" for n in range(10)]
        for emoji in ["🍎", "🍐", "🍊", "🍋", "🍌", "🍉", "🍇", "🍓", *digits]:
            await message.add_reaction(emoji)
        assert len(fake.reactions_on(DEFAULT_CHANNEL_ID, asked["id"])) == 20
        with pytest.raises(discord.HTTPException) as full:
            await message.add_reaction("🍒")
        assert full.value.code == 30010
        await message.add_reaction("🍎")  # an existing one is still fine
    async with aiohttp.ClientSession() as http:
        raw = f"{fake.api_base_url}/channels/{DEFAULT_CHANNEL_ID}/messages/{asked['id']}"
        good = {"Authorization": f"Bot {DEFAULT_TOKEN}"}
        async with http.put(
            yarl.URL(f"{raw}/reactions/%E2%9C%85/@me", encoded=True), headers=good
        ) as response:
            assert response.status == 204
