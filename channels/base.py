"""The contract between the core and a channel adapter.

A channel is composed, not inherited: it is given an ``ingest`` callable and exposes start, stop
and send. Nothing here imports a platform SDK.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from bridge.events import ConversationChange, InboundMessage, IngestResult, MessageEdit, Reply
from bridge.settings import AgentSettings

Ingest = Callable[[InboundMessage], Awaitable[IngestResult]]
ApplyEdit = Callable[[MessageEdit], Awaitable[bool]]
ApplyConversation = Callable[[ConversationChange], Awaitable[int]]


class DeliveryError(Exception):
    """A send that did not go through.

    ``retry_after`` is the platform's own wait (``Retry-After``) when it gave one; ``permanent``
    means retrying cannot help; ``in_doubt`` means the platform may have accepted it anyway.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        permanent: bool = False,
        in_doubt: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent
        self.in_doubt = in_doubt


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelStatus:
    ready: bool
    detail: str = ""


class Channel(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, reply: Reply) -> Sequence[str]:
        """Deliver one reply; returns the platform's message ids, raises DeliveryError."""
        ...

    def status(self) -> ChannelStatus: ...

    def mention_id(self) -> str | None:
        """This agent's own user id on the platform, so another agent's text can mention it
        natively; None when the platform has no mentions or the id is not known yet."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelContext:
    """What a channel gets to build itself: its agent, its own settings, the core's services."""

    agent: AgentSettings
    settings: BaseModel
    ingest: Ingest
    edit: ApplyEdit
    conversation: ApplyConversation
    web_app: Any
    """The aiohttp ``web.Application`` to add routes to (typed loosely to keep aiohttp optional)."""


ChannelLookup = Callable[[str, str], "Channel | None"]
"""A running channel by (channel name, agent slug), or None."""


class ChannelPlugin(Protocol):
    """What an entry point in group ``bridge.channels`` names."""

    name: str
    settings_model: type[BaseModel]

    def create(self, context: ChannelContext) -> Channel: ...
