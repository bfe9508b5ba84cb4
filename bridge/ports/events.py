"""The normalized types that cross the edge between channels and the core.

Adapters build these from platform payloads; the core never sees a payload dict or SDK object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

ParticipantKind = Literal["user", "agent"]

WEB_CHANNEL = "web"
"""The bridge's own channel: the chat page and the HTTP API."""
AGENT_CHANNEL = "agent"
"""Direct asks between agents; also the channel of every agent's own participant."""

MAX_ID_LENGTH = 255
"""The longest conversation, message or sender id the core stores."""


def storable_text(text: str) -> str:
    """What every database can store: no NUL (PostgreSQL refuses it), no lone surrogates."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainLink:
    """Where a message from one agent to another sits in its chain.

    ``origin_message_id`` is the human message that started the chain (None: this message
    starts one, as a direct ask from a program does); ``hops`` counts the agent-to-agent
    messages up to and including this one.
    """

    from_agent: str
    origin_message_id: int | None
    hops: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Sender:
    external_id: str
    display_name: str | None = None
    kind: ParticipantKind = "user"


AttachmentStateName = Literal["pending", "stored", "refused", "failed"]
"""As ``bridge.store.models.AttachmentState``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """A file a message carries, as one ``attachments`` row once the message is stored.

    A platform channel gives what the platform says (``name``, ``mime_type``, ``size``,
    ``url``) and in ``source`` what it needs to fetch the content later: ``pending``. The web
    channel has the content in the file store already: ``stored``, with ``sha256`` and the
    ``storage_key`` made by :func:`bridge.files.store.content_key`. ``refused``/``failed``:
    metadata only, ``reason`` says why. ``mime_type`` is the row's ``content_type``."""

    name: str
    mime_type: str | None = None
    size: int | None = None
    url: str | None = None
    sha256: str | None = None
    storage_key: str | None = None
    state: AttachmentStateName = "pending"
    reason: str | None = None
    source: Mapping[str, Any] = field(default_factory=dict)
    """Only the channel that wrote it reads it (its own ids; fetched from its hosts only)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundMessage:
    """One message for an agent, as the channel saw it.

    ``external_message_id`` is the dedup key: the same id in the same conversation is stored once.
    ``reply_target`` is opaque to the core; the channel gets it back on the :class:`Reply`
    (for example a Slack channel and ``thread_ts``).
    """

    channel: str
    agent_slug: str
    external_conv_id: str
    external_message_id: str
    sender: Sender
    text: str
    is_group: bool = False
    group_name: str | None = None
    parent_conv_id: str | None = None
    title: str | None = None
    mentions: tuple[str, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    reply_target: dict[str, str] = field(default_factory=dict)
    only_if_engaged: bool = False
    """Store it only if the agent already has this conversation (a thread follow-up without a
    mention); the check happens in the database, in the ingest transaction."""
    chain: ChainLink | None = None
    """Set when another agent wrote it: the sender is that agent, and the loop budgets are
    checked in the ingest transaction (``bridge.chains``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestResult:
    """``ignored``: not stored because ``only_if_engaged`` found no conversation (the ids are 0).
    ``refused``: not stored because the agent's access settings refuse it (the ids are 0); the
    reason is for logs, never for the sender, who may be told ``notice`` at most.
    ``limited``: stored but not answered, over a rate limit or token budget."""

    session_id: int
    message_id: int
    duplicate: bool
    ignored: bool = False
    refused: str | None = None
    notice: str | None = None
    limited: str | None = None
    """The limit that stopped it (``user_messages_per_hour`` …)."""

    @property
    def to_answer(self) -> bool:
        """Newly stored and waiting for the agent (a channel may show it is working on it)."""
        return not (self.duplicate or self.ignored or self.refused or self.limited)


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageEdit:
    """A user edited (``text`` set) or deleted (``text`` None) a message the bridge stored.

    ``external_conv_id`` None: the message id alone identifies it among the agent's sessions on
    ``channel`` (platforms whose message ids are unique, such as Discord's snowflakes)."""

    channel: str
    agent_slug: str
    external_conv_id: str | None
    external_message_id: str
    text: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationChange:
    """The agent was added to (``present``) or removed from a group conversation: the session
    exists (or is marked deleted) before, or without, any message."""

    channel: str
    agent_slug: str
    external_conv_id: str
    group_name: str | None
    present: bool
    changed_at: datetime | None = None
    """When the platform says it happened. Given, the change applies only if it is newer than
    the last one applied to the session, so a redelivered, replayed or late event is a no-op."""


ReplyOutcome = Literal["answered", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class OutgoingFile:
    """A file a reply carries, with its content, for a channel to upload natively."""

    attachment_id: int
    """Stable across attempts: with the delivery key it names this upload to the platform."""
    position: int
    """Its place among the reply's files (0, 1, …)."""
    name: str
    content_type: str
    data: bytes
    platform_file_id: str | None = None
    """An upload an earlier attempt started and recorded (``Reply.record_upload``): finish or
    look up that one, never upload the content again."""


class UploadRecorder(Protocol):
    async def __call__(self, attachment_id: int, platform_file_id: str) -> None:
        """Keep the platform's id of a started upload before the step that shares it, so an
        attempt after a crash finishes it instead of uploading again."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """A stored reply on its way out.

    ``delivery_key`` is stable across attempts: channels pass it to the platform's idempotency
    mechanism. ``in_doubt`` says an earlier attempt may have reached the platform unrecorded.
    """

    message_id: int
    session_id: int
    delivery_key: str
    agent_slug: str
    channel: str
    external_conv_id: str
    text: str
    reply_target: dict[str, str]
    in_doubt: bool
    attempt: int
    mentions: Mapping[str, str] = field(default_factory=dict)
    """Agents the text mentions as ``@slug`` that are bots on this platform too: slug -> their
    platform user id. The channel renders each as a native mention (``bridge.mentions``)."""
    live_ids: tuple[str, ...] = ()
    """Platform messages a live reply started for this reply (``bridge.ports.live``), in part
    order: the channel edits them into the final text (and removes any left over) instead of
    posting those parts again."""
    outcome: ReplyOutcome | None = None
    """How answering the message this replies to ended, for its status reaction; None when
    the reply answers no message of the platform's."""
    files: tuple[OutgoingFile, ...] = ()
    """Files to send with the text, in order, into the same conversation and thread (channels
    with ``Capabilities.sends_files``; for others the core lists their names in the text)."""
    record_upload: UploadRecorder | None = None
    """Set when ``files`` is not empty."""
