"""Fetching the files a platform sent, in the answer step, just before the agent is given them.

Off the acknowledgement path: ingest stores a platform file as a ``pending`` row with the
``source`` its channel recorded, the platform is acknowledged, and the answer step (outside
any open transaction) asks that channel to fetch it: bounded in size (``files.max_bytes``) and
time (``files.download_timeout_seconds`` per attempt), from the platform's own hosts only (the
channel refuses anything else), transient failures retried a few times with a short backoff.
The outcome is kept on the row: ``stored`` (content in the file store), ``refused`` (fetching
again cannot help) or ``failed`` (it kept failing), with the reason. A file that is not stored
never holds the answer up: the agent is told it is not shown, and why.

Rows change only while they are still ``pending`` (``WHERE state = 'pending'``), so two
processes never both settle one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.files.agent_files import AGENT_FILE_COLUMNS
from bridge.files.intake import safe_content_type
from bridge.files.settings import FilesSettings
from bridge.files.store import FileStore, content_key
from bridge.infra.logs import log_event
from bridge.infra.metrics import Metrics
from bridge.ports.contract import Channel, FetchedFile, FileFetchingChannel
from bridge.ports.errors import FileFetchError
from bridge.store.models import ATTACHMENTS, AttachmentState, utcnow

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""Attempts in all for one file within one answer."""
RETRY_DELAYS = (0.5, 1.0)
"""The wait before the second and the third attempt."""
CONCURRENCY = 4
"""Files of one message fetched at the same time at most."""
VAGUE_TYPES = frozenset(
    {"", "application/octet-stream", "binary/octet-stream", "application/unknown"}
)
"""Content types that say nothing: the fetched type replaces them."""


class ChannelLookup(Protocol):
    def get(self, name: str, agent_slug: str) -> Channel | None: ...


@dataclass(frozen=True, slots=True)
class _Settled:
    """How one file ended: the row's new columns and what the log and metrics say."""

    state: str
    attempts: int
    reason: str | None = None
    values: Mapping[str, Any] | None = None


_PENDING = select(
    ATTACHMENTS.c.id,
    ATTACHMENTS.c.name,
    ATTACHMENTS.c.content_type,
    ATTACHMENTS.c.source,
    ATTACHMENTS.c.attempts,
).where(ATTACHMENTS.c.state == AttachmentState.PENDING)

_ROWS = select(*AGENT_FILE_COLUMNS).order_by(ATTACHMENTS.c.position)


class FileFetcher:
    """Fetches a message's ``pending`` files through the channel it came from."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        channels: ChannelLookup,
        store: FileStore,
        settings: FilesSettings,
        metrics: Metrics,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self._sessions = sessions
        self._channels = channels
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._delays = tuple(retry_delays)

    async def fetch(
        self, *, message_id: int, channel: str, agent_slug: str, agent_id: int
    ) -> list[Any]:
        """Settle every pending file of the message; its attachment rows afterwards, in order
        (id, name, content_type, size, storage_key, state, reason)."""
        async with self._sessions() as db:
            pending = list(
                await db.execute(
                    _PENDING.where(ATTACHMENTS.c.message_id == message_id).order_by(
                        ATTACHMENTS.c.position
                    )
                )
            )
        if pending:
            source = self._channels.get(channel, agent_slug)
            limit = asyncio.Semaphore(CONCURRENCY)

            async def one(row: Any) -> None:
                async with limit:
                    settled = await self._settle(row, source, channel=channel, agent_id=agent_id)
                await self._record(row, settled, channel=channel, message_id=message_id)

            await asyncio.gather(*(one(row) for row in pending))
        async with self._sessions() as db:
            return list(await db.execute(_ROWS.where(ATTACHMENTS.c.message_id == message_id)))

    async def _settle(
        self, row: Any, source: Channel | None, *, channel: str, agent_id: int
    ) -> _Settled:
        if not isinstance(source, FileFetchingChannel):
            reason = f"the {channel} channel cannot fetch files"
            return _Settled(state=AttachmentState.FAILED, attempts=row.attempts, reason=reason)
        attempts, reason = int(row.attempts), "the file could not be fetched"
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                await asyncio.sleep(self._delays[min(attempt, len(self._delays)) - 1])
            attempts += 1
            try:
                fetched = await self._download(source, row.source or {})
                return await self._keep(row, fetched, attempts=attempts, agent_id=agent_id)
            except FileFetchError as error:
                if error.permanent:
                    return _Settled(
                        state=AttachmentState.REFUSED, attempts=attempts, reason=str(error)
                    )
                reason = str(error) or reason
            except TimeoutError:
                reason = (
                    f"the download took longer than {self._settings.download_timeout_seconds:g} s"
                )
            except Exception as error:  # a channel's or the store's bug: one line, no detail
                reason = f"the file could not be fetched ({type(error).__name__})"
        return _Settled(state=AttachmentState.FAILED, attempts=attempts, reason=reason)

    async def _download(
        self, channel: FileFetchingChannel, source: Mapping[str, object]
    ) -> FetchedFile:
        max_bytes = self._settings.max_bytes
        async with asyncio.timeout(self._settings.download_timeout_seconds):
            fetched = await channel.fetch_file(source, max_bytes=max_bytes)
        if len(fetched.data) > max_bytes:  # a channel that read past the limit anyway
            raise FileFetchError(f"larger than the {max_bytes} bytes allowed", permanent=True)
        return fetched

    async def _keep(
        self, row: Any, fetched: FetchedFile, *, attempts: int, agent_id: int
    ) -> _Settled:
        sha256 = hashlib.sha256(fetched.data).hexdigest()
        key = content_key(agent_id, sha256)
        await self._store.put(key, fetched.data)
        return _Settled(
            state=AttachmentState.STORED,
            attempts=attempts,
            values={
                "sha256": sha256,
                "storage_key": key,
                "size": len(fetched.data),
                "content_type": _content_type(row.content_type, fetched.content_type),
            },
        )

    async def _record(self, row: Any, settled: _Settled, *, channel: str, message_id: int) -> None:
        async with self._sessions() as db, db.begin():
            changed = await db.execute(
                update(ATTACHMENTS)
                .where(ATTACHMENTS.c.id == row.id, ATTACHMENTS.c.state == AttachmentState.PENDING)
                .values(
                    state=settled.state,
                    reason=settled.reason,
                    attempts=settled.attempts,
                    next_attempt_at=None,
                    updated_at=utcnow(),
                    **(settled.values or {}),
                )
            )
        if changed.rowcount == 0:  # type: ignore[attr-defined]  # settled by another process
            return
        self._metrics.files_fetched.labels(channel, settled.state).inc()
        fields = {"channel": channel, "message": message_id, "file": row.id}
        if settled.state == AttachmentState.STORED:
            size = int((settled.values or {}).get("size", 0))
            self._metrics.files_fetched_bytes.labels(channel).inc(size)
            log_event(logger, "file.fetched", **fields, size=size, attempts=settled.attempts)
        else:
            log_event(
                logger,
                "file.fetch_failed",
                level=logging.WARNING,
                **fields,
                outcome=settled.state,
                reason=settled.reason,
                attempts=settled.attempts,
            )


def _content_type(listed: str | None, fetched: str | None) -> str | None:
    """The row's type unless it says nothing, then what the platform served (made safe)."""
    if listed is not None and listed.split(";", 1)[0].strip().lower() not in VAGUE_TYPES:
        return listed
    if fetched is None:
        return listed
    return safe_content_type(fetched)
