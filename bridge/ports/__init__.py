"""Everything a channel sees of the core: the contract, its errors and the normalized events.

A channel imports from here (and from nothing else in ``bridge`` but ``bridge.settings`` and
``bridge.infra``); the core imports nothing from ``channels``.
"""

from bridge.ports.contract import (
    Capabilities,
    Channel,
    ChannelContext,
    ChannelPlugin,
    Channels,
    ChannelStatus,
    Dispatch,
    FetchedFile,
    FileFetchingChannel,
    PostAddress,
    PostingChannel,
    WebhookChannel,
)
from bridge.ports.errors import (
    CannotPost,
    DeliveryError,
    FileFetchError,
    InvalidMessage,
    UnknownAgent,
)
from bridge.ports.events import (
    MAX_ID_LENGTH,
    Attachment,
    ChainLink,
    ConversationChange,
    InboundMessage,
    IngestResult,
    MessageEdit,
    OutgoingFile,
    Reply,
    ReplyOutcome,
    Sender,
    storable_text,
)
from bridge.ports.live import Draft, LiveChannel, LiveReply

__all__ = [
    "MAX_ID_LENGTH",
    "Attachment",
    "CannotPost",
    "Capabilities",
    "ChainLink",
    "Channel",
    "ChannelContext",
    "ChannelPlugin",
    "ChannelStatus",
    "Channels",
    "ConversationChange",
    "DeliveryError",
    "Dispatch",
    "Draft",
    "FetchedFile",
    "FileFetchError",
    "FileFetchingChannel",
    "InboundMessage",
    "IngestResult",
    "InvalidMessage",
    "LiveChannel",
    "LiveReply",
    "MessageEdit",
    "OutgoingFile",
    "PostAddress",
    "PostingChannel",
    "Reply",
    "ReplyOutcome",
    "Sender",
    "UnknownAgent",
    "WebhookChannel",
    "storable_text",
]
