"""What an agent is given of the files of the message it answers: each ``attachments`` row
as an :class:`~bridge.agents.base.AgentAttachment`, with a way to read a stored file's bytes
from the file store and to make a signed link to it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bridge.agents.base import AgentAttachment, AgentRequest
from bridge.files.links import FileLinks
from bridge.files.store import FileStore
from bridge.store.models import ATTACHMENTS, AttachmentState

if TYPE_CHECKING:
    from bridge.files.fetch import FileFetcher


AGENT_FILE_COLUMNS = (
    ATTACHMENTS.c.id,
    ATTACHMENTS.c.name,
    ATTACHMENTS.c.content_type,
    ATTACHMENTS.c.size,
    ATTACHMENTS.c.storage_key,
    ATTACHMENTS.c.state,
    ATTACHMENTS.c.reason,
)
"""What :meth:`AgentFiles.attachments` reads of each row, in position order."""


class AgentFiles:
    """The file store and the link signer the answer step hands agents their files with."""

    def __init__(
        self,
        *,
        store: FileStore,
        links: FileLinks,
        model_content_types: Iterable[str],
        fetcher: FileFetcher | None = None,
    ) -> None:
        self._store = store
        self._links = links
        self._model_types = frozenset(t.strip().lower() for t in model_content_types)
        self._fetcher = fetcher

    @property
    def store(self) -> FileStore:
        """Where the answer step also puts the files of agents' replies."""
        return self._store

    async def ready(self, request: AgentRequest, *, agent_id: int) -> AgentRequest:
        """The request once its platform files are fetched (outside any transaction): the
        same request, with no query, when none of its files is pending."""
        if self._fetcher is None or not any(
            file.state == AttachmentState.PENDING for file in request.attachments
        ):
            return request
        rows = await self._fetcher.fetch(
            message_id=request.message_id,
            channel=request.channel,
            agent_slug=request.agent_slug,
            agent_id=agent_id,
        )
        return replace(request, attachments=self.attachments(rows))

    def attachments(self, rows: Iterable[Any]) -> tuple[AgentAttachment, ...]:
        """``rows`` (id, name, content_type, size, storage_key, state, reason) as agents see
        them; only a stored file can be read or linked."""
        return tuple(self._attachment(row) for row in rows)

    def _attachment(self, row: Any) -> AgentAttachment:
        stored = row.state == AttachmentState.STORED and row.storage_key is not None
        media_type = (row.content_type or "").split(";", 1)[0].strip().lower()
        return _metadata(
            row,
            for_model=media_type in self._model_types,
            read=self._reader(row.storage_key) if stored else None,
            link=self._linker(int(row.id)) if stored else None,
        )

    def _reader(self, key: str) -> Callable[[], Awaitable[bytes]]:
        store = self._store

        async def read() -> bytes:
            return await store.get(key)

        return read

    def _linker(self, file_id: int) -> Callable[[], str]:
        links = self._links
        return lambda: links.url(file_id)


def bare_attachments(rows: Iterable[Any]) -> tuple[AgentAttachment, ...]:
    """The rows as metadata only, for a pipeline started without a file store."""
    return tuple(_metadata(row) for row in rows)


def _metadata(row: Any, **access: Any) -> AgentAttachment:
    return AgentAttachment(
        id=int(row.id),
        name=row.name,
        content_type=row.content_type,
        size=row.size,
        state=row.state,
        reason=row.reason,
        **access,
    )
