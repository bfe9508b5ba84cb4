"""The two kinds of line an export writes, built from plain rows (no ORM objects, no models:
an export writes millions of them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select

from bridge.store.models import AGENTS, MESSAGES, PARTICIPANTS, SESSIONS, WORKSPACES

_PEER = AGENTS.alias("peer_agent")

SESSION_COLUMNS = (
    SESSIONS.c.id,
    WORKSPACES.c.slug.label("workspace"),
    AGENTS.c.slug.label("agent"),
    SESSIONS.c.external_conv_id,
    SESSIONS.c.source_channel,
    SESSIONS.c.title,
    SESSIONS.c.is_group,
    SESSIONS.c.group_name,
    SESSIONS.c.parent_session_id,
    _PEER.c.slug.label("peer_agent"),
    SESSIONS.c.created_at,
    SESSIONS.c.last_message_at,
    SESSIONS.c.deleted_at,
)

MESSAGE_COLUMNS = (
    MESSAGES.c.id,
    MESSAGES.c.session_id,
    MESSAGES.c.role,
    PARTICIPANTS.c.kind.label("sender_kind"),
    PARTICIPANTS.c.channel.label("sender_channel"),
    PARTICIPANTS.c.external_id.label("sender_external_id"),
    PARTICIPANTS.c.display_name.label("sender_display_name"),
    MESSAGES.c.content,
    MESSAGES.c.state,
    MESSAGES.c.reply_to_message_id,
    MESSAGES.c.created_at,
    MESSAGES.c.edited_at,
    MESSAGES.c.deleted_at,
    MESSAGES.c.purged_at,
    MESSAGES.c.attachments,
    MESSAGES.c.input_tokens,
    MESSAGES.c.output_tokens,
)


def session_select() -> Select[Any]:
    """Sessions with the slugs of their workspace (through the agent), agent and peer."""
    return select(*SESSION_COLUMNS).select_from(
        SESSIONS.join(AGENTS, AGENTS.c.id == SESSIONS.c.agent_id)
        .join(WORKSPACES, WORKSPACES.c.id == AGENTS.c.workspace_id)
        .outerjoin(_PEER, _PEER.c.id == SESSIONS.c.peer_agent_id)
    )


def message_select() -> Select[Any]:
    return select(*MESSAGE_COLUMNS).select_from(
        MESSAGES.outerjoin(PARTICIPANTS, PARTICIPANTS.c.id == MESSAGES.c.sender_participant_id)
    )


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with ``Z``, as the rest of the API writes times."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def session_line(row: Any) -> dict[str, Any]:
    return {
        "type": "session",
        "id": row.id,
        "workspace": row.workspace,
        "agent": row.agent,
        "external_conv_id": row.external_conv_id,
        "source_channel": row.source_channel,
        "title": row.title,
        "is_group": bool(row.is_group),
        "group_name": row.group_name,
        "parent_session": row.parent_session_id,
        "peer_agent": row.peer_agent,
        "created_at": iso(row.created_at),
        "last_message_at": iso(row.last_message_at),
        "deleted_at": iso(row.deleted_at),
    }


def message_line(row: Any) -> dict[str, Any]:
    """A purged message (retention took its content) is a tombstone: ``purged_at`` set,
    content "" and no attachments, whatever the row still holds."""
    purged = row.purged_at is not None
    sender = None
    if row.sender_kind is not None:
        sender = {
            "kind": row.sender_kind,
            "channel": row.sender_channel,
            "external_id": row.sender_external_id,
            "display_name": row.sender_display_name,
        }
    return {
        "type": "message",
        "id": row.id,
        "session_id": row.session_id,
        "role": row.role,
        "sender": sender,
        "content": "" if purged else row.content,
        "state": row.state,
        "reply_to": row.reply_to_message_id,
        "created_at": iso(row.created_at),
        "edited_at": iso(row.edited_at),
        "deleted_at": iso(row.deleted_at),
        "purged_at": iso(row.purged_at),
        "attachments": [] if purged else list(row.attachments or []),
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
    }


def encode(line: dict[str, Any]) -> bytes:
    """One JSON object and a newline; UTF-8, newlines inside strings escaped by JSON."""
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
