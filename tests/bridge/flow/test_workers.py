"""The worker pool: a handler that fails hands its message back instead of holding it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy import FromClause, Select, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.flow.claims import ANSWER, claim
from bridge.flow.workers import WorkContext, WorkerPool
from bridge.infra.metrics import Metrics
from bridge.settings import AgentSettings, PipelineSettings
from bridge.store.directory import sync_agents
from bridge.store.messages import MessageStore
from bridge.store.wakeups import WorkSignals
from tests.support.core import core, memory_message


@dataclass(frozen=True)
class _Job:
    message_id: int


def _ids(claimed: FromClause) -> Select[Any]:
    return select(claimed.c.id)


class _FlakyStep:
    """Claims answer work for real; running the first job fails."""

    kind = ANSWER

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.calls: list[int] = []
        self.handled = asyncio.Event()

    async def claim(self, limit: int) -> list[_Job]:
        async with self.sessions() as db, db.begin():
            claimed = await claim(
                db, ANSWER, worker_id="test-worker", limit=limit, ttl_seconds=60, load=_ids
            )
        return [_Job(message_id=int(item.row.id)) for item in claimed]

    async def run(self, job: _Job) -> None:
        self.calls.append(job.message_id)
        if len(self.calls) == 1:
            raise RuntimeError("the database hiccuped")
        self.handled.set()

    async def stop(self) -> None:
        pass


async def test_failed_handler_gives_its_message_back_at_once(database_url: str) -> None:
    async with core(database_url) as bridge:
        stored = await bridge.ingest(memory_message("flaky", message_id="w1"))
        step = _FlakyStep(bridge.sessions)
        settings = PipelineSettings(claim_ttl_seconds=60, poll_interval_seconds=0.2)
        context = WorkContext(
            store=MessageStore(sessions=bridge.sessions, signals=WorkSignals()),
            agents=await sync_agents(bridge.sessions, [AgentSettings(slug="assistant")]),
            signals=WorkSignals(),
            metrics=Metrics(),
            settings=settings,
            worker_id="test-worker",
        )
        pool = WorkerPool(step=step, context=context, concurrency=4)
        pool.start()
        try:
            # Well before the 60 s claim expiry: the failed claim was handed back.
            async with asyncio.timeout(10):
                await step.handled.wait()
        finally:
            await pool.stop(grace_seconds=1)
        assert step.calls == [stored.message_id, stored.message_id]
