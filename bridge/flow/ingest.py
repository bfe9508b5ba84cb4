"""Step 2 of the flow: store inbound messages durably, by group commit.

Concurrent inbound messages of a process share one transaction (:mod:`bridge.flow.batching`):
participants, sessions, members and messages are each one multi-row ``INSERT ... ON CONFLICT``
for the whole batch, and each caller gets its own result. The unique key on ``(session_id,
external_message_id)`` turns a redelivered or double-subscribed event into a no-op, in one batch
or across processes. A channel acknowledges the platform only after this returns, that is after
its batch committed, so an acknowledged message is never lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from bridge.a2a.chains import ChainStopped, Hop, check_budget
from bridge.access.gate import AccessGate
from bridge.access.limits import LimitCheck, check_limits, lock_counted
from bridge.files.rows import check_attachments
from bridge.flow.batching import GroupCommit
from bridge.flow.ingest_rows import Inbound, engaged_sessions, insert_messages, senders_of
from bridge.infra.logs import log_event
from bridge.infra.metrics import Metrics
from bridge.ports.contract import Capabilities
from bridge.ports.errors import InvalidMessage
from bridge.ports.events import MAX_ID_LENGTH, InboundMessage, IngestResult, storable_text
from bridge.settings import A2ASettings
from bridge.store.directory import AgentDirectory
from bridge.store.messages import MessageStore, Writes
from bridge.store.sessions import (
    NewSession,
    SessionKey,
    SessionRef,
    add_members,
    find_or_create_sessions,
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
    check_attachments(message.attachments)


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
        notify: Callable[[InboundMessage, str], None] | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._store = store
        self._gate = AccessGate(metrics=metrics)
        self._notify = notify
        self._capabilities = capabilities
        self._budget = budget
        self._agents = agents
        self._metrics = metrics
        self._batches: GroupCommit[Inbound, IngestResult] = GroupCommit(
            name="ingest",
            write=self._write_batch,
            max_batch=max_batch,
            sizes=metrics.batch_size,
            durations=metrics.batch_seconds,
        )

    async def __call__(self, message: InboundMessage) -> IngestResult:
        """Store ``message``; returns once it is durable (or known to be a duplicate).
        Raises InvalidMessage, UnknownAgent or ChainStopped; nothing is stored then. A message
        the agent's access settings refuse is not stored either (``refused`` says why)."""
        _validate(message)
        agent = self._agents.get(message.agent_slug)
        chain = message.chain
        item = Inbound(
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

    async def _write_batch(self, items: Sequence[Inbound]) -> list[IngestResult | BaseException]:
        results: list[IngestResult | BaseException] = [IGNORED] * len(items)
        async with self._store.write() as writes:
            engaged = await engaged_sessions(writes, items)
            # A thread follow-up the agent is not in is ignored, not refused (nor counted).
            reachable = engaged | {
                item.session_key for item in items if not item.message.only_if_engaged
            }
            gated = [
                index
                for index, item in enumerate(items)
                if not item.message.only_if_engaged or item.session_key in reachable
            ]
            checked = dict(
                zip(gated, await self._gate.check(writes, [items[i] for i in gated]), strict=True)
            )
            stored = []
            for index, item in enumerate(items):
                if (refused := checked.get(index)) is not None:
                    results[index] = refused
                    continue
                if item.message.only_if_engaged and item.session_key not in engaged:
                    continue
                stored.append(index)
                engaged.add(item.session_key)  # created or revived by this message
            batch = [items[index] for index in stored]
            senders = await senders_of(writes, batch)
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
            limited = await check_limits(
                writes.db, await _limit_checks(writes, batch, senders, sessions), now=writes.now
            )
            for index, result in zip(
                stored,
                await insert_messages(writes, batch, senders, sessions, limited),
                strict=True,
            ):
                results[index] = result
        for item, outcome in zip(items, results, strict=True):
            if isinstance(outcome, IngestResult) and outcome.notice and self._notify is not None:
                self._notify(item.message, outcome.notice)
        try:
            self._report(items, results)
        except Exception:  # committed: a failed log line must not make the batch be retried
            logger.exception("ingest: reporting a committed batch failed")
        return results

    async def _sessions(
        self, writes: Writes, batch: Sequence[Inbound], senders: Sequence[int]
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
        self, items: Sequence[Inbound], results: Sequence[IngestResult | BaseException]
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
            elif result.refused is not None:
                continue  # logged and counted by the access gate
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
                if result.limited is not None:
                    self._metrics.limited.labels(message.agent_slug, result.limited).inc()
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

    async def _check_chain(self, writes: Writes, item: Inbound, session: SessionRef) -> None:
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


async def _limit_checks(
    writes: Writes,
    batch: Sequence[Inbound],
    senders: Sequence[int],
    sessions: dict[SessionKey, SessionRef],
) -> list[LimitCheck | None]:
    """What each message of the batch is checked against: nothing for an agent's message, for
    an agent without limits, or for a message already stored (or repeated in the batch), which
    will turn out a duplicate and must not count."""
    checks: list[LimitCheck | None] = []
    for index, item in enumerate(batch):
        limits = item.agent.settings.limits
        if item.from_agent is not None or not limits.any:
            checks.append(None)
            continue
        checks.append(
            LimitCheck(
                agent_id=item.agent.id,
                participant_id=senders[index],
                session_id=sessions[item.session_key].id,
                limits=limits,
            )
        )
    await lock_counted(writes.db, checks)
    keys = [
        (check.session_id, item.message.external_message_id)
        for check, item in zip(checks, batch, strict=True)
        if check is not None and item.message.external_message_id
    ]
    if not keys:
        return checks
    seen = set(await writes.existing_messages(keys))
    for index, (check, item) in enumerate(zip(checks, batch, strict=True)):
        key = (check.session_id, item.message.external_message_id) if check else None
        if key is None or not key[1]:
            continue
        if key in seen:
            checks[index] = None
        seen.add(key)
    return checks
