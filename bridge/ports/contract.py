"""The contract between the core and a channel: what a channel declares, gets and provides.

A channel is composed, not inherited. Its plugin (one :class:`ChannelPlugin` value, named by an
entry point in group ``bridge.channels``) declares the channel's settings model and
:class:`Capabilities`; the core builds each channel once the pipeline runs, handing it a
:class:`ChannelContext` whose ``dispatch`` takes everything the channel brings in. Nothing here
imports a platform SDK.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, overload, runtime_checkable

from pydantic import BaseModel

from bridge.ports.events import (
    ConversationChange,
    InboundMessage,
    IngestResult,
    MessageEdit,
    Reply,
)
from bridge.settings import AgentSettings

if TYPE_CHECKING:
    from aiohttp import web


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What the core needs to know about a channel, so it never branches on a channel's name."""

    stores_replies: bool = False
    """Its replies live in the database alone (the web chat, direct asks): sending only marks
    them delivered, which writes the change live clients and waiting callers read."""
    shared_rooms: bool = False
    """Several agents' bots can sit in one conversation, so a reply that @mentions a peer on the
    same platform hands the conversation to it."""
    peer_sessions: bool = False
    """Each conversation is with another agent: a chain's sender is the session's peer."""
    always_on: bool = False
    """Every agent has it unless its section says ``enabled = false``."""
    threads: bool = False
    """Conversations can be threads under a parent conversation."""
    max_reply_chars: int | None = None
    """The longest message the platform takes; longer replies are sent in parts."""
    webhook: bool = False
    """Receives platform events over HTTP at ``POST /{channel}/{agent}/events``."""
    streaming: bool = False
    """Can show a reply while it is written."""
    sends_files: bool = False
    """Uploads ``Reply.files`` natively, exactly once (``bridge.ports.events.OutgoingFile``)."""


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
class PostAddress:
    """Where a message an agent starts goes: the session's conversation, named as the
    channel's own inbound messages name it (so the people's answers land in the same session),
    and the reply target the channel's ``send`` gets back on the :class:`Reply`."""

    external_conv_id: str
    reply_target: dict[str, str]
    is_group: bool = False
    parent_conv_id: str | None = None
    """A thread's conversation: its session hangs under this one's."""


@runtime_checkable
class PostingChannel(Channel, Protocol):
    """A channel an agent can post to first (``POST /api/v1/agents/{agent}/send``)."""

    def post_address(
        self,
        *,
        external_conv_id: str,
        thread: str | None,
        last_target: Mapping[str, str] | None,
    ) -> PostAddress:
        """Where to post in ``external_conv_id`` (in ``thread``, if given). ``last_target`` is
        the reply target the conversation's latest message went with, when the bridge has one:
        the channel may reuse what only the platform could tell it (a DM's channel, a message
        to reply under). Pure, no I/O; raises CannotPost for a conversation it cannot post to.
        """
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchedFile:
    data: bytes
    content_type: str | None = None
    """What the platform said the content is, when it said (else the metadata's type stays)."""


@runtime_checkable
class FileFetchingChannel(Channel, Protocol):
    """A channel that can fetch the content of a file its platform sent (the ``source`` its
    inbound code recorded on the attachment). Only from the platform's own hosts, with the
    platform's credentials; never more than ``max_bytes`` read (stop reading and raise a
    permanent FileFetchError beyond it); bounded in time by the caller. Raises
    FileFetchError."""

    async def fetch_file(self, source: Mapping[str, object], *, max_bytes: int) -> FetchedFile: ...


@runtime_checkable
class WebhookChannel(Channel, Protocol):
    """A channel with ``Capabilities.webhook``: the core routes its HTTP events to it."""

    async def handle_webhook(self, request: web.Request) -> web.StreamResponse: ...


class Dispatch(Protocol):
    """The core's one entry point for what a channel brings in.

    A message is stored (durably, or found to be a duplicate) before this returns; an edit or
    deletion returns whether the bridge had that message; a conversation change returns the
    session's id. Raises InvalidMessage or UnknownAgent, and then nothing was stored.
    """

    @overload
    async def __call__(self, event: InboundMessage) -> IngestResult: ...

    @overload
    async def __call__(self, event: MessageEdit) -> bool: ...

    @overload
    async def __call__(self, event: ConversationChange) -> int: ...


SettingsT = TypeVar("SettingsT", bound=BaseModel)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelContext(Generic[SettingsT]):
    """What a channel gets to build itself: its agent, its own settings, the core's dispatch."""

    agent: AgentSettings
    settings: SettingsT
    dispatch: Dispatch


class ChannelFactory(Protocol[SettingsT]):
    def __call__(self, *, context: ChannelContext[SettingsT]) -> Channel: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelPlugin(Generic[SettingsT]):
    """What an entry point in group ``bridge.channels`` names: one value per channel."""

    name: str
    settings_model: type[SettingsT]
    capabilities: Capabilities
    create: ChannelFactory[SettingsT]
    """Builds the channel (usually its class); must not do I/O: ``start`` does."""

    def build(self, *, agent: AgentSettings, settings: BaseModel, dispatch: Dispatch) -> Channel:
        if not isinstance(settings, self.settings_model):
            raise TypeError(f"{self.name}: settings are {type(settings).__name__}")
        return self.create(
            context=ChannelContext(agent=agent, settings=settings, dispatch=dispatch)
        )


class Channels(Protocol):
    """The running channels, as the core's steps see them."""

    def get(self, name: str, agent_slug: str) -> Channel | None:
        """The running channel of that name for that agent, or None."""
        ...

    def capabilities(self, name: str) -> Capabilities:
        """What the channel of that name can do (the defaults for an unknown name)."""
        ...
