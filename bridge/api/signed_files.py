"""``GET /api/v1/files/{id}/signed?expires=&sig=``: an attachment's bytes for whoever holds a
signed link (:mod:`bridge.files.links`), with no bearer token: what a webhook agent is given.

A signature that is not the bridge's for exactly this file and expiry is 403, whatever the
file; a genuine link past its expiry is 410. Neither says whether the file exists. The bytes
go out with the same headers as ``GET /api/v1/files/{id}``: a download no browser runs.
"""

from __future__ import annotations

import logging

from aiohttp import web
from sqlalchemy import select

from bridge.api.cursors import path_id
from bridge.api.errors import ApiError, not_found
from bridge.api.files import serve_file
from bridge.appkeys import FILE_LINKS, SESSIONS
from bridge.infra.logs import log_event
from bridge.store.models import ATTACHMENTS, MESSAGES

logger = logging.getLogger(__name__)


def _forbidden() -> ApiError:
    return ApiError(403, "forbidden", "the link is not valid")


_FILE = (
    select(
        ATTACHMENTS.c.name,
        ATTACHMENTS.c.content_type,
        ATTACHMENTS.c.storage_key,
        ATTACHMENTS.c.state,
        ATTACHMENTS.c.reason,
    )
    .join(MESSAGES, MESSAGES.c.id == ATTACHMENTS.c.message_id)
    .where(MESSAGES.c.purged_at.is_(None))
)


async def download_signed(request: web.Request) -> web.Response:
    try:
        file_id = path_id(request.match_info["id"], "file")
    except ApiError:  # no link names such an id: as refused as any other forgery
        raise _forbidden() from None
    checked = request.config_dict[FILE_LINKS].check(
        file_id,
        expires=request.query.get("expires", ""),
        sig=request.query.get("sig", ""),
    )
    if checked == "invalid":
        raise _forbidden()
    if checked == "expired":
        raise ApiError(410, "link_expired", "the link has expired")
    async with request.config_dict[SESSIONS]() as db:
        row = (await db.execute(_FILE.where(ATTACHMENTS.c.id == file_id))).one_or_none()
    if row is None:
        raise not_found("file")
    log_event(logger, "file.signed_download", file=file_id)
    return await serve_file(request, file_id, row)
