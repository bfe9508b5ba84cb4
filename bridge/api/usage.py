"""``GET /api/v1/usage`` (admin): what each user or conversation cost since a moment."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any

from aiohttp import web

from bridge.access.usage import UsageRow, agent_id_of, usage
from bridge.api.access_models import ConversationUsage, UsageQuery, UsageReport, UserUsage
from bridge.api.errors import ApiError
from bridge.api.http import caller_of, read_query, respond
from bridge.appkeys import SESSIONS
from bridge.store.models import utcnow

DEFAULT_WINDOW = timedelta(hours=24)


def _figures(row: UsageRow) -> dict[str, Any]:
    return {name: value for name, value in asdict(row).items() if name != "key"}


async def get_usage(request: web.Request) -> web.Response:
    caller = caller_of(request)
    if not caller.is_admin:
        raise ApiError(403, "forbidden", "usage figures need an admin token")
    query = read_query(request, UsageQuery)
    since = query.since or utcnow() - DEFAULT_WINDOW
    workspace_id = caller.workspace_id  # a workspace admin sees its agents; the operator all
    async with request.config_dict[SESSIONS]() as db:
        if (
            query.agent is not None
            and await agent_id_of(db, query.agent, workspace_id=workspace_id) is None
        ):
            raise ApiError(422, "unknown_agent", f"agent: no agent {query.agent!r}")
        rows = await usage(
            db,
            since=since,
            group_by=query.group_by,
            agent=query.agent,
            workspace_id=workspace_id,
        )
    items: list[UserUsage] | list[ConversationUsage]
    if query.group_by == "user":
        items = [UserUsage.model_validate({"user": row.key, **_figures(row)}) for row in rows]
    else:
        items = [
            ConversationUsage.model_validate({"conversation": row.key, **_figures(row)})
            for row in rows
        ]
    return respond(
        UsageReport(agent=query.agent, since=since, group_by=query.group_by, items=items)
    )
