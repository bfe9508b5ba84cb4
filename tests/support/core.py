"""The core's ingest path without the HTTP app, for tests that drive it from outside."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.flow.changes import ChangeApplier
from bridge.flow.dispatch import Dispatcher
from bridge.flow.ingest import Ingestor
from bridge.infra.metrics import Metrics
from bridge.ports.events import InboundMessage, Sender
from bridge.ports.registry import ChannelRegistry
from bridge.settings import A2ASettings, AgentSettings, DatabaseSettings
from bridge.store.directory import sync_agents
from bridge.store.engine import create_engine, session_factory
from bridge.store.messages import MessageStore
from bridge.store.wakeups import WorkSignals


@dataclass
class Core:
    sessions: async_sessionmaker[AsyncSession]
    ingest: Ingestor
    dispatch: Dispatcher


@asynccontextmanager
async def core(database_url: str, *, agents: list[str] | None = None) -> AsyncIterator[Core]:
    engine = create_engine(DatabaseSettings(url=database_url, pool_size=20))
    try:
        sessions = session_factory(engine)
        directory = await sync_agents(
            sessions, [AgentSettings(slug=slug) for slug in agents or ["assistant"]]
        )
        store = MessageStore(sessions=sessions, signals=WorkSignals())
        ingest = Ingestor(
            store=store,
            agents=directory,
            metrics=Metrics(),
            budget=A2ASettings(),
            capabilities=ChannelRegistry().capabilities,
        )
        try:
            changes = ChangeApplier(store=store, agents=directory)
            dispatch = Dispatcher(ingest=ingest, changes=changes)
            yield Core(sessions=sessions, ingest=ingest, dispatch=dispatch)
        finally:
            await ingest.stop()
    finally:
        await engine.dispose()


def memory_message(
    text: str,
    *,
    message_id: str,
    sender: str = "user-1",
    sender_name: str | None = None,
    conversation: str = "inmemory:conv-1",
    agent: str = "assistant",
    **extra: object,
) -> InboundMessage:
    return InboundMessage(
        channel="inmemory",
        agent_slug=agent,
        external_conv_id=conversation,
        external_message_id=message_id,
        sender=Sender(external_id=sender, display_name=sender_name),
        text=text,
        reply_target={"conversation": conversation},
        **extra,  # type: ignore[arg-type]
    )
