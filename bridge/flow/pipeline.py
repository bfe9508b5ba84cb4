"""The flow of one message: ingest -> answer -> deliver, with recovery and scale-out.

This module only composes the steps (``ingest``, ``answering``, ``delivery``) with their worker
pools, claim renewal and wake-ups. Correctness lives in the database: a process may die at any
point and the work it had claimed is claimed again once its claims expire (at once on SQLite,
which runs in one process).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bridge.a2a.asks import AgentAsks
from bridge.a2a.handoff import HandOffs
from bridge.access.notices import Notices
from bridge.agents.base import AgentBackend
from bridge.files.agent_files import AgentFiles
from bridge.flow.answer import Answerer
from bridge.flow.changes import ChangeApplier
from bridge.flow.claims import release, renew
from bridge.flow.deliver import Deliverer
from bridge.flow.dispatch import Dispatcher
from bridge.flow.ingest import Ingestor
from bridge.flow.live import LiveReplies
from bridge.flow.workers import WorkContext, WorkerPool
from bridge.infra.logs import log_event
from bridge.infra.metrics import Metrics
from bridge.infra.tasks import cancel_and_wait
from bridge.ports.contract import Channels
from bridge.settings import Settings
from bridge.store.deltas import DeltaBus
from bridge.store.directory import AgentDirectory
from bridge.store.engine import is_sqlite
from bridge.store.messages import MessageStore
from bridge.store.wakeups import PostgresListener, WorkSignals

logger = logging.getLogger(__name__)


def new_worker_id() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Pipeline:
    def __init__(
        self,
        *,
        settings: Settings,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        agents: AgentDirectory,
        backends: Mapping[str, AgentBackend],
        channels: Channels,
        metrics: Metrics,
        files: AgentFiles | None = None,
    ) -> None:
        self.worker_id = new_worker_id()
        self.signals = WorkSignals()
        self.store = MessageStore(sessions=sessions, signals=self.signals)
        self.deltas = DeltaBus(engine=None if is_sqlite(engine) else engine)
        """Reply text as it is written, for the live web clients of every process."""
        self._settings = settings.pipeline
        self._engine = engine
        self._sessions = sessions
        self._notices = Notices(channels=channels)
        self.ingest = Ingestor(
            store=self.store,
            agents=agents,
            metrics=metrics,
            budget=settings.a2a,
            capabilities=channels.capabilities,
            notify=self._notices.send,
        )
        self.dispatch = Dispatcher(
            ingest=self.ingest, changes=ChangeApplier(store=self.store, agents=agents)
        )
        self.asks = AgentAsks(ingest=self.ingest, store=self.store, agents=agents)
        context = WorkContext(
            store=self.store,
            agents=agents,
            signals=self.signals,
            metrics=metrics,
            settings=self._settings,
            worker_id=self.worker_id,
        )
        self._pools: tuple[WorkerPool[Any], ...] = (
            WorkerPool(
                step=Answerer(
                    context=context,
                    backends=backends,
                    asks=self.asks,
                    ask_wait_seconds=settings.a2a.max_wait_seconds,
                    live=LiveReplies(
                        channels=channels,
                        deltas=self.deltas,
                        store=self.store,
                        metrics=metrics,
                        worker_id=self.worker_id,
                    ),
                    files=files,
                ),
                context=context,
                concurrency=self._settings.answer_concurrency,
            ),
            WorkerPool(
                step=Deliverer(
                    context=context,
                    channels=channels,
                    handoffs=HandOffs(
                        agents=agents, channels=channels, ingest=self.ingest, store=self.store
                    ),
                    files=None if files is None else files.store,
                ),
                context=context,
                concurrency=self._settings.delivery_concurrency,
            ),
        )
        self._listener = (
            None
            if is_sqlite(engine)
            else PostgresListener(
                url=settings.database.url.get_secret_value(),
                signals=self.signals,
                deltas=self.deltas,
            )
        )
        self._renewal: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if is_sqlite(self._engine):
            # SQLite runs in one process: whatever is claimed was claimed by a dead one.
            recovered = await release(self._sessions, worker_id=None)
            if recovered:
                log_event(logger, "pipeline.recovered", messages=recovered)
        if self._listener is not None:
            self._listener.start()
        for pool in self._pools:
            pool.start()
        self._renewal = asyncio.create_task(self._renew_claims(), name="bridge-claim-renewal")
        log_event(logger, "pipeline.started", worker=self.worker_id)

    async def stop(self) -> None:
        """Stop claiming, give in-flight work the grace period, hand back what is left.
        Safe to call twice."""
        if self._renewal is None:
            return
        grace = self._settings.shutdown_grace_seconds
        await asyncio.gather(*(pool.stop(grace_seconds=grace) for pool in self._pools))
        await self.ingest.stop()
        await self._notices.stop()
        await cancel_and_wait(self._renewal)
        self._renewal = None
        if self._listener is not None:
            await self._listener.stop()
        self.signals.close()
        try:
            released = await release(self._sessions, worker_id=self.worker_id)
        except Exception as error:  # the database is gone: the claims simply expire
            log_event(logger, "pipeline.release_failed", level=logging.WARNING, error=str(error))
            released = 0
        log_event(logger, "pipeline.stopped", worker=self.worker_id, released=released)

    async def _renew_claims(self) -> None:
        ttl = self._settings.claim_ttl_seconds
        while True:
            await asyncio.sleep(ttl / 3)
            running = frozenset().union(*(pool.in_flight for pool in self._pools))
            if not running:
                continue
            try:
                await renew(
                    self._sessions, worker_id=self.worker_id, message_ids=running, ttl_seconds=ttl
                )
            except Exception as error:
                log_event(logger, "claims.renew_failed", level=logging.WARNING, error=str(error))
