"""A pool of tasks that claims one kind of work in batches and runs each claimed message.

No busy polling: the loop sleeps until woken (new work, a finished task, a retry coming due)
and polls slowly only as a safety net. Every task is tracked, and stop() finishes or cancels
them within a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from bridge.flow.claims import ClaimKind, release
from bridge.infra.logs import log_event
from bridge.infra.metrics import Metrics
from bridge.infra.tasks import cancel_and_wait
from bridge.settings import PipelineSettings
from bridge.store.directory import AgentDirectory
from bridge.store.messages import MessageStore
from bridge.store.wakeups import WorkSignals

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkContext:
    """What every step that works on claimed messages shares within one process."""

    store: MessageStore
    agents: AgentDirectory
    signals: WorkSignals
    metrics: Metrics
    settings: PipelineSettings
    worker_id: str


class Job(Protocol):
    @property
    def message_id(self) -> int: ...


JobT = TypeVar("JobT", bound=Job)


class Step(Protocol[JobT]):
    """One kind of work: claim a batch (loading what the work needs), run one claimed job."""

    @property
    def kind(self) -> ClaimKind: ...

    async def claim(self, limit: int) -> Sequence[JobT]: ...

    async def run(self, job: JobT) -> None: ...

    async def stop(self) -> None: ...


class WorkerPool(Generic[JobT]):
    def __init__(self, *, step: Step[JobT], context: WorkContext, concurrency: int) -> None:
        self._kind = step.kind
        self._step = step
        self._sessions = context.store.sessions
        self._claimed = context.metrics.batch_size.labels(f"claim_{step.kind.name}")
        self._signals = context.signals
        self._worker_id = context.worker_id
        self._concurrency = concurrency
        self._ttl = context.settings.claim_ttl_seconds
        self._poll = context.settings.poll_interval_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[int] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def in_flight(self) -> frozenset[int]:
        """The ids of the messages being worked on now (their claims are renewed)."""
        return frozenset(self._running)

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name=f"bridge-{self._kind.name}-loop")

    async def stop(self, *, grace_seconds: float) -> None:
        """Stop claiming, let running work finish for ``grace_seconds``, cancel the rest."""
        self._stopping = True
        await cancel_and_wait(self._loop_task)
        self._loop_task = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_seconds)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._step.stop()

    def _spawn(self, job: JobT) -> None:
        if job.message_id in self._running:
            # Its claim lapsed while this process still works on it (renewal was late) and
            # this process took it again: the running task keeps it, a second would send twice.
            log_event(
                logger,
                "claim.still_running",
                level=logging.WARNING,
                kind=self._kind.name,
                message=job.message_id,
            )
            return
        self._running.add(job.message_id)  # renewed from now on, also before the task starts
        task = asyncio.create_task(
            self._run_one(job), name=f"bridge-{self._kind.name}-{job.message_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._signals.wake(self._kind.name)

    async def _run_one(self, job: JobT) -> None:
        message_id = job.message_id
        try:
            await self._step.run(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Never let one message kill the pool: hand it back, to be tried again shortly
            # (if even that fails, its claim is no longer renewed and expires).
            logger.exception(
                "%s handler failed", self._kind.name, extra={"fields": {"message": message_id}}
            )
            with contextlib.suppress(Exception):
                await release(
                    self._sessions,
                    worker_id=self._worker_id,
                    message_ids=[message_id],
                    retry_in_seconds=self._poll,
                )
        finally:
            self._running.discard(message_id)

    async def _loop(self) -> None:
        wake = self._signals.event(self._kind.name)
        failures = 0
        while not self._stopping:
            wake.clear()
            free = self._concurrency - len(self._tasks)
            if free > 0:
                try:
                    jobs = await self._step.claim(free)
                    failures = 0
                except Exception as error:  # database down: back off, then try again
                    failures += 1
                    log_event(
                        logger,
                        "claim.failed",
                        level=logging.WARNING,
                        kind=self._kind.name,
                        error=type(error).__name__,
                    )
                    await asyncio.sleep(min(self._poll, 0.2 * 2**failures))
                    continue
                if jobs:
                    self._claimed.observe(len(jobs))
                for job in jobs:
                    self._spawn(job)
                if len(jobs) == free:
                    continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that arrives as the event fires, and stop() would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await wake.wait()
