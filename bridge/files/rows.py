"""The ``attachments`` rows of newly stored messages, written in the ingest transaction.

One multi-row INSERT for a whole batch, and none when no message of it carries a file. Only
messages inserted by this transaction get rows: a duplicate (a retried POST, a redelivered
event) has its rows already, so a retry never stores a second set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.files.intake import safe_content_type, safe_name
from bridge.files.store import check_key
from bridge.ports.errors import InvalidMessage
from bridge.ports.events import Attachment
from bridge.store.models import ATTACHMENTS

_STATES = frozenset({"pending", "stored", "refused", "failed"})


def check_attachments(attachments: Sequence[Attachment]) -> None:
    """Raise InvalidMessage for an attachment no row could describe truthfully: a stored
    one needs its hash and a key the bridge made."""
    for attachment in attachments:
        if attachment.state not in _STATES:
            raise InvalidMessage(f"attachment state {attachment.state!r} is unknown")
        if attachment.state == "stored":
            if attachment.storage_key is None or attachment.sha256 is None:
                raise InvalidMessage("a stored attachment needs its storage_key and sha256")
            try:
                check_key(attachment.storage_key)
            except ValueError as error:
                raise InvalidMessage(str(error)) from None


def summary(attachment: Attachment) -> dict[str, Any]:
    """What ``chat_messages.attachments`` keeps (the metadata a channel saw, as before
    attachment rows existed; the export shows it)."""
    return {
        "name": attachment.name,
        "mime_type": attachment.mime_type,
        "size": attachment.size,
        "url": attachment.url,
    }


def attachment_rows(
    *, message_id: int, agent_id: int, attachments: Sequence[Attachment], now: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "message_id": message_id,
            "agent_id": agent_id,
            "position": position,
            "name": safe_name(attachment.name),
            "content_type": (
                None if attachment.mime_type is None else safe_content_type(attachment.mime_type)
            ),
            "size": attachment.size,
            "sha256": attachment.sha256,
            "storage_key": attachment.storage_key,
            "state": attachment.state,
            "reason": attachment.reason,
            "source": _source(attachment),
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        for position, attachment in enumerate(attachments)
    ]


def _source(attachment: Attachment) -> dict[str, Any]:
    source = dict(attachment.source)
    if attachment.url is not None:
        source.setdefault("url", attachment.url)
    return source


async def insert_attachments(db: AsyncSession, rows: Iterable[dict[str, Any]]) -> None:
    """One statement for the batch; nothing at all when ``rows`` is empty."""
    batch = list(rows)
    if batch:
        await db.execute(insert(ATTACHMENTS), batch)
