"""Step 3 of the flow: answer claimed user messages and store the replies, in batches.

One statement claims a batch (one message per session, the oldest) with everything answering
needs, one query loads the batch's history windows, the agents are asked concurrently, and
finished replies are stored by group commit: each reply is stored and its user message marked
answered in one transaction, and only while this worker still holds the claim, so a message is
answered once even when a claim expired and another process took it over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from bridge.a2a.asks import AgentAsks, AskContext, AskTools
from bridge.agents.base import (
    AgentBackend,
    AgentError,
    AgentRequest,
    HistoryMessage,
    UsageMeter,
)
from bridge.files.agent_files import AgentFiles, bare_attachments
from bridge.files.reply_files import store_kept
from bridge.flow.answer_job import (
    Job,
    Outcome,
    carries_files,
    failure_of,
    load_claimed,
    load_files,
    tokens_of,
)
from bridge.flow.batching import GroupCommit
from bridge.flow.claims import (
    ANSWER,
    DELIVER,
    claim,
    claimed_parameters,
    finish_claimed,
    update_if_claimed,
)
from bridge.flow.history import Window, load_histories
from bridge.flow.live import LiveReplies, draft_of
from bridge.flow.outgoing import Outgoing, new_delivery_key, store_outgoing
from bridge.flow.workers import WorkContext
from bridge.infra.logs import log_event
from bridge.infra.redact import failure
from bridge.memory.recall import Memory
from bridge.ports.errors import UnknownAgent
from bridge.ports.events import Sender, storable_text
from bridge.store.directory import AgentRecord
from bridge.store.models import MESSAGES, MessageState, utcnow
from bridge.store.sessions import reset_context

logger = logging.getLogger(__name__)
RESET_COMMAND = "/reset"
MAX_BATCH = 256
"""Replies stored in one transaction at most."""


class Answerer:
    """The answer step: claims pending user messages in batches (with their history), asks
    each agent concurrently and stores finished replies by group commit."""

    kind = ANSWER

    def __init__(
        self,
        *,
        context: WorkContext,
        backends: Mapping[str, AgentBackend],
        asks: AgentAsks,
        ask_wait_seconds: float,
        live: LiveReplies,
        files: AgentFiles | None = None,
    ) -> None:
        self._files = files
        self._asks = asks
        self._live = live
        self._ask_wait_seconds = ask_wait_seconds
        self._store = context.store
        self._agents = context.agents
        self._backends = backends
        self._metrics = context.metrics
        self._settings = context.settings
        self._worker_id = context.worker_id
        self._memory = Memory(
            sessions=context.store.sessions, backends=backends, metrics=context.metrics
        )
        self._replies: GroupCommit[tuple[Job, Outcome], int | None] = GroupCommit(
            name="replies",
            write=self._store_batch,
            max_batch=MAX_BATCH,
            sizes=context.metrics.batch_size,
            durations=context.metrics.batch_seconds,
        )

    async def stop(self) -> None:
        await self._replies.stop()

    async def claim(self, limit: int) -> list[Job]:
        """Claim up to ``limit`` pending messages (one per session) and load their histories
        in one query; a message whose agent left the config is abandoned."""
        async with self._store.sessions() as db, db.begin():
            claimed = await claim(
                db,
                ANSWER,
                worker_id=self._worker_id,
                limit=limit,
                ttl_seconds=self._settings.claim_ttl_seconds,
                load=load_claimed,
            )
            rows: list[tuple[Any, AgentRecord]] = []
            unknown: list[tuple[int, str]] = []
            for item in claimed:
                try:
                    rows.append((item.row, self._agents.by_id(item.row.agent_id)))
                except UnknownAgent as error:  # the agent left the config after the message
                    unknown.append((item.row.id, str(error)))
            histories = await load_histories(
                db,
                [
                    Window(
                        message_id=row.id,
                        session_id=row.session_id,
                        from_message_id=row.context_from_message_id,
                        max_messages=agent.settings.history_messages,
                        max_chars=agent.settings.history_chars,
                    )
                    for row, agent in rows
                ],
            )
            files = await load_files(db, [row.id for row, _ in rows if carries_files(row)])
        for message_id, reason in unknown:
            await self._abandon(message_id, failure("the agent is no longer configured", reason))
        return [
            self._job(row, agent, histories[row.id], files.get(row.id, ())) for row, agent in rows
        ]

    def _job(
        self,
        row: Any,
        agent: AgentRecord,
        history: tuple[HistoryMessage, ...],
        files: Sequence[Any],
    ) -> Job:
        message_id = int(row.id)
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
            attachments=(
                bare_attachments(files) if self._files is None else self._files.attachments(files)
            ),
            context_chars=agent.settings.history_chars,
        )
        return Job(
            message_id=message_id,
            agent=agent,
            request=request,
            channel=row.channel,
            reply_target=row.reply_target,
            attempts=row.attempts,
            chain_origin_id=origin,
            chain_hops=row.chain_hops,
            delivery_key=row.reply_key or new_delivery_key(),
            draft=draft_of(row, agent_slug=agent.settings.slug),
            asked_at=row.created_at.timestamp(),
        )

    async def run(self, job: Job) -> None:
        if job.request.text.strip().lower() == RESET_COMMAND:
            outcome = Outcome(
                text=self._settings.reset_text,
                role="system",
                state=MessageState.ANSWERED,
                reset=True,
            )
        else:
            if self._files is not None:  # platform files fetched first (none pending: no query)
                ready = await self._files.ready(job.request, agent_id=job.agent.id)
                job = replace(job, request=ready)
            if job.agent.settings.memory.summarize:
                job = await self._recall(job)
            outcome = await self._ask_agent(job)
        reply_id = await self._replies.submit((job, outcome))
        if reply_id is None:
            log_event(
                logger,
                "answer.claim_lost",
                level=logging.WARNING,
                session=job.request.session_id,
                message=job.message_id,
            )
            return
        if outcome.state == MessageState.ANSWERED:
            self._metrics.answered.labels(job.channel).inc()
        log_event(
            logger,
            "message.answered",
            channel=job.channel,
            agent=job.agent.settings.slug,
            session=job.request.session_id,
            message=job.message_id,
            reply=reply_id,
            outcome=outcome.state,
        )

    async def _recall(self, job: Job) -> Job:
        """The job with the session's summary, folded up to its window first (long memory;
        outside the claim's transaction, and never failing the answer)."""
        summary = await self._memory.recall(job.agent.settings, job.request)
        return replace(job, request=replace(job.request, summary=summary))

    async def _ask_agent(self, job: Job) -> Outcome:
        backend = self._backends[job.agent.settings.slug]
        live = self._live.start(job.draft, asked_at=job.asked_at) if job.draft else None
        try:
            async with asyncio.timeout(job.agent.settings.answer_timeout_seconds):
                chunks: list[str] = []
                async for chunk in backend.answer(job.request):
                    chunks.append(chunk)
                    if live is not None:
                        live.add(chunk)
                text = "".join(chunks)
            if not text.strip():
                raise AgentError(
                    "the agent returned an empty reply", reason="the agent gave an empty answer"
                )
        except Exception as error:
            reason, detail = failure_of(error, job)
            log_event(
                logger,
                "agent.failed",
                level=logging.WARNING,
                agent=job.agent.settings.slug,
                session=job.request.session_id,
                message=job.message_id,
                error=reason,
                detail=detail,
            )
            self._metrics.failed.labels(job.channel, "agent").inc()
            return Outcome(
                text=self._settings.apology_text,
                role="system",
                state=MessageState.FAILED,
                error=failure(reason, detail),
                usage=self._spent(job),
            )
        finally:
            if live is not None:
                await live.close()
        return Outcome(
            text=storable_text(text),
            role="assistant",
            state=MessageState.ANSWERED,
            usage=self._spent(job),
            files=await store_kept(  # contents first: no row ever names a missing object
                None if self._files is None else self._files.store,
                agent_id=job.agent.id,
                files=job.request.answer_files,
            ),
        )

    def _spent(self, job: Job) -> UsageMeter | None:
        """The answer's reported usage (also when it failed: the tokens were spent)."""
        usage = job.request.usage
        if not usage.reported:
            return None
        slug = job.agent.settings.slug
        self._metrics.tokens.labels(slug, "input").inc(usage.input_tokens)
        self._metrics.tokens.labels(slug, "output").inc(usage.output_tokens)
        return usage

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
        async with self._store.write() as writes:
            abandoned = await writes.db.execute(
                update_if_claimed(ANSWER, tuple(values)).returning(MESSAGES.c.session_id),
                claimed_parameters(message_id, self._worker_id, values),
            )
            session_id = abandoned.scalar_one_or_none()
            if session_id is not None:
                writes.changed("message.updated", session_id, message_id)
        log_event(logger, "answer.abandoned", level=logging.ERROR, message=message_id, error=error)

    async def _store_batch(self, batch: Sequence[tuple[Job, Outcome]]) -> list[int | None]:
        """Mark the user messages answered and store their replies *to deliver*, in one
        transaction, for the claims this worker still holds; the reply id of each (None:
        the claim was lost, nothing stored for it)."""
        async with self._store.write() as writes:
            held = await finish_claimed(
                writes.db,
                ANSWER,
                worker_id=self._worker_id,
                finishes=[
                    (
                        job.message_id,
                        {
                            "state": outcome.state,
                            "last_error": outcome.error,
                            "claimed_by": None,
                            "claim_expires_at": None,
                            "attempts": job.attempts + 1,
                            "updated_at": writes.now,
                            **tokens_of(outcome.usage),
                        },
                    )
                    for job, outcome in batch
                ],
            )
            finished = [(job, outcome) for job, outcome in batch if job.message_id in held]
            for job, outcome in finished:
                if outcome.reset:
                    await reset_context(
                        writes.db,
                        session_id=job.request.session_id,
                        from_message_id=job.message_id + 1,
                    )
                writes.changed("message.updated", job.request.session_id, job.message_id)
            reply_ids = await store_outgoing(
                writes,
                [
                    Outgoing(
                        session_id=job.request.session_id,
                        sender_participant_id=job.agent.participant_id,
                        role=outcome.role,
                        content=outcome.text,
                        channel=job.channel,
                        reply_target=job.reply_target,
                        delivery_key=job.delivery_key,
                        reply_to_message_id=job.message_id,
                        chain_origin_id=job.chain_origin_id,
                        chain_hops=job.chain_hops,
                        attachments=outcome.files,
                        agent_id=job.agent.id,
                    )
                    for job, outcome in finished
                ],
            )
            if finished:
                writes.wake(DELIVER.name)
        replies = {
            job.message_id: reply for (job, _), reply in zip(finished, reply_ids, strict=True)
        }
        return [replies.get(job.message_id) for job, _ in batch]
