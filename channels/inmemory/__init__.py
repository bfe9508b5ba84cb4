"""An in-memory channel: the core's tests talk through it, and it shows what a channel is.

``receive()`` plays the platform sending a message; ``send()`` records each reply (optionally
also as JSON lines in ``record_file``, so a test can watch a bridge in another process) and can
be told to fail the next attempts. It sends files natively (``Capabilities.sends_files``) as a
platform with two-step uploads does: each file is uploaded, its id recorded through
``Reply.record_upload``, then shared with the message; :meth:`fail_after_upload` crashes an
attempt between recording and sharing, and a file whose upload an earlier attempt recorded
is finished, never uploaded again. ``fetch_file()`` serves the files a test put in ``files``
(a source ``{"inmemory": name}``), from its own host only, and can be told to fail.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
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
from bridge.ports.events import (
    Attachment,
    InboundMessage,
    IngestResult,
    OutgoingFile,
    Reply,
    Sender,
)
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


@dataclass(frozen=True, slots=True, kw_only=True)
class SentFile:
    """A file the platform holds: uploaded once, then shared with a message."""

    platform_id: str
    name: str
    content_type: str
    data: bytes


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
        self.uploads: list[SentFile] = []
        """Each file uploaded, in order (an upload finished by a later attempt once)."""
        self.file_log: list[str] = []
        """``upload:<id>``, ``record:<id>``, ``finish:<id>``, ``share:<id>``, in order."""
        self.shared: dict[int, list[SentFile]] = {}
        """The files shared with each reply (by message id), in order."""
        self._share_failures: deque[Exception] = deque()

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

    def fail_after_upload(self, *errors: Exception) -> None:
        """The next attempts that upload a file raise ``errors``, one each, after recording
        the upload and before sharing it (a crash between the two steps)."""
        self._share_failures.extend(errors)

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
        if reply.files:
            self.shared[reply.message_id] = [await self._upload(reply, f) for f in reply.files]
        self.sent.append(reply)
        if self._settings.record_file:
            await asyncio.to_thread(_append_line, Path(self._settings.record_file), _record(reply))
        self._outbox.put_nowait(reply)
        return [f"memory-{reply.message_id}"]

    async def _upload(self, reply: Reply, file: OutgoingFile) -> SentFile:
        """Upload (unless an earlier attempt did), record, then share."""
        if file.platform_file_id is not None:
            found = next(u for u in self.uploads if u.platform_id == file.platform_file_id)
            self.file_log.append(f"finish:{found.platform_id}")
            self.file_log.append(f"share:{found.platform_id}")
            return found
        uploaded = SentFile(
            platform_id=f"memory-file-{len(self.uploads) + 1}",
            name=file.name,
            content_type=file.content_type,
            data=file.data,
        )
        self.uploads.append(uploaded)
        self.file_log.append(f"upload:{uploaded.platform_id}")
        if reply.record_upload is None:
            raise DeliveryError("a reply with files came without an upload recorder")
        await reply.record_upload(file.attachment_id, uploaded.platform_id)
        self.file_log.append(f"record:{uploaded.platform_id}")
        if self._share_failures:
            raise self._share_failures.popleft()
        self.file_log.append(f"share:{uploaded.platform_id}")
        return uploaded

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


def _record(reply: Reply) -> dict[str, object]:
    """The reply as JSON can hold it: its files by name, type and size."""
    record = asdict(replace(reply, files=(), record_upload=None))
    record["files"] = [
        {"name": f.name, "content_type": f.content_type, "size": len(f.data)} for f in reply.files
    ]
    return record


def _append_line(path: Path, record: dict[str, object]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


plugin = ChannelPlugin(
    name=NAME,
    settings_model=MemoryChannelSettings,
    capabilities=Capabilities(shared_rooms=True, threads=True, streaming=True, sends_files=True),
    create=MemoryChannel,
)
