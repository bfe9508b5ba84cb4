"""``GET /api/v1/sessions/{id}/export``: one session as JSON lines, streamed page by page to
whoever may see the session (anyone else gets the 404 of a missing one)."""

from __future__ import annotations

import logging
from contextlib import aclosing

from aiohttp import web

from bridge.api.cursors import path_id
from bridge.api.errors import not_found
from bridge.api.http import caller_of
from bridge.api.views import find_session
from bridge.appkeys import SESSIONS
from bridge.export import ExportError, start_export
from bridge.infra.logs import log_event

logger = logging.getLogger(__name__)

MEDIA_TYPE = "application/x-ndjson"


async def export_session(request: web.Request) -> web.StreamResponse:
    session_id = path_id(request.match_info["id"])
    sessions = request.config_dict[SESSIONS]
    async with sessions() as db:
        if await find_session(db, caller_of(request), session_id) is None:
            raise not_found()
    try:
        pages = await start_export(sessions, session_id=session_id)
    except ExportError:  # deleted for good since the check
        raise not_found() from None
    response = web.StreamResponse(
        headers={
            "Content-Type": MEDIA_TYPE,
            "Content-Disposition": f'attachment; filename="session-{session_id}.jsonl"',
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    try:
        async with aclosing(pages):
            async for chunk in pages:
                await response.write(chunk)  # waits while the client is behind
    except Exception as error:
        # The status is sent: the only honest signal left is a body cut short (no final
        # chunk), never a clean end that would pass for a complete export.
        log_event(
            logger,
            "api.export_failed",
            level=logging.WARNING,
            session_id=session_id,
            error=f"{type(error).__name__}: {error}",
        )
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response
