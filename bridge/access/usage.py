"""The figures of the usage API: per user or per conversation, the messages answered, failed,
limited and refused since a moment, and the model tokens their answers cost.

Stored user messages give all but the refusals (sessions deleted since count too: the usage
happened); only people's messages count, not agents' hand-offs or asks. Refused messages are
never stored, so they come from the hourly counts in ``refusals``: every refusal of the hour
``since`` falls in counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.access.policy import identity_of
from bridge.access.store import hour_of
from bridge.store.models import MESSAGES, PARTICIPANTS, REFUSALS, SESSIONS, Agent, MessageState

GroupBy = Literal["user", "conversation"]


@dataclass(slots=True, kw_only=True)
class UsageRow:
    agent: str
    key: str
    """The identity (``group_by="user"``) or the ``external_conv_id``."""
    answered: int = 0
    failed: int = 0
    limited: int = 0
    refused: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


async def agent_id_of(
    db: AsyncSession, slug: str, *, workspace_id: int | None = None
) -> int | None:
    """The agent's id in the ``agents`` table (every agent a bridge served, configured now or
    not), or None; with ``workspace_id``, None too for an agent of another workspace."""
    statement = select(Agent.id).where(Agent.slug == slug)
    if workspace_id is not None:
        statement = statement.where(Agent.workspace_id == workspace_id)
    found = await db.execute(statement)
    value = found.scalar_one_or_none()
    return None if value is None else int(value)


def _count(state: str) -> Any:
    return func.coalesce(func.sum(case((MESSAGES.c.state == state, 1), else_=0)), 0)


async def usage(
    db: AsyncSession,
    *,
    since: datetime,
    group_by: GroupBy,
    agent: str | None,
    workspace_id: int | None = None,
) -> list[UsageRow]:
    """One row per (agent, user or conversation) with anything to show, sorted by key, then
    agent (``agent``: one agent's slug, or None for all; ``workspace_id``: only the agents of
    that workspace, or None for every workspace)."""
    m, s, p, r = MESSAGES.c, SESSIONS.c, PARTICIPANTS.c, REFUSALS.c
    keys = [p.channel, p.external_id] if group_by == "user" else [s.external_conv_id]
    messages = (
        select(
            Agent.slug,
            *keys,
            _count(MessageState.ANSWERED).label("answered"),
            _count(MessageState.FAILED).label("failed"),
            _count(MessageState.LIMITED).label("limited"),
            func.coalesce(func.sum(m.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(m.output_tokens), 0).label("output_tokens"),
        )
        .select_from(
            MESSAGES.join(SESSIONS, s.id == m.session_id)
            .join(Agent, Agent.id == s.agent_id)
            .join(PARTICIPANTS, p.id == m.sender_participant_id)
        )
        .where(m.role == "user", p.kind == "user", m.created_at >= since)
        .group_by(Agent.slug, *keys)
    )
    refused_key = r.identity if group_by == "user" else r.external_conv_id
    refusals = (
        select(Agent.slug, refused_key.label("key"), func.sum(r.count).label("refused"))
        .select_from(REFUSALS.join(Agent, Agent.id == r.agent_id))
        .where(r.hour >= hour_of(since))
        .group_by(Agent.slug, refused_key)
    )
    if agent is not None:
        messages = messages.where(Agent.slug == agent)
        refusals = refusals.where(Agent.slug == agent)
    if workspace_id is not None:
        messages = messages.where(Agent.workspace_id == workspace_id)
        refusals = refusals.where(Agent.workspace_id == workspace_id)
    rows: dict[tuple[str, str], UsageRow] = {}

    def row(slug: str, key: str) -> UsageRow:
        return rows.setdefault((key, slug), UsageRow(agent=slug, key=key))

    for found in await db.execute(messages):
        key = (
            identity_of(found.channel, found.external_id)
            if group_by == "user"
            else found.external_conv_id
        )
        figures = row(found.slug, key)
        figures.answered += int(found.answered)
        figures.failed += int(found.failed)
        figures.limited += int(found.limited)
        figures.input_tokens += int(found.input_tokens)
        figures.output_tokens += int(found.output_tokens)
    for found in await db.execute(refusals):
        row(found.slug, found.key).refused += int(found.refused)
    return [rows[key] for key in sorted(rows)]
