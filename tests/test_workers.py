"""The worker pool: a handler that fails hands its message back instead of holding it."""

from __future__ import annotations

import asyncio

from bridge.claims import ANSWER
from bridge.directory import sync_agents
from bridge.metrics import Metrics
from bridge.settings import AgentSettings, PipelineSettings
from bridge.wakeups import WorkSignals
from bridge.workers import WorkContext, WorkerPool
from tests.support.core import core, memory_message


async def test_failed_handler_gives_its_message_back_at_once(database_url: str) -> None:
    async with core(database_url) as bridge:
        stored = await bridge.ingest(memory_message("flaky", message_id="w1"))
        calls: list[int] = []
        handled = asyncio.Event()

        async def flaky(message_id: int) -> None:
            calls.append(message_id)
            if len(calls) == 1:
                raise RuntimeError("the database hiccuped")
            handled.set()

        settings = PipelineSettings(claim_ttl_seconds=60, poll_interval_seconds=0.2)
        context = WorkContext(
            sessions=bridge.sessions,
            agents=await sync_agents(bridge.sessions, [AgentSettings(slug="assistant")]),
            signals=WorkSignals(),
            metrics=Metrics(),
            settings=settings,
            worker_id="test-worker",
        )
        pool = WorkerPool(kind=ANSWER, handler=flaky, context=context, concurrency=4)
        pool.start()
        try:
            # Well before the 60 s claim expiry: the failed claim was handed back.
            async with asyncio.timeout(10):
                await handled.wait()
        finally:
            await pool.stop(grace_seconds=1)
        assert calls == [stored.message_id, stored.message_id]
