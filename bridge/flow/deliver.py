"""Step 4 of the flow: deliver claimed replies through their channels, exactly once.

The claim itself records the attempt and marks the delivery *in doubt*, before anything is
sent; only a definite answer from the platform clears it. Outcomes (delivered, retry at,
failed) are recorded by group commit. The channel receives the stable ``delivery_key`` and the
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
from typing import Any

from sqlalchemy import FromClause, Select, select

from bridge.a2a.handoff import HandOffs
from bridge.files.reply_files import (
    ListedFile,
    file_lines,
    load_reply_files,
    upload_recorder,
)
from bridge.files.store import FileStore
from bridge.flow.batching import GroupCommit
from bridge.flow.claims import DELIVER, claim, finish_claimed, next_retry_at
from bridge.flow.workers import WorkContext
from bridge.infra.logs import log_event
from bridge.infra.redact import config_secrets, redact
from bridge.ports.contract import Channels
from bridge.ports.errors import DeliveryError, UnknownAgent
from bridge.ports.events import OutgoingFile, Reply, ReplyOutcome
from bridge.store.models import MESSAGES, SESSIONS, MessageState, utcnow

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


def _load(claimed: FromClause) -> Select[Any]:
    """What delivering needs of each claimed reply: it, its session, when it was asked."""
    asked_table = MESSAGES.alias("asked")
    m, asked, sessions = claimed.c, asked_table.c, SESSIONS.c
    return select(
        m.id,
        m.session_id,
        m.delivery_key,
        m.channel,
        m.content,
        m.reply_target,
        m.attempts,
        m.attachments,
        sessions.agent_id,
        sessions.external_conv_id,
        asked.created_at.label("asked_at"),
        asked.state.label("asked_state"),
        asked.live_message_ids,
    ).select_from(
        claimed.join(SESSIONS, sessions.id == m.session_id).outerjoin(
            asked_table, asked.id == m.reply_to_message_id
        )
    )


def _outcome(asked_state: str | None) -> ReplyOutcome | None:
    """How answering the asked message ended, for its status reaction."""
    if asked_state is None:
        return None
    if asked_state == MessageState.FAILED:
        return "failed"
    return "answered" if asked_state == MessageState.ANSWERED else None


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with jitter: half fixed, half random, so retries spread out."""
    delay = min(cap, base * 2.0 ** max(0, attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


MAX_BATCH = 256
"""Delivery outcomes recorded in one transaction at most."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Attempt:
    reply: Reply
    asked_at: datetime | None
    has_files: bool = False

    @property
    def message_id(self) -> int:
        return self.reply.message_id


@dataclass(frozen=True, slots=True, kw_only=True)
class _Outcome:
    reply: Reply
    values: dict[str, Any]


class Deliverer:
    """The delivery step: claims replies in batches (each attempt counted and marked in doubt
    by the claim itself), sends each through its channel, records outcomes by group commit."""

    kind = DELIVER

    def __init__(
        self,
        *,
        context: WorkContext,
        channels: Channels,
        handoffs: HandOffs,
        files: FileStore | None = None,
    ) -> None:
        self._files = files
        self._handoffs = handoffs
        self._store = context.store
        self._agents = context.agents
        self._channels = channels
        self._signals = context.signals
        self._metrics = context.metrics
        self._settings = context.settings
        self._worker_id = context.worker_id
        self._outcomes: GroupCommit[_Outcome, bool] = GroupCommit(
            name="deliveries",
            write=self._record_batch,
            max_batch=MAX_BATCH,
            sizes=context.metrics.batch_size,
            durations=context.metrics.batch_seconds,
        )

    async def stop(self) -> None:
        await self._outcomes.stop()

    async def claim(self, limit: int) -> list[_Attempt]:
        async with self._store.sessions() as db, db.begin():
            claimed = await claim(
                db,
                DELIVER,
                worker_id=self._worker_id,
                limit=limit,
                ttl_seconds=self._settings.claim_ttl_seconds,
                load=_load,
            )
        attempts = []
        for item in claimed:
            row = item.row
            reply = Reply(
                message_id=int(row.id),
                session_id=row.session_id,
                delivery_key=row.delivery_key or "",
                agent_slug=self._agents.slug_of(row.agent_id),
                channel=row.channel,
                external_conv_id=row.external_conv_id,
                text=row.content,
                reply_target=dict(row.reply_target or {}),
                in_doubt=item.was_in_doubt,
                attempt=row.attempts,
                live_ids=tuple(row.live_message_ids or ()),
                outcome=_outcome(row.asked_state),
            )
            attempts.append(
                _Attempt(reply=reply, asked_at=row.asked_at, has_files=bool(row.attachments))
            )
        return attempts

    async def run(self, attempt: _Attempt) -> None:
        reply = attempt.reply
        targets = self._handoffs.targets(reply)
        if targets:
            mentions = {t.slug: t.mention_id for t in targets if t.mention_id is not None}
            reply = dataclasses.replace(reply, mentions=mentions)
        channel = self._channels.get(reply.channel, reply.agent_slug)
        if channel is None:
            error = DeliveryError(
                f"channel {reply.channel!r} is not running for agent {reply.agent_slug!r}",
                permanent=True,
            )
            await self._failed_attempt(reply, error)
            return
        try:
            if attempt.has_files:  # only then a query on its files
                reply = await self._with_files(reply)
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

    async def _with_files(self, reply: Reply) -> Reply:
        """The reply with its stored files and an upload recorder, for a channel that sends
        files; else (unless its replies live in the database, where the page shows their
        rows) the files listed in its text. What is not uploaded is listed."""
        capabilities = self._channels.capabilities(reply.channel)
        if capabilities.stores_replies:
            return reply
        async with self._store.sessions() as db:
            files, listed = await load_reply_files(db, self._files, reply.message_id)
        shown: list[OutgoingFile | ListedFile] = list(listed)
        if not capabilities.sends_files:
            shown = [*files, *listed]
            files = ()
        text = "\n".join(part for part in (reply.text, file_lines(shown)) if part)
        if not files:
            return dataclasses.replace(reply, text=text)
        recorder = upload_recorder(self._store.sessions, reply.message_id)
        return dataclasses.replace(reply, text=text, files=files, record_upload=recorder)

    async def _record_batch(self, batch: Sequence[_Outcome]) -> list[bool]:
        async with self._store.write() as writes:
            held = await finish_claimed(
                writes.db,
                DELIVER,
                worker_id=self._worker_id,
                finishes=[
                    (
                        outcome.reply.message_id,
                        {
                            "claimed_by": None,
                            "claim_expires_at": None,
                            "updated_at": writes.now,
                            **outcome.values,
                        },
                    )
                    for outcome in batch
                ],
            )
            for outcome in batch:
                if outcome.reply.message_id in held:
                    writes.changed(
                        "message.updated", outcome.reply.session_id, outcome.reply.message_id
                    )
        return [outcome.reply.message_id in held for outcome in batch]

    async def _finish(self, reply: Reply, **values: object) -> bool:
        recorded = await self._outcomes.submit(_Outcome(reply=reply, values=values))
        if not recorded:
            _log_reply("delivery.claim_lost", reply, level=logging.WARNING)
        return recorded

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
