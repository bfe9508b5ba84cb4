"""Wake-ups for idle workers: an in-process signal, and ``LISTEN/NOTIFY`` on PostgreSQL so that
work stored by one process wakes the workers of every other."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from bridge.infra.logs import log_event
from bridge.infra.tasks import cancel_and_wait
from bridge.store.deltas import DELTA_CHANNEL, DeltaBus

NOTIFY_CHANNEL = "bridge_work"
logger = logging.getLogger(__name__)


class WorkSignals:
    """One event per kind of work; setting it wakes that kind's worker loop."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._timers: set[asyncio.TimerHandle] = set()

    def event(self, kind: str) -> asyncio.Event:
        return self._events.setdefault(kind, asyncio.Event())

    def wake(self, kind: str) -> None:
        self.event(kind).set()

    def wake_all(self) -> None:
        for event in self._events.values():
            event.set()

    def wake_later(self, kind: str, delay: float) -> None:
        """Wake ``kind`` when a scheduled retry comes due."""
        self._timers = {
            timer for timer in self._timers if not timer.cancelled() and not _fired(timer)
        }
        self._timers.add(asyncio.get_running_loop().call_later(delay, self.wake, kind))

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()


def _fired(timer: asyncio.TimerHandle) -> bool:
    return timer.when() <= asyncio.get_running_loop().time()


def _setter(event: asyncio.Event) -> Any:
    return lambda _connection: event.set()


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    return (
        make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


MAX_QUEUED_DELTAS = 1_000
"""Delta payloads waiting for the hub, at most; beyond that they are dropped (a lost delta is
harmless: the next carries the whole text)."""


class PostgresListener:
    """Keeps one LISTEN connection open, reconnecting after a server restart; also hands reply
    deltas (``bridge.store.deltas``) to their bus."""

    def __init__(
        self,
        *,
        url: str,
        signals: WorkSignals,
        deltas: DeltaBus | None = None,
        retry_seconds: float = 1.0,
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self._signals = signals
        self._deltas = deltas
        self._delta_payloads: asyncio.Queue[str] = asyncio.Queue(MAX_QUEUED_DELTAS)
        self._retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self._forward_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bridge-pg-listener")
        if self._deltas is not None:
            self._forward_task = asyncio.create_task(
                self._forward_deltas(), name="bridge-pg-deltas"
            )

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await cancel_and_wait(self._forward_task)
        self._task = self._forward_task = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._signals.wake(payload)

    def _on_delta(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._delta_payloads.put_nowait(payload)

    async def _forward_deltas(self) -> None:
        assert self._deltas is not None
        while True:
            payload = await self._delta_payloads.get()
            await self._deltas.receive(payload)

    async def _run(self) -> None:
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(self._dsn)
                lost = asyncio.Event()
                connection.add_termination_listener(_setter(lost))
                await connection.add_listener(NOTIFY_CHANNEL, self._on_notify)
                if self._deltas is not None:
                    await connection.add_listener(DELTA_CHANNEL, self._on_delta)
                # Anything stored while we were not listening is picked up now.
                self._signals.wake_all()
                await lost.wait()
            except (OSError, asyncpg.PostgresError) as error:
                log_event(logger, "listener.reconnecting", level=logging.WARNING, error=str(error))
            finally:
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)
            await asyncio.sleep(self._retry_seconds)
