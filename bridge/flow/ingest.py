"""Step 2 of the flow: store inbound messages durably, by group commit.

Concurrent inbound messages of a process share one transaction (:mod:`bridge.flow.batching`):
participants, sessions, members and messages are each one multi-row ``INSERT ... ON CONFLICT``
for the whole batch, and each caller gets its own result. The unique key on ``(session_id,
external_message_id)`` turns a redelivered or double-subscribed event into a no-op, in one batch
or across processes. A channel acknowledges the platform only after this returns, that is after
its batch committed, so an acknowledged message is never lost.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from sqlalchemy import bindparam, select, tuple_

from bridge.a2a.chains import ChainStopped, Hop, check_budget
from bridge.flow.batching import GroupCommit
from bridge.flow.claims import ANSWER
from bridge.infra.logs import log_event
from bridge.infra.metrics import Metrics
from bridge.ports.contract import Capabilities
from bridge.ports.errors import InvalidMessage
from bridge.ports.events import MAX_ID_LENGTH, InboundMessage, IngestResult, storable_text
from bridge.settings import A2ASettings
from bridge.store.directory import AgentDirectory, AgentRecord
from bridge.store.messages import MessageStore, Writes, message_row
from bridge.store.models import SESSIONS, MessageState
from bridge.store.sessions import (
    Activity,
    NewSession,
    ParticipantKey,
    SessionKey,
    SessionRef,
    add_members,
    find_or_create_participants,
    find_or_create_sessions,
    idle_expired,
    record_activities,
)

logger = logging.getLogger(__name__)

MAX_BATCH = 256
"""Messages written in one ingest transaction at most."""


def _validate(message: InboundMessage) -> None:
    for name in ("channel", "agent_slug", "external_conv_id"):
        if not getattr(message, name):
            raise InvalidMessage(f"{name} is empty")
    if not message.sender.external_id:
        raise InvalidMessage("sender.external_id is empty")
    for name, value in (
        ("external_conv_id", message.external_conv_id),
        ("parent_conv_id", message.parent_conv_id or ""),
        ("external_message_id", message.external_message_id),
        ("sender.external_id", message.sender.external_id),
    ):
        if len(value) > MAX_ID_LENGTH:
            raise InvalidMessage(f"{name} is longer than {MAX_ID_LENGTH} characters")
    if not message.text.strip() and not message.attachments:
        raise InvalidMessage("the message has neither text nor attachments")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Inbound:
    """A validated message with the agents it involves (``from_agent``: a chain's sender)."""

    message: InboundMessage
    agent: AgentRecord
    from_agent: AgentRecord | None

    @property
    def session_key(self) -> SessionKey:
        return (self.agent.id, self.message.external_conv_id)

    @property
    def sender_key(self) -> ParticipantKey:
        sender = self.message.sender
        return (sender.kind, self.message.channel, sender.external_id)


IGNORED = IngestResult(session_id=0, message_id=0, duplicate=False, ignored=True)


class Ingestor:
    def __init__(
        self,
        *,
        store: MessageStore,
        agents: AgentDirectory,
        metrics: Metrics,
        budget: A2ASettings,
        capabilities: Callable[[str], Capabilities],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._store = store
        self._capabilities = capabilities
        self._budget = budget
        self._agents = agents
        self._metrics = metrics
        self._batches: GroupCommit[_Inbound, IngestResult] = GroupCommit(
            name="ingest",
            write=self._write_batch,
            max_batch=max_batch,
            sizes=metrics.batch_size,
            durations=metrics.batch_seconds,
        )

    async def __call__(self, message: InboundMessage) -> IngestResult:
        """Store ``message``; returns once it is durable (or known to be a duplicate).
        Raises InvalidMessage, UnknownAgent or ChainStopped; nothing is stored then."""
        _validate(message)
        agent = self._agents.get(message.agent_slug)
        chain = message.chain
        item = _Inbound(
            message=message,
            agent=agent,
            from_agent=None if chain is None else self._agents.get(chain.from_agent),
        )
        if chain is None:
            return await self._batches.submit(item)
        # A hop is checked against what its chain stored so far: written alone.
        [result] = await self._write_batch([item])
        if isinstance(result, BaseException):
            raise result
        return result

    async def stop(self) -> None:
        await self._batches.stop()

    async def _write_batch(self, items: Sequence[_Inbound]) -> list[IngestResult | BaseException]:
        results: list[IngestResult | BaseException] = [IGNORED] * len(items)
        async with self._store.write() as writes:
            engaged = await _engaged(writes, items)
            stored = []
            for index, item in enumerate(items):
                if item.message.only_if_engaged and item.session_key not in engaged:
                    continue
                stored.append(index)
                engaged.add(item.session_key)  # created or revived by this message
            batch = [items[index] for index in stored]
            senders = await _senders(writes, batch)
            sessions = await self._sessions(writes, batch, senders)
            for item in batch:
                if item.from_agent is not None:
                    await self._check_chain(writes, item, sessions[item.session_key])
            await add_members(
                writes.db,
                (
                    (sessions[item.session_key].id, senders[index])
                    for index, item in enumerate(batch)
                ),
            )
            for index, result in zip(
                stored, await _insert(writes, batch, senders, sessions), strict=True
            ):
                results[index] = result
        try:
            self._report(items, results)
        except Exception:  # committed: a failed log line must not make the batch be retried
            logger.exception("ingest: reporting a committed batch failed")
        return results

    async def _sessions(
        self, writes: Writes, batch: Sequence[_Inbound], senders: Sequence[int]
    ) -> dict[SessionKey, SessionRef]:
        """Every session of the batch (and the parents of threads), created where missing;
        a session takes its descriptive columns from its first message in the batch."""
        parents: dict[SessionKey, NewSession] = {}
        for item in batch:
            message = item.message
            if message.parent_conv_id:
                parents.setdefault(
                    (item.agent.id, message.parent_conv_id),
                    NewSession(
                        source_channel=message.channel,
                        is_group=message.is_group,
                        group_name=message.group_name,
                    ),
                )
        parent_refs = await find_or_create_sessions(writes.db, parents) if parents else {}
        wanted: dict[SessionKey, NewSession] = {}
        for index, item in enumerate(batch):
            message = item.message
            # A direct ask is a session with the asking agent as its peer.
            peer = item.from_agent if self._capabilities(message.channel).peer_sessions else None
            parent = (
                parent_refs[(item.agent.id, message.parent_conv_id)]
                if message.parent_conv_id
                else None
            )
            wanted.setdefault(
                item.session_key,
                NewSession(
                    source_channel=message.channel,
                    is_group=message.is_group,
                    group_name=message.group_name,
                    title=message.title,
                    participant_id=None if message.is_group else senders[index],
                    peer_agent_id=peer.id if peer is not None else None,
                    parent_session_id=parent.id if parent is not None else None,
                ),
            )
        return await find_or_create_sessions(writes.db, wanted) if wanted else {}

    def _report(
        self, items: Sequence[_Inbound], results: Sequence[IngestResult | BaseException]
    ) -> None:
        for item, result in zip(items, results, strict=True):
            message = item.message
            if isinstance(result, BaseException):
                continue
            if result.ignored:
                log_event(
                    logger,
                    "message.not_for_agent",
                    channel=message.channel,
                    agent=message.agent_slug,
                    conversation=message.external_conv_id,
                )
            elif result.duplicate:
                self._metrics.duplicates.labels(message.channel).inc()
                log_event(
                    logger,
                    "message.duplicate",
                    channel=message.channel,
                    session=result.session_id,
                    message=result.message_id,
                    external_id=message.external_message_id,
                )
            else:
                self._metrics.ingested.labels(message.channel).inc()
                if message.chain is not None:
                    self._metrics.a2a_messages.labels(message.channel).inc()
                log_event(
                    logger,
                    "message.ingested",
                    channel=message.channel,
                    agent=message.agent_slug,
                    session=result.session_id,
                    message=result.message_id,
                    conversation=message.external_conv_id,
                    from_agent=message.chain.from_agent if message.chain else None,
                    hops=message.chain.hops if message.chain else None,
                )

    async def _check_chain(self, writes: Writes, item: _Inbound, session: SessionRef) -> None:
        """Raise ChainStopped (counted and logged) when the budgets forbid this hop; a hop
        already stored (a repeated hand-off) is let through, to be found a duplicate."""
        message, sender = item.message, item.from_agent
        assert message.chain is not None and sender is not None
        key = (session.id, message.external_message_id)
        if await writes.existing_messages([key]):
            return
        hop = Hop(
            sender=sender,
            target=item.agent,
            origin_message_id=message.chain.origin_message_id,
            hops=message.chain.hops,
            text=storable_text(message.text),
        )
        try:
            await check_budget(writes.db, hop, self._budget)
        except ChainStopped as stopped:
            self._metrics.a2a_stopped.labels(stopped.reason).inc()
            log_event(
                logger,
                "chain.stopped",
                level=logging.WARNING,
                channel=message.channel,
                from_agent=sender.settings.slug,
                agent=item.agent.settings.slug,
                conversation=message.external_conv_id,
                hops=message.chain.hops,
                reason=stopped.reason,
            )
            raise


async def _engaged(writes: Writes, items: Sequence[_Inbound]) -> set[SessionKey]:
    """Of the conversations that ``only_if_engaged`` messages need, those the agent is in."""
    wanted = {item.session_key for item in items if item.message.only_if_engaged}
    if not wanted:
        return set()
    s = SESSIONS.c
    found = await writes.db.execute(
        select(s.agent_id, s.external_conv_id).where(
            tuple_(s.agent_id, s.external_conv_id).in_(bindparam("keys", expanding=True)),
            s.deleted_at.is_(None),
        ),
        {"keys": sorted(wanted)},
    )
    return {(row.agent_id, row.external_conv_id) for row in found}


async def _senders(writes: Writes, batch: Sequence[_Inbound]) -> list[int]:
    """Each message's sender participant: the asking agent's own for a chain, else found or
    created from the sender the channel saw (its latest display name in the batch wins)."""
    wanted: dict[ParticipantKey, str | None] = {}
    for item in batch:
        if item.from_agent is None:
            name = item.message.sender.display_name
            if name or item.sender_key not in wanted:
                wanted[item.sender_key] = name
    found = await find_or_create_participants(writes.db, wanted) if wanted else {}
    return [
        item.from_agent.participant_id if item.from_agent is not None else found[item.sender_key]
        for item in batch
    ]


async def _insert(
    writes: Writes,
    batch: Sequence[_Inbound],
    senders: Sequence[int],
    sessions: dict[SessionKey, SessionRef],
) -> list[IngestResult]:
    """The messages as *pending*, in one statement; a message already stored (or repeated
    within the batch) is a duplicate with the stored id. Counts them on their sessions,
    starting an idle session's context afresh at its first new message."""
    rows = []
    for index, item in enumerate(batch):
        message, chain = item.message, item.message.chain
        rows.append(
            message_row(
                session_id=sessions[item.session_key].id,
                sender_participant_id=senders[index],
                role="user",
                content=storable_text(message.text),
                channel=message.channel,
                reply_target=dict(message.reply_target),
                state=MessageState.PENDING,
                now=writes.now,
                external_message_id=message.external_message_id or None,
                attachments=[asdict(a) for a in message.attachments],
                chain_origin_id=chain.origin_message_id if chain else None,
                chain_hops=chain.hops if chain else 0,
            )
        )
    ids = await writes.insert_messages(rows)
    duplicates = [
        (row["session_id"], row["external_message_id"])
        for row, message_id in zip(rows, ids, strict=True)
        if message_id is None
    ]
    existing = await writes.existing_messages(duplicates)
    activities: dict[int, Activity] = {}
    results = []
    for item, row, message_id in zip(batch, rows, ids, strict=True):
        session_id = row["session_id"]
        if message_id is None:
            stored = existing[(session_id, row["external_message_id"])]
            results.append(IngestResult(session_id=session_id, message_id=stored, duplicate=True))
            continue
        writes.changed("message.created", session_id, message_id)
        results.append(IngestResult(session_id=session_id, message_id=message_id, duplicate=False))
        earlier = activities.get(session_id)
        if earlier is None:
            ref = sessions[item.session_key]
            fresh = idle_expired(
                ref.last_message_at, item.agent.settings.idle_reset_hours, writes.now
            )
            activities[session_id] = Activity(
                session_id=session_id,
                added=1,
                inbound=True,
                group_name=item.message.group_name,
                context_from_message_id=message_id if fresh else None,
            )
        else:
            activities[session_id] = dataclasses.replace(
                earlier,
                added=earlier.added + 1,
                group_name=item.message.group_name or earlier.group_name,
            )
    if activities:
        writes.wake(ANSWER.name)
        await record_activities(writes.db, activities.values(), now=writes.now)
    return results
