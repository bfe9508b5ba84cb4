"""``GET /api/v1/sessions/{id}/summary`` (admin): a session's long memory, the rolling summary
of what its agent's history window dropped (``[agents.memory]``)."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from bridge.api.cursors import path_id
from bridge.api.errors import ApiError, not_found
from bridge.api.http import caller_of, respond
from bridge.api.views import find_session
from bridge.appkeys import SESSIONS
from bridge.store.models import ChatSession


class SessionSummary(BaseModel):
    """Nulls when the session has no summary (none folded yet, or reset since)."""

    model_config = ConfigDict(extra="forbid")

    session_id: int
    summary: str | None
    through_message_id: int | None
    """The summary holds the messages up to this position (a message id; a reply sits at the
    id of the message it answers)."""
    updated_at: datetime | None


async def get_summary(request: web.Request) -> web.Response:
    caller = caller_of(request)
    if not caller.is_admin:
        raise ApiError(403, "forbidden", "a session's summary needs an admin token")
    session_id = path_id(request.match_info["id"])
    async with request.config_dict[SESSIONS]() as db:
        if await find_session(db, caller, session_id) is None:
            raise not_found()
        row = (
            await db.execute(
                select(
                    ChatSession.summary,
                    ChatSession.summary_through_message_id,
                    ChatSession.summary_updated_at,
                ).where(ChatSession.id == session_id)
            )
        ).one()
    return respond(
        SessionSummary(
            session_id=session_id,
            summary=row.summary,
            through_message_id=row.summary_through_message_id,
            updated_at=row.summary_updated_at,
        )
    )
