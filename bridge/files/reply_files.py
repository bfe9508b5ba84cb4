"""Files of the messages the bridge sends (an agent's reply, a message it posts first).

Their contents go in the file store under their content key before the message row is
written (:func:`store_kept`); the rows are written with the message
(:func:`bridge.flow.outgoing.store_outgoing`). Delivering such a message loads its stored
rows and bytes (:func:`load_reply_files`) for a channel that uploads files natively, and gives
it a recorder of started uploads (:func:`upload_recorder`); a channel that does not lists the
files in the text (:func:`file_lines`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.agents.base import AnswerFile
from bridge.files.store import FileMissing, FileStore, content_key
from bridge.ports.errors import DeliveryError
from bridge.ports.events import Attachment, OutgoingFile, UploadRecorder
from bridge.store.models import ATTACHMENTS, AttachmentState, utcnow

NOT_STORED = "could not be stored"


async def store_kept(
    store: FileStore | None, *, agent_id: int, files: Sequence[AnswerFile]
) -> tuple[Attachment, ...]:
    """Each file as its row will describe it, its content put in the store first (each
    distinct content once). A file the store could not take is kept as ``failed``."""
    if not files:
        return ()
    hashes = [None if f.data is None else hashlib.sha256(f.data).hexdigest() for f in files]
    contents = {sha: f.data for f, sha in zip(files, hashes, strict=True) if sha and f.data}
    failed: set[str] = set()
    if store is not None and contents:
        keys = list(contents)
        results = await asyncio.gather(
            *(store.put(content_key(agent_id, sha), contents[sha]) for sha in keys),
            return_exceptions=True,
        )
        failed = {sha for sha, result in zip(keys, results, strict=True) if result is not None}
    return tuple(
        _attachment(f, sha, agent_id, stored=store is not None and sha not in failed)
        for f, sha in zip(files, hashes, strict=True)
    )


def _attachment(file: AnswerFile, sha: str | None, agent_id: int, *, stored: bool) -> Attachment:
    if sha is not None and stored:
        return Attachment(
            name=file.name,
            mime_type=file.content_type,
            size=file.size,
            sha256=sha,
            storage_key=content_key(agent_id, sha),
            state="stored",
        )
    if sha is not None:  # kept, but the store did not take it
        return Attachment(
            name=file.name,
            mime_type=file.content_type,
            size=file.size,
            state="failed",
            reason=NOT_STORED,
        )
    return Attachment(
        name=file.name,
        mime_type=file.content_type,
        size=file.size,
        state="failed" if file.state == "failed" else "refused",
        reason=file.reason,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ListedFile:
    """A file of a reply that is not uploaded, as the text mentions it."""

    name: str
    content_type: str | None
    size: int | None


_ROWS = select(
    ATTACHMENTS.c.id,
    ATTACHMENTS.c.position,
    ATTACHMENTS.c.name,
    ATTACHMENTS.c.content_type,
    ATTACHMENTS.c.size,
    ATTACHMENTS.c.state,
    ATTACHMENTS.c.storage_key,
    ATTACHMENTS.c.platform_file_id,
)


async def load_reply_files(
    db: AsyncSession, store: FileStore | None, message_id: int
) -> tuple[tuple[OutgoingFile, ...], tuple[ListedFile, ...]]:
    """The message's files in order: the stored ones with their bytes, and the others (not
    stored, or their content gone) to list in the text. A store failure raises a transient
    DeliveryError: the next attempt tries again."""
    rows = (
        await db.execute(
            _ROWS.where(ATTACHMENTS.c.message_id == message_id).order_by(ATTACHMENTS.c.position)
        )
    ).all()
    contents = await asyncio.gather(*(_content(store, row) for row in rows))
    files: list[OutgoingFile] = []
    listed: list[ListedFile] = []
    for row, data in zip(rows, contents, strict=True):
        if data is None:
            listed.append(ListedFile(name=row.name, content_type=row.content_type, size=row.size))
            continue
        files.append(
            OutgoingFile(
                attachment_id=int(row.id),
                position=int(row.position),
                name=row.name,
                content_type=row.content_type or "application/octet-stream",
                data=data,
                platform_file_id=row.platform_file_id,
            )
        )
    return tuple(files), tuple(listed)


async def _content(store: FileStore | None, row: Any) -> bytes | None:
    if store is None or row.state != AttachmentState.STORED or row.storage_key is None:
        return None
    try:
        return await store.get(row.storage_key)
    except FileMissing:
        return None
    except Exception as error:
        raise DeliveryError(f"the file store failed: {type(error).__name__}") from None


def upload_recorder(sessions: async_sessionmaker[AsyncSession], message_id: int) -> UploadRecorder:
    """Records a started upload's platform id on the file's row, in its own transaction, only
    where no other id is recorded (a different one means another attempt's upload: sending
    again could post twice, so the attempt stops in doubt)."""

    async def record(attachment_id: int, platform_file_id: str) -> None:
        c = ATTACHMENTS.c
        async with sessions() as db, db.begin():
            result = await db.execute(
                update(ATTACHMENTS)
                .where(
                    c.id == attachment_id,
                    c.message_id == message_id,
                    or_(c.platform_file_id.is_(None), c.platform_file_id == platform_file_id),
                )
                .values(platform_file_id=platform_file_id, updated_at=utcnow())
            )
        if getattr(result, "rowcount", 0) != 1:
            raise DeliveryError(f"file {attachment_id} has another upload recorded", in_doubt=True)

    return record


def file_lines(files: Sequence[OutgoingFile | ListedFile]) -> str:
    """One ``[file: name (type, size)]`` line per file, for a channel without native files."""
    lines = []
    for file in files:
        size = len(file.data) if isinstance(file, OutgoingFile) else file.size
        shown = file.content_type or "application/octet-stream"
        lines.append(f"[file: {file.name} ({shown}, {_size(size)})]")
    return "\n".join(lines)


def _size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"
