"""The one entry point for what a channel brings in: a message, an edit or deletion, or a
conversation change (the :class:`bridge.ports.Dispatch` a channel is given)."""

from __future__ import annotations

from typing import overload

from bridge.flow.changes import ChangeApplier
from bridge.flow.ingest import Ingestor
from bridge.ports.events import ConversationChange, InboundMessage, IngestResult, MessageEdit


class Dispatcher:
    def __init__(self, *, ingest: Ingestor, changes: ChangeApplier) -> None:
        self._ingest = ingest
        self._changes = changes

    @overload
    async def __call__(self, event: InboundMessage) -> IngestResult: ...

    @overload
    async def __call__(self, event: MessageEdit) -> bool: ...

    @overload
    async def __call__(self, event: ConversationChange) -> int: ...

    async def __call__(
        self, event: InboundMessage | MessageEdit | ConversationChange
    ) -> IngestResult | bool | int:
        if isinstance(event, InboundMessage):
            return await self._ingest(event)
        if isinstance(event, MessageEdit):
            return await self._changes.apply_edit(event)
        return await self._changes.apply_conversation(event)
