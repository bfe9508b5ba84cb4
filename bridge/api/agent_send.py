"""``POST /api/v1/agents/{agent}/send``: an agent posts first, into a session or into a
conversation of one of its channels (a scheduled report, a reminder). Admin tokens only: the
caller speaks as the agent."""

from __future__ import annotations

from aiohttp import web

from bridge.api.errors import ApiError, not_found
from bridge.api.http import caller_of, read_body, respond
from bridge.api.send_files import received_files
from bridge.api.send_models import AgentSend
from bridge.api.sessions import agent_in_scope
from bridge.api.views import find_session, messages_by_id
from bridge.appkeys import CHANNELS, FILES, PIPELINE, SESSIONS, SETTINGS
from bridge.files.intake import store_received
from bridge.flow.agent_send import Conversation, SessionDeleted, send_as_agent
from bridge.ports.contract import PostingChannel
from bridge.ports.errors import CannotPost

DELETED = ApiError(409, "session_deleted", "restore the session before posting to it")


async def agent_send(request: web.Request) -> web.Response:
    """202 with the stored message (delivered later, as a reply is); 200 with the message a
    retried request's ``client_message_id`` already stored."""
    caller = caller_of(request)
    if not caller.is_admin:
        raise ApiError(403, "forbidden", "posting as an agent needs an admin token")
    slug = request.match_info["agent"]
    agent = agent_in_scope(request, slug)
    if agent is None:
        raise ApiError(404, "not_found", f"no agent {slug!r}")
    body = await read_body(request, AgentSend)
    files = received_files(body.attachments or [], request.config_dict[SETTINGS].files)
    limit = request.config_dict[SETTINGS].web.max_text_bytes
    if len(body.text.encode()) > limit:
        raise ApiError(422, "text_too_long", f"text: longer than {limit} bytes")
    if body.session_id is not None:
        async with request.config_dict[SESSIONS]() as db:
            session = await find_session(db, caller, body.session_id)
        if session is None:
            raise not_found()
        if session.agent != slug:
            raise ApiError(422, "wrong_agent", f"session_id: not a session of {slug!r}")
        if session.deleted_at is not None:
            raise DELETED
        name = session.source_channel
        conversation = Conversation(
            external_conv_id=session.external_conv_id, session_id=session.id
        )
    else:
        assert body.channel is not None and body.external_conv_id is not None
        name = body.channel
        conversation = Conversation(external_conv_id=body.external_conv_id, thread=body.thread)
    channel = request.config_dict[CHANNELS].get(name, slug)
    if not isinstance(channel, PostingChannel):
        raise ApiError(422, "cannot_post", f"{slug!r} has no {name!r} channel that can post first")
    key = f"send:{body.client_message_id}" if body.client_message_id else None
    attachments = await store_received(request.config_dict[FILES], agent_id=agent.id, files=files)
    try:
        sent = await send_as_agent(
            request.config_dict[PIPELINE].store,
            agent=agent,
            channel=channel,
            conversation=conversation,
            text=body.text,
            key=key,
            attachments=attachments,
        )
    except CannotPost as error:
        raise ApiError(422, "cannot_post", str(error)) from None
    except SessionDeleted:
        raise DELETED from None
    async with request.config_dict[SESSIONS]() as db:
        stored = (await messages_by_id(db, [sent.message_id]))[sent.message_id]
    return respond(stored, status=202 if sent.created else 200)
