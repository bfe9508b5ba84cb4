"""An in-memory channel: the core's tests talk through it, and it shows what a channel is.

``receive()`` plays the platform sending a message; ``send()`` records each reply (optionally
also as JSON lines in ``record_file``, so a test can watch a bridge in another process) and can
be told to fail the next attempts. ``fetch_file()`` serves the files a test put in ``files``
(a source ``{"inmemory": name}``), from its own host only, and can be told to fail.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from bridge.ports import (
    Capabilities,
    ChannelContext,
    ChannelPlugin,
    ChannelStatus,
    PostAddress,
)
from bridge.ports.contract import FetchedFile
from bridge.ports.errors import CannotPost, DeliveryError, FileFetchError
from bridge.ports.events import Attachment, InboundMessage, IngestResult, Reply, Sender
from bridge.ports.live import Draft, LiveReply

NAME = "inmemory"
FILE_HOST = "files.inmemory.invalid"
"""The platform's own file host: a source whose ``url`` names another host is refused."""


class MemoryChannelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    record_file: str | None = None
    """Append every delivered reply to this file as one JSON line."""
    live: bool = False
    """Show replies while they are written (recorded in ``MemoryChannel.shown``)."""
    live_interval_seconds: float = 0.05


class MemoryChannel:
    name = NAME

    def __init__(self, *, context: ChannelContext[MemoryChannelSettings]) -> None:
        self.agent_slug = context.agent.slug
        self._settings = context.settings
        self._dispatch = context.dispatch
        self.sent: list[Reply] = []
        self.attempts: list[tuple[float, Reply]] = []
        self._failures: deque[DeliveryError] = deque()
        self._outbox: asyncio.Queue[Reply] = asyncio.Queue()
        self._running = False
        self.send_delay_seconds = 0.0
        """How long each send takes, as a slow platform would."""
        self.begun: list[Draft] = []
        self.shown: list[tuple[int, str]] = []
        """Each live text shown: (the message answered, the text so far)."""
        self.files: dict[str, tuple[bytes, str | None]] = {}
        """The platform's files a test puts here: name -> (content, content type)."""
        self.fetches: list[str] = []
        """The name of each fetch asked for, in order (failed ones too)."""
        self._fetch_failures: dict[str, deque[FileFetchError]] = {}

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False

    def status(self) -> ChannelStatus:
        return ChannelStatus(ready=self._running, detail="" if self._running else "stopped")

    def mention_id(self) -> str | None:
        return None

    def post_address(
        self,
        *,
        external_conv_id: str,
        thread: str | None,
        last_target: Mapping[str, str] | None,
    ) -> PostAddress:
        """Any ``inmemory:…`` conversation; a thread is its own conversation under it."""
        if not external_conv_id.startswith(f"{NAME}:") or len(external_conv_id) == len(NAME) + 1:
            raise CannotPost("an inmemory conversation id starts with 'inmemory:'")
        if thread:
            conversation = f"{external_conv_id}:{thread}"
            return PostAddress(
                external_conv_id=conversation,
                reply_target={"conversation": conversation},
                is_group=True,
                parent_conv_id=external_conv_id,
            )
        return PostAddress(
            external_conv_id=external_conv_id, reply_target={"conversation": external_conv_id}
        )

    async def begin(self, draft: Draft) -> LiveReply:
        self.begun.append(draft)
        return _MemoryLive(channel=self, draft=draft)

    def fail_next(self, *errors: DeliveryError) -> None:
        self._failures.extend(errors)

    def fail_fetch(self, name: str, *errors: FileFetchError) -> None:
        """The next fetches of ``name`` raise ``errors``, one each, in order."""
        self._fetch_failures.setdefault(name, deque()).extend(errors)

    async def fetch_file(self, source: Mapping[str, object], *, max_bytes: int) -> FetchedFile:
        url = source.get("url")
        if isinstance(url, str) and urlsplit(url).hostname != FILE_HOST:
            raise FileFetchError("the file is not on the platform's own host", permanent=True)
        name = source.get(NAME)
        if not isinstance(name, str):
            raise FileFetchError("the platform gave no way to fetch the file", permanent=True)
        self.fetches.append(name)
        failures = self._fetch_failures.get(name)
        if failures:
            raise failures.popleft()
        if name not in self.files:
            raise FileFetchError("the file is gone from the platform", permanent=True)
        data, content_type = self.files[name]
        if len(data) > max_bytes:
            raise FileFetchError(f"larger than the {max_bytes} bytes allowed", permanent=True)
        return FetchedFile(data=data, content_type=content_type)

    async def receive(
        self,
        text: str,
        *,
        conversation: str = "inmemory:conv-1",
        message_id: str | None = None,
        sender: str = "user-1",
        sender_name: str | None = None,
        is_group: bool = False,
        group_name: str | None = None,
        parent_conversation: str | None = None,
        attachments: Sequence[Attachment] = (),
    ) -> IngestResult:
        return await self._dispatch(
            InboundMessage(
                channel=NAME,
                agent_slug=self.agent_slug,
                external_conv_id=conversation,
                external_message_id=message_id or f"m-{time.monotonic_ns()}",
                sender=Sender(external_id=sender, display_name=sender_name),
                text=text,
                is_group=is_group,
                group_name=group_name,
                parent_conv_id=parent_conversation,
                reply_target={"conversation": conversation},
                attachments=tuple(attachments),
            )
        )

    async def send(self, reply: Reply) -> Sequence[str]:
        self.attempts.append((time.monotonic(), reply))
        if self.send_delay_seconds:
            await asyncio.sleep(self.send_delay_seconds)
        if not self._running:
            raise DeliveryError("memory channel is stopped")
        if self._failures:
            raise self._failures.popleft()
        self.sent.append(reply)
        if self._settings.record_file:
            await asyncio.to_thread(_append_line, Path(self._settings.record_file), asdict(reply))
        self._outbox.put_nowait(reply)
        return [f"memory-{reply.message_id}"]

    async def next_sent(self, within_seconds: float = 10.0) -> Reply:
        async with asyncio.timeout(within_seconds):
            return await self._outbox.get()


class _MemoryLive:
    def __init__(self, *, channel: MemoryChannel, draft: Draft) -> None:
        self._channel = channel
        self._draft = draft
        self.interval_seconds = channel._settings.live_interval_seconds

    async def show(self, text: str) -> Sequence[str]:
        if not self._channel._settings.live:
            return self._draft.started
        self._channel.shown.append((self._draft.reply_to, text))
        return self._draft.started or (f"memory-live-{self._draft.reply_to}",)

    async def close(self) -> None:
        return None


def _append_line(path: Path, record: dict[str, object]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


plugin = ChannelPlugin(
    name=NAME,
    settings_model=MemoryChannelSettings,
    capabilities=Capabilities(shared_rooms=True, threads=True, streaming=True),
    create=MemoryChannel,
)
