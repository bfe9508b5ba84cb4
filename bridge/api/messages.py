"""``/api/v1/sessions/{id}/messages``: the history, page by page, and posting to a web session
(JSON, or a multipart form with files: :mod:`bridge.api.uploads`)."""

from __future__ import annotations

import logging
import uuid

from aiohttp import web

from bridge.access.gate import REFUSED_TEXT
from bridge.api.cursors import message_cursor, path_id, read_message_cursor
from bridge.api.errors import ApiError, error_response, not_found
from bridge.api.http import (
    MULTIPART,
    caller_of,
    read_body,
    read_query,
    respond,
    streams_multipart,
)
from bridge.api.models import MessagePage, MessageQuery, PostMessage, SessionOut
from bridge.api.tokens import Caller
from bridge.api.uploads import UploadLimits, read_upload
from bridge.api.views import (
    find_session,
    message_query,
    message_views,
    messages_by_id,
)
from bridge.api.web_message import web_message
from bridge.appkeys import AGENTS, CHANNELS, FILES, PIPELINE, SESSIONS, SETTINGS
from bridge.files.intake import store_received
from bridge.infra.logs import log_event
from bridge.ports.errors import InvalidMessage
from bridge.ports.events import WEB_CHANNEL, Attachment, IngestResult
from bridge.settings import AgentSettings
from bridge.store.models import ChatMessage

logger = logging.getLogger(__name__)


def refused_error(result: IngestResult, agent: AgentSettings) -> ApiError:
    """403, telling the caller no more than the agent's ``denied_text`` (or, when pairing, the
    code it has just been given); nothing was stored."""
    if result.refused == "pairing":
        return ApiError(
            403,
            "pairing_required",
            result.notice or "waiting for the operator to approve your pairing code",
        )
    return ApiError(403, "refused", agent.access.denied_text or REFUSED_TEXT)


async def list_messages(request: web.Request) -> web.Response:
    session_id = path_id(request.match_info["id"])
    query = read_query(request, MessageQuery)
    before = None if query.before is None else read_message_cursor(query.before)
    async with request.config_dict[SESSIONS]() as db:
        if await find_session(db, caller_of(request), session_id) is None:
            raise not_found()
        statement = message_query().where(ChatMessage.session_id == session_id)
        if before is not None:
            statement = statement.where(ChatMessage.id < before)
        rows = await db.execute(statement.order_by(ChatMessage.id.desc()).limit(query.limit + 1))
        newest_first = list(rows)
        more = len(newest_first) > query.limit
        page = await message_views(
            db, newest_first[: query.limit][::-1], admin=caller_of(request).is_admin
        )
    return respond(
        MessagePage(items=page, next_cursor=message_cursor(page[0].id) if more else None)
    )


async def _writable_session(request: web.Request, caller: Caller, session_id: int) -> SessionOut:
    """The web session the caller may write to; 404 or 409 otherwise."""
    async with request.config_dict[SESSIONS]() as db:
        session = await find_session(db, caller, session_id)
    if session is None:
        raise not_found()
    if session.source_channel != WEB_CHANNEL:
        raise ApiError(
            409, "read_only_session", f"a {session.source_channel} session is answered there"
        )
    if session.deleted_at is not None:
        raise ApiError(409, "session_deleted", "restore the session before writing to it")
    if request.config_dict[CHANNELS].get(WEB_CHANNEL, session.agent) is None:
        raise ApiError(409, "channel_disabled", f"the web channel is off for {session.agent!r}")
    return session


@streams_multipart
async def post_message(request: web.Request) -> web.StreamResponse:
    """Store the user's message (idempotent on ``client_message_id``) and answer 202: the reply
    comes over the WebSocket and in the history. A multipart form's files are in the file
    store before the message is ingested; its rows are written with the message, once."""
    session_id = path_id(request.match_info["id"])
    caller = caller_of(request)
    attachments: tuple[Attachment, ...] = ()
    if request.content_type == MULTIPART:
        session = await _writable_session(request, caller, session_id)
        try:
            form = await read_upload(request, UploadLimits.of(request.config_dict[SETTINGS]))
        except ApiError as error:  # the rest of the body is never read as a request
            response = error_response(error.status, error.code, error.message)
            response.force_close()
            return response
        text, client_id = form.text, form.client_message_id
        if form.files:
            attachments = await store_received(
                request.config_dict[FILES],
                agent_id=request.config_dict[AGENTS].get(session.agent).id,
                files=form.files,
            )
            log_event(
                logger,
                "files.received",
                session=session_id,
                stored=sum(1 for a in attachments if a.state == "stored"),
                refused=sum(1 for a in attachments if a.state == "refused"),
            )
    else:
        body = await read_body(request, PostMessage)
        limit = request.config_dict[SETTINGS].web.max_text_bytes
        if len(body.text.encode()) > limit:
            raise ApiError(422, "text_too_long", f"text: longer than {limit} bytes")
        text, client_id = body.text, body.client_message_id
        session = await _writable_session(request, caller, session_id)
    message = web_message(
        agent_slug=session.agent,
        external_conv_id=session.external_conv_id,
        user=caller.user,
        text=text,
        message_key=f"client:{client_id}" if client_id else f"server:{uuid.uuid4()}",
        attachments=attachments,
    )
    try:
        result = await request.config_dict[PIPELINE].ingest(message)
    except InvalidMessage as error:
        raise ApiError(422, "invalid", f"text: {error}") from None
    if result.refused is not None:
        raise refused_error(result, request.config_dict[SETTINGS].agent(session.agent))
    async with request.config_dict[SESSIONS]() as db:
        stored = (await messages_by_id(db, [result.message_id]))[result.message_id]
    return respond(stored, status=202)
