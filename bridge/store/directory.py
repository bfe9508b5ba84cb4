"""The configured agents, synced into the ``agents`` table at start-up (upsert by slug)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.ports.errors import UnknownAgent
from bridge.ports.events import AGENT_CHANNEL
from bridge.settings import AgentSettings
from bridge.store.engine import insert
from bridge.store.models import WORKSPACES, Agent, utcnow
from bridge.store.sessions import find_or_create_participant


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRecord:
    id: int
    participant_id: int
    workspace_id: int
    settings: AgentSettings


class AgentDirectory:
    def __init__(self, *, records: dict[str, AgentRecord]) -> None:
        self._records = records

    def get(self, slug: str) -> AgentRecord:
        try:
            return self._records[slug]
        except KeyError:
            raise UnknownAgent(f"unknown agent {slug!r}") from None

    def by_id(self, agent_id: int) -> AgentRecord:
        for record in self._records.values():
            if record.id == agent_id:
                return record
        raise UnknownAgent(f"unknown agent id {agent_id}")

    def slug_of(self, agent_id: int) -> str:
        """The slug, or a placeholder no channel answers to for an agent no longer configured."""
        try:
            return self.by_id(agent_id).settings.slug
        except UnknownAgent:
            return f"unconfigured-agent-{agent_id}"


def _backend_options(agent: AgentSettings) -> dict[str, object]:
    options = getattr(agent, agent.backend, None)
    if options is None:
        return {}
    # Secrets stay out of the database: SecretStr dumps as '**********'.
    return dict(options.model_dump(mode="json"))


async def workspace_ids(db: AsyncSession, slugs: set[str]) -> dict[str, int]:
    """The ids of these workspaces, created when missing (a deleted one stays deleted: its
    agents keep working, its sessions and tokens stay as the delete left them)."""
    dialect = db.get_bind().dialect.name
    now = utcnow()
    for slug in sorted(slugs):
        await db.execute(
            insert(dialect, WORKSPACES)
            .values(slug=slug, name=slug, created_at=now)
            .on_conflict_do_nothing(index_elements=["slug"])
        )
    rows = await db.execute(
        select(WORKSPACES.c.slug, WORKSPACES.c.id).where(WORKSPACES.c.slug.in_(sorted(slugs)))
    )
    return {slug: workspace_id for slug, workspace_id in rows}


async def sync_agents(
    sessions: async_sessionmaker[AsyncSession], agents: list[AgentSettings]
) -> AgentDirectory:
    records: dict[str, AgentRecord] = {}
    async with sessions() as db, db.begin():
        dialect = db.get_bind().dialect.name
        workspaces = await workspace_ids(db, {agent.workspace for agent in agents})
        for agent in agents:
            participant_id = await find_or_create_participant(
                db,
                kind="agent",
                channel=AGENT_CHANNEL,
                external_id=agent.slug,
                display_name=agent.name,
            )
            now = utcnow()
            values = {
                "name": agent.name,
                "backend": agent.backend,
                "backend_options": _backend_options(agent),
                "system_prompt": agent.system_prompt,
                "history_messages": agent.history_messages,
                "history_chars": agent.history_chars,
                "idle_reset_hours": agent.idle_reset_hours,
                "participant_id": participant_id,
                "workspace_id": workspaces[agent.workspace],
                "updated_at": now,
            }
            statement = insert(dialect, Agent)
            await db.execute(
                statement.values(slug=agent.slug, created_at=now, **values).on_conflict_do_update(
                    index_elements=["slug"], set_=values
                )
            )
            agent_id = (
                await db.execute(select(Agent.id).where(Agent.slug == agent.slug))
            ).scalar_one()
            records[agent.slug] = AgentRecord(
                id=agent_id,
                participant_id=participant_id,
                workspace_id=workspaces[agent.workspace],
                settings=agent,
            )
    return AgentDirectory(records=records)
