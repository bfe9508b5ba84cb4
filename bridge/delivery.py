"""Step 4 of the flow: deliver one claimed reply through its channel, exactly once.

Before each send the attempt is recorded and the delivery marked *in doubt*; only a definite
answer from the platform clears it. The channel receives the stable ``delivery_key`` and the
in-doubt flag, so it can ask the platform whether an earlier attempt already landed instead of
posting twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Select, Update, bindparam, select, update

from bridge.claims import DELIVER, claimed_parameters, next_retry_at, update_if_claimed
from bridge.db.models import MESSAGES, SESSIONS, MessageState, UTCDateTime, utcnow
from bridge.directory import UnknownAgent
from bridge.events import Reply
from bridge.feed import FEED, record_changes
from bridge.handoff import HandOffs
from bridge.logs import log_event
from bridge.redact import config_secrets, redact
from bridge.workers import WorkContext
from channels.base import ChannelLookup, DeliveryError

logger = logging.getLogger(__name__)


def _log_reply(event: str, reply: Reply, *, level: int = logging.INFO, **fields: Any) -> None:
    """One log line about a reply, always with the same identifying fields."""
    log_event(
        logger,
        event,
        level=level,
        channel=reply.channel,
        agent=reply.agent_slug,
        session=reply.session_id,
        message=reply.message_id,
        attempt=reply.attempt,
        **fields,
    )


@cache
def _attempt_statements() -> tuple[Select[Any], Update]:
    """Built once: load a claimed reply with its session and question; count the attempt."""
    asked_table = MESSAGES.alias("asked")
    m, asked, sessions = MESSAGES.c, asked_table.c, SESSIONS.c
    load = (
        select(
            m.session_id,
            m.delivery_key,
            m.channel,
            m.content,
            m.reply_target,
            m.attempts,
            m.delivery_in_doubt,
            sessions.agent_id,
            sessions.external_conv_id,
            asked.created_at.label("asked_at"),
        )
        .select_from(
            MESSAGES.join(SESSIONS, sessions.id == m.session_id).outerjoin(
                asked_table, asked.id == m.reply_to_message_id
            )
        )
        .where(
            m.id == bindparam("message_id"),
            m.state == DELIVER.working,
            m.claimed_by == bindparam("worker"),
        )
    )
    record = (
        update(MESSAGES)
        .where(m.id == bindparam("message_id"))
        .values(
            attempts=bindparam("attempt"),
            delivery_in_doubt=True,
            updated_at=bindparam("now", type_=UTCDateTime()),
        )
    )
    return load, record


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with jitter: half fixed, half random, so retries spread out."""
    delay = min(cap, base * 2.0 ** max(0, attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Attempt:
    reply: Reply
    asked_at: datetime | None


class Deliverer:
    def __init__(
        self, *, context: WorkContext, channels: ChannelLookup, handoffs: HandOffs
    ) -> None:
        self._handoffs = handoffs
        self._sessions = context.sessions
        self._agents = context.agents
        self._channels = channels
        self._signals = context.signals
        self._metrics = context.metrics
        self._settings = context.settings
        self._worker_id = context.worker_id

    async def __call__(self, message_id: int) -> None:
        attempt = await self._begin(message_id)
        if attempt is None:
            return
        reply = attempt.reply
        targets = self._handoffs.targets(reply)
        if targets:
            mentions = {t.slug: t.mention_id for t in targets if t.mention_id is not None}
            reply = dataclasses.replace(reply, mentions=mentions)
        channel = self._channels(reply.channel, reply.agent_slug)
        if channel is None:
            error = DeliveryError(
                f"channel {reply.channel!r} is not running for agent {reply.agent_slug!r}",
                permanent=True,
            )
            await self._failed_attempt(reply, error)
            return
        try:
            async with asyncio.timeout(self._settings.send_timeout_seconds):
                ids = await channel.send(reply)
        except DeliveryError as error:
            await self._failed_attempt(reply, error)
        except Exception as error:  # unknown failure: it may have gone out
            await self._failed_attempt(
                reply, DeliveryError(f"{type(error).__name__}: {error}", in_doubt=True)
            )
        else:
            if targets:
                await self._handoffs.hand_off(reply, targets)
            await self._succeeded(reply, ids, attempt.asked_at)

    async def _begin(self, message_id: int) -> _Attempt | None:
        """Load the reply and record the attempt before anything is sent."""
        load, record = _attempt_statements()
        async with self._sessions() as db, db.begin():
            row = (
                await db.execute(load, {"message_id": message_id, "worker": self._worker_id})
            ).one_or_none()
            if row is None:
                return None
            await db.execute(
                record, {"message_id": message_id, "attempt": row.attempts + 1, "now": utcnow()}
            )
        reply = Reply(
            message_id=message_id,
            session_id=row.session_id,
            delivery_key=row.delivery_key or "",
            agent_slug=self._agents.slug_of(row.agent_id),
            channel=row.channel,
            external_conv_id=row.external_conv_id,
            text=row.content,
            reply_target=dict(row.reply_target or {}),
            in_doubt=bool(row.delivery_in_doubt),
            attempt=row.attempts + 1,
        )
        return _Attempt(reply=reply, asked_at=row.asked_at)

    async def _finish(self, reply: Reply, **values: object) -> bool:
        values = {"claimed_by": None, "claim_expires_at": None, "updated_at": utcnow(), **values}
        statement = update_if_claimed(DELIVER, tuple(values))
        async with self._sessions() as db, db.begin():
            result = await db.execute(
                statement, claimed_parameters(reply.message_id, self._worker_id, values)
            )
            recorded = result.rowcount == 1  # type: ignore[attr-defined]
            if recorded:
                await record_changes(db, [("message.updated", reply.session_id, reply.message_id)])
        if not recorded:
            _log_reply("delivery.claim_lost", reply, level=logging.WARNING)
            return False
        self._signals.wake(FEED)
        return True

    async def _succeeded(self, reply: Reply, ids: Sequence[str], asked_at: datetime | None) -> None:
        now = utcnow()
        recorded = await self._finish(
            reply,
            state=MessageState.DELIVERED,
            delivery_in_doubt=False,
            platform_message_ids=list(ids),
            delivered_at=now,
            last_error=None,
        )
        if not recorded:
            return
        self._metrics.delivered.labels(reply.channel).inc()
        if asked_at is not None:
            self._metrics.latency.labels(reply.channel).observe((now - asked_at).total_seconds())
        _log_reply("message.delivered", reply, platform_ids=",".join(ids))

    def _shown(self, reply: Reply, error: DeliveryError) -> str:
        """The error as stored and logged: one line, without the channel's credentials (a
        platform's error could quote the request it refused) or anything shaped like one."""
        try:
            section = self._agents.get(reply.agent_slug).settings.channels.get(reply.channel)
        except UnknownAgent:
            section = None
        return redact(" ".join(str(error).split()), config_secrets(section or {}))

    async def _failed_attempt(self, reply: Reply, error: DeliveryError) -> None:
        give_up = error.permanent or reply.attempt >= self._settings.max_delivery_attempts
        shown = self._shown(reply, error)
        if give_up:
            recorded = await self._finish(
                reply,
                state=MessageState.FAILED,
                last_error=shown,
                delivery_in_doubt=error.in_doubt,
            )
            if recorded:
                self._metrics.failed.labels(reply.channel, "delivery").inc()
                _log_reply("delivery.failed", reply, level=logging.ERROR, error=shown)
            return
        delay = (
            error.retry_after
            if error.retry_after is not None
            else backoff_seconds(
                reply.attempt,
                base=self._settings.retry_base_seconds,
                cap=self._settings.retry_max_seconds,
            )
        )
        recorded = await self._finish(
            reply,
            state=MessageState.TO_DELIVER,
            last_error=shown,
            delivery_in_doubt=error.in_doubt,
            next_attempt_at=next_retry_at(delay),
        )
        if recorded:
            self._metrics.delivery_retries.labels(reply.channel).inc()
            self._signals.wake_later(DELIVER.name, delay)
            _log_reply(
                "delivery.retry",
                reply,
                level=logging.WARNING,
                retry_in=f"{delay:.2f}",
                error=shown,
            )
