"""What an agent is given of the files of the message it answers: each ``attachments`` row
as an :class:`~bridge.agents.base.AgentAttachment`, with a way to read a stored file's bytes
from the file store and to make a signed link to it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from bridge.agents.base import AgentAttachment
from bridge.files.links import FileLinks
from bridge.files.store import FileStore
from bridge.store.models import AttachmentState


class AgentFiles:
    """The file store and the link signer the answer step hands agents their files with."""

    def __init__(
        self, *, store: FileStore, links: FileLinks, model_content_types: Iterable[str]
    ) -> None:
        self._store = store
        self._links = links
        self._model_types = frozenset(t.strip().lower() for t in model_content_types)

    def attachments(self, rows: Iterable[Any]) -> tuple[AgentAttachment, ...]:
        """``rows`` (id, name, content_type, size, storage_key, state, reason) as agents see
        them; only a stored file can be read or linked."""
        return tuple(self._attachment(row) for row in rows)

    def _attachment(self, row: Any) -> AgentAttachment:
        stored = row.state == AttachmentState.STORED and row.storage_key is not None
        media_type = (row.content_type or "").split(";", 1)[0].strip().lower()
        return AgentAttachment(
            id=int(row.id),
            name=row.name,
            content_type=row.content_type,
            size=row.size,
            state=row.state,
            reason=row.reason,
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
    return tuple(
        AgentAttachment(
            id=int(row.id),
            name=row.name,
            content_type=row.content_type,
            size=row.size,
            state=row.state,
            reason=row.reason,
        )
        for row in rows
    )
