"""``GET /api/v1/files/{id}``: an attachment's bytes, for whoever may see its session.

Found in one statement joined through the message and its session to the agent, under the
same condition as the session itself (:func:`bridge.api.views.visible_to`: workspace and
membership in SQL), so a file of a session the caller may not see is "no such file", exactly
like a missing one. A file whose content is not stored (refused, failed, still pending) is 409
with the reason. The bytes are served as a download that no browser runs: ``attachment``,
``nosniff``, a sandboxing CSP, and the stored type only when it is inert (HTML, SVG, XML and
anything unknown go as ``application/octet-stream``).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import select

from bridge.api.cursors import path_id
from bridge.api.errors import ApiError, not_found
from bridge.api.http import caller_of
from bridge.api.views import visible_to
from bridge.appkeys import FILES, SESSIONS
from bridge.files.intake import served_type
from bridge.files.store import FileMissing
from bridge.infra.logs import log_event
from bridge.store.models import Agent, AttachmentRow, AttachmentState, ChatMessage, ChatSession

logger = logging.getLogger(__name__)

DOWNLOAD_CSP = "sandbox; default-src 'none'"


def content_disposition(name: str) -> str:
    """``attachment`` with the name in RFC 5987 form, and an ASCII stand-in for old clients."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


async def download_file(request: web.Request) -> web.Response:
    file_id = path_id(request.match_info["id"], "file")
    async with request.config_dict[SESSIONS]() as db:
        row = (
            await db.execute(
                select(
                    AttachmentRow.name,
                    AttachmentRow.content_type,
                    AttachmentRow.storage_key,
                    AttachmentRow.state,
                    AttachmentRow.reason,
                )
                .join(ChatMessage, ChatMessage.id == AttachmentRow.message_id)
                .join(ChatSession, ChatSession.id == ChatMessage.session_id)
                .join(Agent, Agent.id == ChatSession.agent_id)
                .where(
                    AttachmentRow.id == file_id,
                    ChatMessage.purged_at.is_(None),
                    visible_to(caller_of(request)),
                )
            )
        ).one_or_none()
    if row is None:
        raise not_found("file")
    return await serve_file(request, file_id, row)


async def serve_file(request: web.Request, file_id: int, row: Any) -> web.Response:
    """The stored bytes of a file row (name, content_type, storage_key, state, reason), with
    the headers that keep a browser from running or sniffing them; 409 when not stored."""
    if row.state != AttachmentState.STORED or row.storage_key is None:
        reason = row.reason or "its content is not fetched yet"
        raise ApiError(409, "file_not_stored", f"the file is not stored: {reason}")
    try:
        data = await request.config_dict[FILES].get(row.storage_key)
    except FileMissing:
        log_event(logger, "file.missing", level=logging.ERROR, file=file_id, key=row.storage_key)
        raise not_found("file") from None
    return web.Response(
        body=data,
        headers={
            "Content-Type": served_type(row.content_type),
            "Content-Disposition": content_disposition(row.name),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
            "Content-Security-Policy": DOWNLOAD_CSP,
        },
    )
