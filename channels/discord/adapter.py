"""The Discord channel's I/O: one supervised discord.py client per agent, and replies.

The gateway has no acknowledgement and replays events after a RESUME, so every message goes
through ingest, whose unique key on the message id turns a replay into a no-op, also across
processes. A crashed or disconnected client is restarted with backoff; a fatal close (bad
token, privileged intent not enabled) is not retried but reported in /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import discord
import discord.gateway
import discord.http
import yarl

from bridge.infra.logs import log_event
from bridge.ports.contract import ChannelContext, ChannelStatus, FetchedFile
from bridge.ports.errors import DeliveryError, InvalidMessage
from bridge.ports.events import MessageEdit, Reply
from bridge.ports.live import Draft, LiveReply
from channels.discord.files import CdnFiles
from channels.discord.inbound import CHANNEL, Ignored, classify, without_bot_mention
from channels.discord.inbound import post_address as discord_post_address
from channels.discord.live import DONE, WORKING, DiscordLiveReply, react
from channels.discord.seen import seen
from channels.discord.settings import DiscordChannelSettings
from channels.discord.uploads import deliver_with_files, file_limit

logger = logging.getLogger(__name__)

FATAL_CLOSE_CODES = {
    4004: "the bot token was refused (close 4004): check bot_token",
    4010: "invalid shard (close 4010): check shard_ids and shard_count",
    4011: "sharding required (close 4011): set shard_ids and shard_count",
    4012: "invalid API version (close 4012): check gateway_url",
    4013: "invalid intents (close 4013)",
    4014: (
        "privileged intent not enabled (close 4014): enable MESSAGE CONTENT INTENT under "
        "Bot > Privileged Gateway Intents in the Discord Developer Portal"
    ),
}
INGEST_RETRY_SECONDS = (0.5, 1, 2, 4, 8, 15, 30)
"""The gateway cannot redeliver: a message whose store fails is retried for about a minute."""
TYPING_MAX_SECONDS = 120.0
MAX_TYPING_CHANNELS = 1_000
"""Channels shown as typing at once; past this a new message simply gets no indicator (the
indicators are keyed by outside input: every channel a message comes from)."""


def intents() -> discord.Intents:
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = True
    return wanted


def use_endpoints(settings: DiscordChannelSettings) -> None:
    """discord.py keeps its REST base and gateway in class attributes: one per process."""
    base = settings.api_base_url.rstrip("/")
    current = discord.http.Route.BASE
    if current not in (base, "https://discord.com/api/v10"):
        raise RuntimeError(
            f"discord.api_base_url {base!r} differs from another agent's {current!r}; "
            "all Discord agents of one process must use the same server"
        )
    discord.http.Route.BASE = base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


class DiscordChannel:
    name = CHANNEL
    post_address = staticmethod(discord_post_address)  # pure: conversation -> target

    def __init__(
        self,
        *,
        context: ChannelContext[DiscordChannelSettings],
    ) -> None:
        self._agent = context.agent
        self._settings = context.settings
        self._dispatch = context.dispatch
        self._client: discord.Client | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._ready = False
        self._bot_id: str | None = None
        self._fatal: str | None = None
        self._last_error = "connecting"
        self._typing: dict[str, asyncio.Task[None]] = {}
        self._files = CdnFiles(api_base_url=self._settings.api_base_url)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        use_endpoints(self._settings)
        self._stopping.clear()
        self._supervisor = asyncio.create_task(self._supervise(), name="bridge-discord-client")

    async def stop(self) -> None:
        self._stopping.set()
        client = self._client
        if client is not None and not client.is_closed():
            await client.close()
        if self._supervisor is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        for task in self._typing.values():
            task.cancel()
        await asyncio.gather(*self._typing.values(), return_exceptions=True)
        self._typing.clear()
        await self._files.close()

    def status(self) -> ChannelStatus:
        if self._fatal is not None:
            return ChannelStatus(ready=False, detail=self._fatal)
        if self._ready:
            return ChannelStatus(ready=True)
        return ChannelStatus(ready=False, detail=self._last_error)

    def mention_id(self) -> str | None:
        """The bot's user id, so other agents' replies can mention this agent as ``<@id>``.

        Known from the first READY on, and kept across reconnects and restarts: the token,
        so the bot, stays the same. None until then.
        """
        return self._bot_id

    def _build_client(self) -> discord.Client:
        options: dict[str, Any] = {"intents": intents(), "max_ratelimit_timeout": 30.0}
        if self._settings.shard_ids is not None:
            client: discord.Client = discord.AutoShardedClient(
                shard_ids=self._settings.shard_ids,
                shard_count=self._settings.shard_count,
                **options,
            )
        elif self._settings.shard_count is not None:
            client = discord.Client(shard_id=0, shard_count=self._settings.shard_count, **options)
        else:
            client = discord.Client(**options)
        # discord.py dispatches ``on_<event>`` looked up on the client; composition, not a
        # subclass, keeps its types here.
        for event, handler in (
            ("on_ready", self._on_ready),
            ("on_resumed", self._on_ready),
            ("on_disconnect", self._on_disconnect),
            ("on_message", self._on_message),
            ("on_raw_message_edit", self._on_raw_edit),
            ("on_raw_message_delete", self._on_raw_delete),
        ):
            setattr(client, event, handler)
        return client

    async def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            client = self._build_client()
            self._client = client
            try:
                await client.start(self._settings.bot_token.get_secret_value())
                if self._stopping.is_set():
                    return
                problem = "the gateway connection ended"
            except discord.LoginFailure:
                self._give_up("the bot token was refused (401): check bot_token")
                return
            except discord.PrivilegedIntentsRequired:
                self._give_up(FATAL_CLOSE_CODES[4014])
                return
            except discord.ConnectionClosed as error:
                if error.code in FATAL_CLOSE_CODES:
                    self._give_up(FATAL_CLOSE_CODES[error.code])
                    return
                problem = f"gateway closed with {error.code}"
            except Exception as error:  # a crash in discord.py: restart it
                problem = f"{type(error).__name__}: {error}"
            finally:
                self._ready = False
                if not client.is_closed():
                    await client.close()
            self._last_error = f"restarting after: {problem}"
            log_event(
                logger,
                "discord.restarting",
                level=logging.WARNING,
                agent=self._agent.slug,
                error=problem,
                retry_in=f"{delay:.0f}",
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            delay = min(delay * 2, self._settings.restart_max_seconds)

    def _give_up(self, reason: str) -> None:
        self._fatal = reason
        log_event(
            logger, "discord.fatal", level=logging.ERROR, agent=self._agent.slug, error=reason
        )

    # --- inbound -------------------------------------------------------------------------

    async def _on_ready(self, *_args: object) -> None:
        self._ready = True
        self._last_error = ""
        client = self._client
        user = client.user if client is not None else None
        if user is not None:
            self._bot_id = str(user.id)
        log_event(logger, "discord.ready", agent=self._agent.slug, bot=user.id if user else None)

    async def _on_disconnect(self) -> None:
        self._ready = False
        self._last_error = "reconnecting to the gateway"

    async def _on_message(self, message: discord.Message) -> None:
        client = self._client
        if client is None or client.user is None:
            return
        bot_id = str(client.user.id)
        found = classify(
            seen(message, client.user),
            agent_slug=self._agent.slug,
            bot_id=bot_id,
            require_mention=self._settings.require_mention,
        )
        if isinstance(found, Ignored):
            logger.debug("discord message %s ignored: %s", message.id, found.reason)
            return
        result = None
        for wait in (*INGEST_RETRY_SECONDS, None):
            try:
                result = await self._dispatch(found)
                break
            except InvalidMessage as error:
                log_event(logger, "discord.invalid", level=logging.WARNING, error=str(error))
                return
            except Exception as error:
                if wait is None:
                    log_event(
                        logger,
                        "discord.message_lost",
                        level=logging.ERROR,
                        agent=self._agent.slug,
                        message=message.id,
                        error=str(error),
                    )
                    return
                await asyncio.sleep(wait)
        if result is not None and result.to_answer:
            self._start_typing(message.channel)

    async def _on_raw_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        data = payload.data
        client = self._client
        author = data.get("author") or {}
        if "content" not in data or client is None or client.user is None or author.get("bot"):
            return
        text = without_bot_mention(str(data["content"]), str(client.user.id))
        await self._apply_edit(payload.message_id, text)

    async def _on_raw_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._apply_edit(payload.message_id, None)

    async def _apply_edit(self, message_id: int, text: str | None) -> None:
        """Message ids are unique across Discord: no conversation needed to find it."""
        edit = MessageEdit(
            channel=CHANNEL,
            agent_slug=self._agent.slug,
            external_conv_id=None,
            external_message_id=str(message_id),
            text=text,
        )
        await self._dispatch(edit)

    async def fetch_file(self, source: Mapping[str, object], *, max_bytes: int) -> FetchedFile:
        """An attachment's content from Discord's CDN (see :mod:`.files`)."""
        return await self._files.fetch(source, max_bytes=max_bytes)

    # --- typing --------------------------------------------------------------------------

    def _start_typing(self, channel: discord.abc.Messageable) -> None:
        key = str(getattr(channel, "id", ""))
        running = self._typing.get(key)
        if not key or (running is not None and not running.done()):
            return
        if len(self._typing) >= MAX_TYPING_CHANNELS:
            return
        task = asyncio.create_task(_keep_typing(channel), name="bridge-discord-typing")
        self._typing[key] = task
        # An indicator that ends on its own (no reply from this process) frees its place.
        task.add_done_callback(lambda done: self._typing_ended(key, done))

    def _typing_ended(self, key: str, task: asyncio.Task[None]) -> None:
        if self._typing.get(key) is task:
            del self._typing[key]

    def _stop_typing(self, channel_id: str) -> None:
        task = self._typing.pop(channel_id, None)
        if task is not None:
            task.cancel()

    # --- outbound ------------------------------------------------------------------------

    def _messageable(self, target: Mapping[str, str]) -> discord.PartialMessageable:
        client = self._client
        if client is None or client.is_closed() or client.user is None:
            raise DeliveryError("the Discord client is not connected yet", retry_after=5.0)
        guild_id = int(target["guild_id"]) if target.get("guild_id") else None
        return client.get_partial_messageable(int(target["channel_id"]), guild_id=guild_id)

    def _own_user(self) -> discord.ClientUser | None:
        return self._client.user if self._client is not None else None

    async def begin(self, draft: Draft) -> LiveReply:
        """👀 on the user's message (best effort) and the live reply (see :mod:`.live`)."""
        target = draft.reply_target
        channel_id = target.get("channel_id", "")
        if self._settings.status_reactions and channel_id:
            with contextlib.suppress(DeliveryError):
                await react(
                    self._messageable(target),
                    target,
                    own=self._own_user(),
                    add=WORKING,
                    agent=self._agent.slug,
                )
        return DiscordLiveReply(
            channel_of=lambda: self._messageable(target),
            draft=draft,
            streaming=self._settings.streaming == "edit",
            on_text=lambda: self._stop_typing(channel_id),
        )

    async def send(self, reply: Reply) -> Sequence[str]:
        channel = self._messageable(reply.reply_target)
        try:
            limit = file_limit(self._client, reply.reply_target)
            ids = await deliver_with_files(channel, reply, limit=limit, agent=self._agent.slug)
        finally:
            self._stop_typing(reply.reply_target["channel_id"])
        if reply.outcome is not None and self._settings.status_reactions:
            await react(
                channel,
                reply.reply_target,
                own=self._own_user(),
                add=DONE[reply.outcome],
                remove=WORKING,
                agent=self._agent.slug,
            )
        return ids


async def _keep_typing(channel: discord.abc.Messageable) -> None:
    """The indicator lasts ten seconds per call; discord.py repeats it while the block runs."""
    with contextlib.suppress(discord.DiscordException, OSError):
        async with channel.typing():
            await asyncio.sleep(TYPING_MAX_SECONDS)
