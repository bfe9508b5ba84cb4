"""Step 3 of the flow: answer one claimed user message and store the reply.

The reply is stored and the user message marked answered in one transaction, and only if this
worker still holds the claim, so a message is answered once even when a claim expired and
another process took it over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, select

from bridge.agents import settings_secrets
from bridge.agents.base import NO_ANSWER, AgentBackend, AgentError, AgentRequest
from bridge.asks import AgentAsks, AskContext, AskTools
from bridge.claims import ANSWER, DELIVER, claimed_parameters, update_if_claimed
from bridge.db.models import MESSAGES, PARTICIPANTS, SESSIONS, MessageState, utcnow
from bridge.directory import AgentRecord, UnknownAgent
from bridge.events import Sender
from bridge.feed import FEED, record_changes
from bridge.history import load_history
from bridge.ingest import storable_text
from bridge.logs import log_event
from bridge.outgoing import Outgoing, new_delivery_key, store_outgoing
from bridge.redact import failure, redact
from bridge.sessions import reset_context
from bridge.wakeups import notify_in_transaction
from bridge.workers import WorkContext

logger = logging.getLogger(__name__)
RESET_COMMAND = "/reset"


@cache
def _load_statement() -> Select[Any]:
    """Built once: a claimed user message with its session and sender."""
    m, s, p = MESSAGES.c, SESSIONS.c, PARTICIPANTS.c
    return (
        select(
            m.content,
            m.channel,
            m.reply_target,
            m.session_id,
            m.attempts,
            m.chain_origin_id,
            m.chain_hops,
            s.agent_id,
            s.external_conv_id,
            s.is_group,
            s.group_name,
            s.context_from_message_id,
            p.external_id,
            p.display_name,
            p.kind,
        )
        .select_from(
            MESSAGES.join(SESSIONS, s.id == m.session_id).outerjoin(
                PARTICIPANTS, p.id == m.sender_participant_id
            )
        )
        .where(
            m.id == bindparam("message_id"),
            m.state == ANSWER.working,
            m.claimed_by == bindparam("worker"),
        )
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Job:
    agent: AgentRecord
    request: AgentRequest
    channel: str
    reply_target: dict[str, str]
    attempts: int
    chain_origin_id: int
    """The human message (or direct ask) that started this chain; the reply shares it."""
    chain_hops: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Outcome:
    text: str
    role: str
    state: str
    error: str | None = None
    reset: bool = False


def _failure_of(error: Exception, job: _Job) -> tuple[str, str]:
    """The short reason a user may see and the detail for admins and the log, redacted of
    every secret the agent's settings hold (backends already redact what they quote; this
    also covers exceptions they did not anticipate)."""
    if isinstance(error, AgentError):
        reason, detail = error.reason, str(error)
    elif isinstance(error, TimeoutError):
        reason = "the agent did not answer in time"
        detail = f"timed out after {job.agent.settings.answer_timeout_seconds:g} s"
    else:
        reason, detail = NO_ANSWER, f"{type(error).__name__}: {error}"
    return reason, redact(detail, settings_secrets(job.agent.settings))


class Answerer:
    def __init__(
        self,
        *,
        context: WorkContext,
        backends: Mapping[str, AgentBackend],
        asks: AgentAsks,
        ask_wait_seconds: float,
    ) -> None:
        self._asks = asks
        self._ask_wait_seconds = ask_wait_seconds
        self._sessions = context.sessions
        self._agents = context.agents
        self._backends = backends
        self._signals = context.signals
        self._metrics = context.metrics
        self._settings = context.settings
        self._worker_id = context.worker_id

    async def __call__(self, message_id: int) -> None:
        try:
            job = await self._load(message_id)
        except UnknownAgent as error:  # the agent left the config after the message came
            await self._abandon(
                message_id, failure("the agent is no longer configured", str(error))
            )
            return
        if job is None:
            return
        if job.request.text.strip().lower() == RESET_COMMAND:
            outcome = _Outcome(
                text=self._settings.reset_text,
                role="system",
                state=MessageState.ANSWERED,
                reset=True,
            )
        else:
            outcome = await self._ask_agent(job)
        await self._store(message_id, job, outcome)

    async def _ask_agent(self, job: _Job) -> _Outcome:
        backend = self._backends[job.agent.settings.slug]
        try:
            async with asyncio.timeout(job.agent.settings.answer_timeout_seconds):
                text = "".join([chunk async for chunk in backend.answer(job.request)])
            if not text.strip():
                raise AgentError(
                    "the agent returned an empty reply", reason="the agent gave an empty answer"
                )
        except Exception as error:
            reason, detail = _failure_of(error, job)
            log_event(
                logger,
                "agent.failed",
                level=logging.WARNING,
                agent=job.agent.settings.slug,
                session=job.request.session_id,
                message=job.request.message_id,
                error=reason,
                detail=detail,
            )
            self._metrics.failed.labels(job.channel, "agent").inc()
            return _Outcome(
                text=self._settings.apology_text,
                role="system",
                state=MessageState.FAILED,
                error=failure(reason, detail),
            )
        return _Outcome(text=storable_text(text), role="assistant", state=MessageState.ANSWERED)

    async def _load(self, message_id: int) -> _Job | None:
        async with self._sessions() as db:
            row = (
                await db.execute(
                    _load_statement(), {"message_id": message_id, "worker": self._worker_id}
                )
            ).one_or_none()
            if row is None:
                return None
            agent = self._agents.by_id(row.agent_id)
            history = await load_history(
                db,
                session_id=row.session_id,
                before_message_id=message_id,
                from_message_id=row.context_from_message_id,
                max_messages=agent.settings.history_messages,
                max_chars=agent.settings.history_chars,
            )
        origin = row.chain_origin_id or message_id  # a human message starts its own chain
        request = AgentRequest(
            agent_slug=agent.settings.slug,
            agent_name=agent.settings.name,
            system_prompt=agent.settings.system_prompt,
            session_id=row.session_id,
            external_conv_id=row.external_conv_id,
            channel=row.channel,
            is_group=row.is_group,
            group_name=row.group_name,
            sender=Sender(
                external_id=row.external_id or "",
                display_name=row.display_name,
                kind=row.kind or "user",
            ),
            message_id=message_id,
            text=row.content,
            history=history,
            tools=self._tools(agent, row, message_id, origin),
        )
        return _Job(
            agent=agent,
            request=request,
            channel=row.channel,
            reply_target=row.reply_target,
            attempts=row.attempts,
            chain_origin_id=origin,
            chain_hops=row.chain_hops,
        )

    def _tools(self, agent: AgentRecord, row: Any, message_id: int, origin: int) -> AskTools | None:
        """Agents with peers may ask them while answering (the ``ask_agent`` tool)."""
        if not agent.settings.peers:
            return None
        context = AskContext(
            agent=agent,
            session_id=row.session_id,
            message_id=message_id,
            channel=row.channel,
            reply_target=row.reply_target,
            chain_origin_id=origin,
            chain_hops=row.chain_hops,
        )
        return AskTools(asks=self._asks, context=context, wait_seconds=self._ask_wait_seconds)

    async def _abandon(self, message_id: int, error: str) -> None:
        values = {
            "state": MessageState.FAILED,
            "last_error": error,
            "claimed_by": None,
            "claim_expires_at": None,
            "updated_at": utcnow(),
        }
        async with self._sessions() as db, db.begin():
            abandoned = await db.execute(
                update_if_claimed(ANSWER, tuple(values)).returning(MESSAGES.c.session_id),
                claimed_parameters(message_id, self._worker_id, values),
            )
            session_id = abandoned.scalar_one_or_none()
            if session_id is not None:
                await record_changes(db, [("message.updated", session_id, message_id)])
        self._signals.wake(FEED)
        log_event(logger, "answer.abandoned", level=logging.ERROR, message=message_id, error=error)

    async def _store(self, message_id: int, job: _Job, outcome: _Outcome) -> None:
        now = utcnow()
        session_id = job.request.session_id
        async with self._sessions() as db, db.begin() as transaction:
            values = {
                "state": outcome.state,
                "last_error": outcome.error,
                "claimed_by": None,
                "claim_expires_at": None,
                "attempts": job.attempts + 1,
                "updated_at": now,
            }
            finished = await db.execute(
                update_if_claimed(ANSWER, tuple(values)),
                claimed_parameters(message_id, self._worker_id, values),
            )
            if finished.rowcount != 1:  # type: ignore[attr-defined]
                await transaction.rollback()
                log_event(
                    logger,
                    "answer.claim_lost",
                    level=logging.WARNING,
                    session=session_id,
                    message=message_id,
                )
                return
            if outcome.reset:
                await reset_context(db, session_id=session_id, from_message_id=message_id + 1)
            reply_id = await store_outgoing(
                db,
                Outgoing(
                    session_id=session_id,
                    sender_participant_id=job.agent.participant_id,
                    role=outcome.role,
                    content=outcome.text,
                    channel=job.channel,
                    reply_target=job.reply_target,
                    delivery_key=new_delivery_key(),
                    reply_to_message_id=message_id,
                    chain_origin_id=job.chain_origin_id,
                    chain_hops=job.chain_hops,
                ),
                now=now,
            )
            await record_changes(
                db,
                [
                    ("message.updated", session_id, message_id),
                    ("message.created", session_id, reply_id),
                ],
            )
            await notify_in_transaction(db, DELIVER.name)
        self._signals.wake(DELIVER.name)
        self._signals.wake(FEED)
        if outcome.state == MessageState.ANSWERED:
            self._metrics.answered.labels(job.channel).inc()
        log_event(
            logger,
            "message.answered",
            channel=job.channel,
            agent=job.agent.settings.slug,
            session=session_id,
            message=message_id,
            reply=reply_id,
            outcome=outcome.state,
        )
