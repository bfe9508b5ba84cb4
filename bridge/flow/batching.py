"""Group commit: concurrent callers' writes share one transaction, each with its own result.

Callers submit an item and wait; one writer task takes everything queued (up to a maximum)
and writes it as one batch, while the next batch forms behind it. Nothing waits when the
queue is idle: a lone item is written at once, as a batch of one. When a batch fails as a
whole, its items are written again one by one, so one bad item fails only its own caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from prometheus_client import Histogram

from bridge.infra.logs import log_event
from bridge.infra.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")
WriteBatch = Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]]


class GroupCommit(Generic[Item, Result]):
    """``await submit(item)`` returns the item's result once its batch has committed.

    ``write`` receives the batch and returns one result per item, in order: a value, or an
    exception for that item alone (raised to its caller). An exception raised by ``write``
    itself (the transaction failed) makes each item of that batch be tried again alone.
    The writer task starts with the first item and is stopped by :meth:`stop`.
    """

    def __init__(
        self,
        *,
        name: str,
        write: WriteBatch[Item, Result],
        max_batch: int,
        sizes: Histogram | None = None,
        durations: Histogram | None = None,
    ) -> None:
        self._name = name
        self._sizes = None if sizes is None else sizes.labels(name)
        self._durations = None if durations is None else durations.labels(name)
        self._write = write
        self._max_batch = max_batch
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def submit(self, item: Item) -> Result:
        if self._stopped:
            raise RuntimeError(f"{self._name} is stopped")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._idle.clear()
        self._ready.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"bridge-{self._name}")
        # Shielded: a caller that gives up does not take its item out of a batch being written.
        return await asyncio.shield(future)

    async def stop(self) -> None:
        """Write what is queued, then stop the writer."""
        self._stopped = True
        if self._task is None:
            return
        if not self._task.done():
            await self._idle.wait()
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            if not self._queue:
                self._ready.clear()
            if batch:
                if self._sizes is not None:
                    self._sizes.observe(len(batch))
                started = time.perf_counter()
                try:
                    await self._write_batch(batch)
                except Exception as error:  # a bug in ``write``: fail this batch, keep serving
                    logger.exception("%s: writing a batch failed", self._name)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                if self._durations is not None:
                    self._durations.observe(time.perf_counter() - started)
            if not self._queue:
                self._idle.set()

    async def _write_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await self._write(items)
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError(f"{self._name} stopped"))
            raise
        except Exception as error:
            if len(batch) == 1:
                results = [error]
            else:
                log_event(
                    logger,
                    "batch.retried_alone",
                    level=logging.WARNING,
                    batch=self._name,
                    size=len(batch),
                    error=type(error).__name__,
                )
                for entry in batch:
                    await self._write_batch([entry])
                return
        if len(results) != len(batch):
            raise RuntimeError(f"{self._name}: {len(results)} results for {len(batch)} items")
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
