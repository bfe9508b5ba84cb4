"""``POST /api/v1/agents/{to}/messages``: one agent asks another, optionally waiting for the
answer. Admin tokens only: the caller speaks as an agent."""

from __future__ import annotations

import uuid

from aiohttp import web

from bridge.a2a.chains import ChainStopped, mutual_peers
from bridge.api.errors import ApiError
from bridge.api.http import caller_of, read_body, read_query, respond
from bridge.api.models import AskAgent, AskQuery
from bridge.api.views import in_scope, messages_by_id
from bridge.appkeys import AGENTS, CHANNELS, PIPELINE, SESSIONS, SETTINGS
from bridge.ports.errors import InvalidMessage, UnknownAgent
from bridge.ports.events import AGENT_CHANNEL
from bridge.store.directory import AgentRecord

_STOPPED_STATUS = {"not_a_peer": 403, "self": 422, "refused": 403}
"""Refusals by configuration; every budget refusal is 429."""


def _check_agents(request: web.Request, *, target: str, sender: str) -> None:
    """A workspace admin asks as an agent of its workspace (another's is unknown, 422) and
    reaches an agent of another workspace only when the two list each other (else 404, as
    for one that does not exist). The operator may ask as any agent; the peers rule of
    :func:`~bridge.a2a.chains.refuse_address` still applies to it."""
    agents = request.config_dict[AGENTS]
    caller = caller_of(request)
    try:
        asking: AgentRecord | None = agents.get(sender)
    except UnknownAgent:
        asking = None
    if asking is not None and not in_scope(caller, asking.workspace_id):
        asking = None
    try:
        to = agents.get(target)
    except UnknownAgent:
        raise ApiError(404, "not_found", f"no agent {target!r}") from None
    if not in_scope(caller, to.workspace_id) and (asking is None or not mutual_peers(asking, to)):
        raise ApiError(404, "not_found", f"no agent {target!r}")
    if asking is None:
        raise ApiError(422, "unknown_agent", f"from_agent: no agent {sender!r}")


async def ask_agent(request: web.Request) -> web.Response:
    if not caller_of(request).is_admin:
        raise ApiError(403, "forbidden", "asking as an agent needs an admin token")
    target = request.match_info["to"]
    body = await read_body(request, AskAgent)
    query = read_query(request, AskQuery)
    settings = request.config_dict[SETTINGS]
    limit = settings.web.max_text_bytes
    if len(body.text.encode()) > limit:
        raise ApiError(422, "text_too_long", f"text: longer than {limit} bytes")
    _check_agents(request, target=target, sender=body.from_agent)
    if request.config_dict[CHANNELS].get(AGENT_CHANNEL, target) is None:
        raise ApiError(409, "channel_disabled", f"the agent channel is off for {target!r}")
    asks = request.config_dict[PIPELINE].asks
    key = f"client:{body.client_message_id}" if body.client_message_id else f"server:{uuid.uuid4()}"
    try:
        asked = await asks.send(
            sender=body.from_agent,
            target=target,
            text=body.text,
            conversation=body.conversation,
            key=key,
        )
    except ChainStopped as stopped:
        status = _STOPPED_STATUS.get(stopped.reason, 429)
        raise ApiError(status, stopped.reason, str(stopped)) from None
    except InvalidMessage as error:
        raise ApiError(422, "invalid", f"text: {error}") from None
    if query.wait:
        answer = await asks.answer(asked, within=min(query.wait, settings.a2a.max_wait_seconds))
        if answer is not None:
            async with request.config_dict[SESSIONS]() as db:
                found = await messages_by_id(db, [answer.message_id])
            return respond(found[answer.message_id], status=200)
    async with request.config_dict[SESSIONS]() as db:
        stored = await messages_by_id(db, [asked.message_id])
    return respond(stored[asked.message_id], status=202)
