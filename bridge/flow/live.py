"""Showing one reply while the agent writes it (see :mod:`bridge.ports.live`).

The agent's chunks are only collected here; one task per reply shows the text so far, one call
at a time and never faster than the channel's interval, so a reply costs a bounded number of
platform calls however many chunks the agent yields. Platform messages the channel starts are
recorded (through ``record``) before the next call, so a crash leaves them findable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bridge.flow.claims import ANSWER, claimed_parameters, update_if_claimed
from bridge.infra.logs import log_event
from bridge.infra.metrics import Metrics
from bridge.ports.contract import Channels
from bridge.ports.errors import DeliveryError
from bridge.ports.live import Draft, LiveChannel, LiveReply
from bridge.store.deltas import Delta, DeltaBus
from bridge.store.messages import MessageStore

logger = logging.getLogger(__name__)

MAX_FAILURES = 3
"""Consecutive failed calls after which a reply is no longer shown live (its final text still
goes out through the outbox)."""
CLOSE_WAIT_SECONDS = 10.0
"""How long closing waits for a call in flight: cancelling a call that creates a message could
leave that message unrecorded."""


def draft_of(row: Any, *, agent_slug: str) -> Draft | None:
    """The draft of the reply to a claimed message row (its id, session, channel, target,
    ``reply_key`` and ``live_message_ids``); None for a row stored before reply keys."""
    if not row.reply_key:
        return None
    return Draft(
        session_id=row.session_id,
        reply_to=int(row.id),
        delivery_key=row.reply_key,
        agent_slug=agent_slug,
        channel=row.channel,
        external_conv_id=row.external_conv_id,
        reply_target=dict(row.reply_target or {}),
        started=tuple(row.live_message_ids or ()),
    )


Begin = Callable[[Draft], Awaitable[LiveReply]]
Record = Callable[[Sequence[str]], Awaitable[None]]


class LiveShow:
    """The live view of one reply: :meth:`add` the agent's chunks, then :meth:`close`."""

    def __init__(
        self,
        *,
        begin: Begin,
        draft: Draft,
        record: Record,
        metrics: Metrics,
        asked_at: float | None,
    ) -> None:
        """``asked_at``: when the message was stored (``time.time()``), for time to first text."""
        self._begin = begin
        self._draft = draft
        self._record = record
        self._metrics = metrics
        self._asked_at = asked_at
        self._chunks: list[str] = []
        self._changed = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._recorded = draft.started
        self._reply: LiveReply | None = None
        self.calls = 0
        self._task = asyncio.create_task(self._run(), name=f"live-{draft.reply_to}")

    def add(self, chunk: str) -> None:
        if chunk:
            self._chunks.append(chunk)
            self._changed.set()

    async def close(self) -> None:
        """Stop showing: wait for a call in flight (bounded), then let the channel stop what
        runs while the agent writes. Never raises but ``CancelledError``."""
        self._closing = True
        self._closed.set()
        self._changed.set()
        try:
            async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        except Exception as error:  # not expected: _run logs what it knows of
            self._log("live.failed", error)
        if self._reply is not None:
            with contextlib.suppress(Exception):
                await self._reply.close()
        self._metrics.live_calls.labels(self._draft.channel).observe(self.calls)

    def _text(self) -> str:
        if len(self._chunks) > 1:
            self._chunks[:] = ["".join(self._chunks)]
        return self._chunks[0] if self._chunks else ""

    async def _run(self) -> None:
        try:
            self._reply = await self._begin(self._draft)
        except Exception as error:
            self._log("live.begin_failed", error)
            return
        shown = ""
        failures = 0
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._closing:
                return
            text = self._text()
            if not text.strip() or text == shown:
                continue
            try:
                ids = await self._reply.show(text)
            except DeliveryError as error:
                failures += 1
                self._log("live.show_failed", error)
                if error.permanent or failures >= MAX_FAILURES:
                    return
                await self._pause(error.retry_after or self._reply.interval_seconds)
                self._changed.set()
                continue
            except Exception as error:
                self._log("live.show_failed", error)
                return
            failures = 0
            if self.calls == 0 and self._asked_at is not None:
                self._metrics.first_text.labels(self._draft.channel).observe(
                    max(0.0, time.time() - self._asked_at)
                )
            self.calls += 1
            shown = text
            if tuple(ids) != self._recorded:
                try:
                    await self._record(ids)
                except Exception as error:  # the final delivery still goes out, unaided
                    self._log("live.record_failed", error)
                    return
                self._recorded = tuple(ids)
            await self._pause(self._reply.interval_seconds)
            if self._text() != shown:
                self._changed.set()

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the reply closes meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._closed.wait()

    def _log(self, event: str, error: BaseException) -> None:
        log_event(
            logger,
            event,
            level=logging.WARNING,
            channel=self._draft.channel,
            agent=self._draft.agent_slug,
            session=self._draft.session_id,
            message=self._draft.reply_to,
            error=f"{type(error).__name__}: {error}",
        )


DELTA_INTERVAL_SECONDS = 0.1


class DeltaReply:
    """The live reply of a channel whose replies the bridge stores itself (the web chat): each
    text so far goes to live clients as a ``message.delta`` frame, nothing to the platform."""

    interval_seconds = DELTA_INTERVAL_SECONDS

    def __init__(self, *, bus: DeltaBus, draft: Draft) -> None:
        self._bus = bus
        self._draft = draft

    async def show(self, text: str) -> Sequence[str]:
        await self._bus.publish(
            Delta(session_id=self._draft.session_id, reply_to=self._draft.reply_to, text=text)
        )
        return ()

    async def close(self) -> None:
        return None


class LiveReplies:
    """Starts the live view of a reply on the channel it goes to, if that channel shows one."""

    def __init__(
        self,
        *,
        channels: Channels,
        deltas: DeltaBus,
        store: MessageStore,
        metrics: Metrics,
        worker_id: str,
    ) -> None:
        self._channels = channels
        self._deltas = deltas
        self._store = store
        self._metrics = metrics
        self._worker_id = worker_id

    def start(self, draft: Draft, *, asked_at: float | None) -> LiveShow | None:
        """The live view of ``draft``'s reply, or None when its channel shows none."""
        channel = self._channels.get(draft.channel, draft.agent_slug)
        begin: Begin
        if isinstance(channel, LiveChannel):
            begin = channel.begin
        elif self._channels.capabilities(draft.channel).stores_replies and self._deltas.subscribed:
            begin = self._delta_reply
        else:
            return None

        async def record(ids: Sequence[str]) -> None:
            await self._record(draft.reply_to, ids)

        return LiveShow(
            begin=begin, draft=draft, record=record, metrics=self._metrics, asked_at=asked_at
        )

    async def _delta_reply(self, draft: Draft) -> LiveReply:
        return DeltaReply(bus=self._deltas, draft=draft)

    async def _record(self, message_id: int, ids: Sequence[str]) -> None:
        """Note the platform messages the reply started, while this worker answers it."""
        values = {"live_message_ids": list(ids)}
        async with self._store.write() as writes:
            await writes.db.execute(
                update_if_claimed(ANSWER, tuple(values)),
                claimed_parameters(message_id, self._worker_id, values),
            )
