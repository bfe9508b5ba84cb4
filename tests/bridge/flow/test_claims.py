"""Claims under contention: renewing never waits on (or deadlocks with) a batch that is
finishing the same claims, and a pool never hands a message it is working on to a second
task."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import FromClause, Select, select

from bridge.flow.claims import ANSWER, claim, held_claims, renew
from bridge.flow.workers import WorkContext, WorkerPool
from bridge.infra.metrics import Metrics
from bridge.settings import AgentSettings, PipelineSettings
from bridge.store.directory import sync_agents
from bridge.store.messages import MessageStore
from bridge.store.wakeups import WorkSignals
from tests.support.core import core, memory_message

WORKER = "test-worker"


def _ids(claimed: FromClause) -> Select[Any]:
    return select(claimed.c.id)


async def test_renewal_skips_claims_a_finishing_batch_holds(postgres_url: str) -> None:
    """A finishing batch locks its claims (``held_claims``) until it commits; a renewal that
    waited for that lock, while holding others the batch wants, deadlocked with it and let
    claims lapse (the work was then taken again and sent twice)."""
    async with core(postgres_url) as bridge:
        for n in range(3):
            await bridge.ingest(memory_message(f"m{n}", message_id=f"m{n}", conversation=f"c{n}"))
        async with bridge.sessions() as db, db.begin():
            claimed = await claim(db, ANSWER, worker_id=WORKER, limit=10, ttl_seconds=60, load=_ids)
        ids = [int(item.row.id) for item in claimed]
        assert len(ids) == 3
        async with bridge.sessions() as finishing, finishing.begin():
            assert await held_claims(finishing, ANSWER, worker_id=WORKER, message_ids=ids[:1])
            async with asyncio.timeout(10):  # it used to wait here until the batch committed
                renewed = await renew(
                    bridge.sessions, worker_id=WORKER, message_ids=ids, ttl_seconds=60
                )
        assert renewed == 2, "the claims the batch holds are skipped, the others renewed"


class _Job:
    def __init__(self, message_id: int) -> None:
        self.message_id = message_id


class _SlowStep:
    """Claims the same message on every call (as when its claim lapsed under load) and
    runs until released."""

    kind = ANSWER

    def __init__(self) -> None:
        self.started: list[int] = []
        self.claims = 0
        self.release = asyncio.Event()

    async def claim(self, limit: int) -> list[_Job]:
        self.claims += 1
        return [_Job(7)]

    async def run(self, job: _Job) -> None:
        self.started.append(job.message_id)
        await self.release.wait()

    async def stop(self) -> None:
        self.release.set()


async def test_pool_never_runs_a_message_it_is_running_twice(database_url: str) -> None:
    async with core(database_url) as bridge:
        step = _SlowStep()
        signals = WorkSignals()
        context = WorkContext(
            store=MessageStore(sessions=bridge.sessions, signals=signals),
            agents=await sync_agents(bridge.sessions, [AgentSettings(slug="assistant")]),
            signals=signals,
            metrics=Metrics(),
            settings=PipelineSettings(poll_interval_seconds=0.05),
            worker_id=WORKER,
        )
        pool = WorkerPool(step=step, context=context, concurrency=4)
        pool.start()
        try:
            async with asyncio.timeout(10):
                while step.claims < 5:  # the loop claims the same message again and again
                    signals.wake(ANSWER.name)
                    await asyncio.sleep(0.02)
        finally:
            await pool.stop(grace_seconds=1)
        assert step.started == [7], "a second task would send it a second time"
