"""The tables. Every constraint has a stable name through the metadata's naming convention, so
migrations can refer to them on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from bridge.store.access_tables import (
    GRANTS,
    NOTICES,
    PAIRING_CODES,
    REFUSALS,
    AccessGrant,
    AccessNotice,
    PairingCode,
    Refusal,
)
from bridge.store.base import NAMING_CONVENTION, Base, BigId, UTCDateTime, utcnow

__all__ = [
    "GRANTS",
    "NAMING_CONVENTION",
    "NOTICES",
    "PAIRING_CODES",
    "REFUSALS",
    "AccessGrant",
    "AccessNotice",
    "Base",
    "BigId",
    "PairingCode",
    "Refusal",
    "UTCDateTime",
    "utcnow",
]


class Workspace(Base):
    """A tenant: its agents, their sessions and the API tokens that may see them. Deleting one
    is soft (``deleted_at``): its sessions are soft-deleted and its tokens revoked at that same
    moment, so a restore brings back exactly what the delete took."""

    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


DEFAULT_WORKSPACE = "default"


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(200))
    backend: Mapped[str] = mapped_column(String(32))
    backend_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    history_messages: Mapped[int] = mapped_column(Integer)
    history_chars: Mapped[int] = mapped_column(Integer)
    idle_reset_hours: Mapped[float | None]
    participant_id: Mapped[int | None] = mapped_column(
        ForeignKey("participants.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Participant(Base):
    """One identity for users and agents; an agent also speaks as a participant."""

    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("kind", "channel", "external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChatSession(Base):
    __tablename__ = "chat_sessions"
    __table_args__ = (
        UniqueConstraint("agent_id", "external_conv_id"),
        Index(None, "last_message_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    external_conv_id: Mapped[str] = mapped_column(String(255))
    source_channel: Mapped[str] = mapped_column(String(32))
    title: Mapped[str | None] = mapped_column(String(255))
    is_group: Mapped[bool] = mapped_column(Boolean, default=False)
    group_name: Mapped[str | None] = mapped_column(String(255))
    participant_id: Mapped[int | None] = mapped_column(
        ForeignKey("participants.id", ondelete="SET NULL")
    )
    peer_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    parent_session_id: Mapped[int | None] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="SET NULL")
    )
    context_from_message_id: Mapped[int | None] = mapped_column(BigInteger)
    """History sent to the agent starts at this message (``/reset`` and the idle timeout)."""
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_message_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    membership_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When the platform says the agent last joined or left this group: an older (replayed or
    late) membership event changes nothing."""
    summary: Mapped[str | None] = mapped_column(Text)
    """Long memory: the rolling summary of the messages the history window has dropped."""
    summary_through_message_id: Mapped[int | None] = mapped_column(BigInteger)
    """The last message folded into ``summary``: the next fold starts after it."""
    summary_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SessionMember(Base):
    __tablename__ = "session_members"

    session_id: Mapped[int] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    participant_id: Mapped[int] = mapped_column(
        ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True
    )
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MessageState:
    """The life of a message. User messages: pending -> answering -> answered | failed.
    Replies: to_deliver -> delivering -> delivered | failed. Notes kept only for the record
    (an agent's ask of a peer, seen from the asking session) are ``recorded`` and never sent."""

    PENDING = "pending"
    ANSWERING = "answering"
    ANSWERED = "answered"
    TO_DELIVER = "to_deliver"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"
    RECORDED = "recorded"
    LIMITED = "limited"
    """A user message over a rate limit or token budget: kept in the history, never answered."""


def _work_queue_indexes(kind: str, waiting: str, working: str) -> tuple[Index, Index]:
    """Small partial indexes over the unfinished messages of one kind of work: a claim scans
    them in id order and checks "an earlier one of the same session is unfinished" in them,
    never the finished history (which grows without end)."""
    where = text(f"state IN ('{waiting}', '{working}')")
    return (
        Index(f"ix_chat_messages_{kind}_queue", "id", postgresql_where=where, sqlite_where=where),
        Index(
            f"ix_chat_messages_{kind}_session_queue",
            "session_id",
            "id",
            postgresql_where=where,
            sqlite_where=where,
        ),
    )


class ChatMessage(Base):
    __tablename__ = "chat_messages"
    __table_args__ = (
        UniqueConstraint("session_id", "external_message_id"),
        Index(None, "session_id", "id"),
        Index(
            "ix_chat_messages_session_position",
            "session_id",
            func.coalesce(text("reply_to_message_id"), text("id")),
            "id",
        ),
        *_work_queue_indexes("answer", MessageState.PENDING, MessageState.ANSWERING),
        *_work_queue_indexes("deliver", MessageState.TO_DELIVER, MessageState.DELIVERING),
        Index(None, "chain_origin_id"),
        Index(None, "sender_participant_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("chat_sessions.id", ondelete="CASCADE"))
    sender_participant_id: Mapped[int | None] = mapped_column(
        ForeignKey("participants.id", ondelete="SET NULL")
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    external_message_id: Mapped[str | None] = mapped_column(String(255))
    reply_to_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("chat_messages.id", ondelete="SET NULL")
    )
    channel: Mapped[str] = mapped_column(String(32))
    reply_target: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivery_key: Mapped[str | None] = mapped_column(String(32), unique=True)
    delivery_in_doubt: Mapped[bool] = mapped_column(Boolean, default=False)
    platform_message_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    reply_key: Mapped[str | None] = mapped_column(String(32))
    """For a message to answer: the delivery key its reply will carry, chosen when it is stored,
    so a reply shown while it is written already has the key of its final delivery."""
    live_message_ids: Mapped[list[str] | None] = mapped_column(JSON)
    """For a message being answered: the platform messages its streamed reply has started, in
    part order; whoever delivers the final reply finishes these instead of posting again."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    chain_origin_id: Mapped[int | None] = mapped_column(BigInteger)
    """The human message that started this message's agent-to-agent chain; None for that
    human message itself (its own id is the origin)."""
    chain_hops: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """How many agent-to-agent hand-offs led to this message (0: a human's message and the
    first answer to it)."""
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    """For an answered message: the model tokens answering it cost, as the backend reported
    them (None: the backend reports no usage). Token budgets sum these."""
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Retention deleted the content (and attachments) here; the row stays as a tombstone so
    counts and order hold."""


class AttachmentState:
    """``pending``: known from the platform, its content still to fetch; ``stored``: in the
    file store under ``storage_key``; ``refused``: kept as metadata only (too large, a type or
    host not allowed; ``reason`` says); ``failed``: fetching gave up (``reason`` says)."""

    PENDING = "pending"
    STORED = "stored"
    REFUSED = "refused"
    FAILED = "failed"


class AttachmentRow(Base):
    """One file a message carries, in the order the message carries them."""

    __tablename__ = "attachments"
    __table_args__ = (
        UniqueConstraint("message_id", "position"),
        Index(None, "agent_id", "sha256"),
        Index(
            "ix_attachments_pending",
            "id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("chat_messages.id", ondelete="CASCADE"))
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    storage_key: Mapped[str | None] = mapped_column(String(300))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """What the channel needs to fetch the content (its own ids or URL); only the channel that
    wrote it reads it, and fetches only from its platform's hosts."""
    platform_file_id: Mapped[str | None] = mapped_column(String(255))
    """For a file sent out: the platform's id of the upload, kept before the step that shares
    it, so an upload in doubt is looked up instead of uploaded again."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """A bearer token for the HTTP API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    workspace_id: Mapped[int | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE")
    )
    """The workspace the token sees (a user of it, or with ``is_admin`` its admin); None with
    ``is_admin``: the operator, who sees every workspace."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobLease(Base):
    """Who runs a periodic job (retention) until when: one process at a time across processes,
    taken over once the holder stops renewing. ``progress`` is the job's own bookmark."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    progress: Mapped[int] = mapped_column(BigInteger, default=0)


class ServiceSecret(Base):
    """A random secret the bridge makes for itself, shared by every process on the database
    (the first to start inserts it; the others read it): e.g. the key of signed file links."""

    __tablename__ = "service_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChangeEvent(Base):
    """A change a live client may want to see, written in the transaction that made it, so
    any process can stream it and a reconnecting client can catch up from an event id."""

    __tablename__ = "change_events"
    # Ids are what clients resume from: SQLite must never hand out a pruned id again.
    __table_args__ = (Index(None, "created_at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    session_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# The tables as Core objects, for the statements on the message path (built once, no ORM).
MESSAGES = cast(Table, ChatMessage.__table__)
SESSIONS = cast(Table, ChatSession.__table__)
PARTICIPANTS = cast(Table, Participant.__table__)
MEMBERS = cast(Table, SessionMember.__table__)
CHANGES = cast(Table, ChangeEvent.__table__)
WORKSPACES = cast(Table, Workspace.__table__)
AGENTS = cast(Table, Agent.__table__)
TOKENS = cast(Table, ApiToken.__table__)
LEASES = cast(Table, JobLease.__table__)
ATTACHMENTS = cast(Table, AttachmentRow.__table__)
SECRETS = cast(Table, ServiceSecret.__table__)
