"""The retention job: every ``interval_seconds`` one process (the lease holder) turns message
content older than ``message_days`` into tombstones and archives sessions idle longer than
``idle_session_days``, one short transaction per batch.

A failure is logged and counted; the next interval tries again (the bookmark is only moved by
committed batches, so nothing is skipped and nothing done twice).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from bridge.infra.logs import log_event
from bridge.infra.metrics import Metrics
from bridge.infra.tasks import cancel_and_wait
from bridge.retention.batches import SessionKey, archive_sessions, purge_messages
from bridge.retention.settings import RetentionSettings
from bridge.store.leases import Lease, LeaseLost
from bridge.store.messages import MessageStore
from bridge.store.models import utcnow

logger = logging.getLogger(__name__)

LEASE_NAME = "retention"
LEASE_SECONDS = 60.0
"""Renewed by every batch; after a holder dies another process takes over this much later."""


@dataclass(slots=True, kw_only=True)
class RunResult:
    outcome: str
    """``done``, ``skipped`` (another process holds the lease) or ``lost`` (taken over
    mid-run); a failure raises instead."""
    purged: int = 0
    archived: int = 0


class RetentionJob:
    def __init__(
        self,
        *,
        settings: RetentionSettings,
        store: MessageStore,
        metrics: Metrics,
        holder: str,
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self.lease = Lease(
            sessions=store.sessions, name=LEASE_NAME, holder=holder, ttl_seconds=LEASE_SECONDS
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        s = self._settings
        return s.message_days is not None or s.idle_session_days is not None

    def start(self) -> None:
        """Run now and every interval in the background; nothing at all when nothing is to
        be deleted (both settings unset: keep forever)."""
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="bridge-retention")

    async def stop(self) -> None:
        """Stop (a batch in flight rolls back) and hand the lease over at once."""
        if self._task is None:
            return
        await cancel_and_wait(self._task)
        self._task = None
        try:
            await self.lease.release()
        except Exception as error:  # the database is gone: the lease simply expires
            log_event(logger, "retention.release_failed", level=logging.WARNING, error=str(error))

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as error:
                self._metrics.retention_runs.labels("failed").inc()
                log_event(logger, "retention.failed", level=logging.WARNING, error=repr(error))
            await asyncio.sleep(self._settings.interval_seconds)

    async def run_once(self) -> RunResult:
        """One run, if this process gets the lease. Raises what the database raises."""
        if not await self.lease.acquire():
            self._metrics.retention_runs.labels("skipped").inc()
            log_event(logger, "retention.run", level=logging.DEBUG, outcome="skipped")
            return RunResult(outcome="skipped")
        started = time.monotonic()
        result = RunResult(outcome="done")
        try:
            await self._purge(result)
            await self._archive(result)
        except LeaseLost:
            result.outcome = "lost"
        self._metrics.retention_runs.labels(result.outcome).inc()
        if result.outcome == "done":
            self._metrics.retention_last_run.set(time.time())
        log_event(
            logger,
            "retention.run",
            outcome=result.outcome,
            purged=result.purged,
            archived=result.archived,
            seconds=round(time.monotonic() - started, 3),
        )
        return result

    async def _purge(self, result: RunResult) -> None:
        if self._settings.message_days is None:
            return
        cutoff = utcnow() - timedelta(days=self._settings.message_days)
        while True:
            async with self._store.write() as writes:
                after = await self.lease.hold(writes.db)
                batch = await purge_messages(
                    writes, after=after, cutoff=cutoff, limit=self._settings.batch_size
                )
                if batch.bookmark != after:
                    await self.lease.advance(writes.db, batch.bookmark)
            # Counted once committed: a batch that rolled back purged nothing.
            result.purged += batch.purged
            self._metrics.retention_purged.inc(batch.purged)
            if batch.bookmark != after:
                log_event(
                    logger,
                    "retention.batch",
                    level=logging.DEBUG,
                    kind="messages",
                    changed=batch.purged,
                    through=batch.bookmark,
                )
            if batch.done:
                return

    async def _archive(self, result: RunResult) -> None:
        if self._settings.idle_session_days is None:
            return
        cutoff = utcnow() - timedelta(days=self._settings.idle_session_days)
        after: SessionKey | None = None
        while True:
            async with self._store.write() as writes:
                await self.lease.hold(writes.db)
                batch = await archive_sessions(
                    writes, after=after, cutoff=cutoff, limit=self._settings.batch_size
                )
            result.archived += batch.archived
            self._metrics.retention_archived.inc(batch.archived)
            after = batch.last
            if batch.archived:
                log_event(
                    logger,
                    "retention.batch",
                    level=logging.DEBUG,
                    kind="sessions",
                    changed=batch.archived,
                )
            if batch.done:
                return
