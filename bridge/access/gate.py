"""The access check of the ingest step: which messages of a batch are refused, in the batch's
transaction, before anything of them is stored.

A refused message leaves no participant, session or message row: only its hour's count in
``refusals`` (for the usage API), a log line and a metric. The person learns at most
``denied_text`` (once a day, in a DM) or, under ``dm = "pairing"``, their one-time code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from bridge.a2a.chains import ChainStopped
from bridge.access.policy import agent_refusal, identity_of, needs_grants, refusal
from bridge.access.store import (
    RefusalCount,
    count_refusals,
    first_notice_today,
    granted,
    issue_code,
)
from bridge.infra.logs import log_event
from bridge.infra.metrics import Metrics
from bridge.ports.events import AGENT_CHANNEL, InboundMessage, IngestResult
from bridge.store.directory import AgentRecord
from bridge.store.messages import Writes

logger = logging.getLogger(__name__)

REFUSED_TEXT = "This agent does not take messages from you."
"""What a web caller is told when ``denied_text`` is empty (never why)."""


def pairing_text(code: str) -> str:
    return (
        f"Hi! I don't know you yet. To talk to me, ask my operator to approve this code: {code}"
        " (it expires in an hour)."
    )


class Candidate(Protocol):
    """A message of the batch with the agents it involves (``from_agent``: a chain's sender)."""

    @property
    def message(self) -> InboundMessage: ...

    @property
    def agent(self) -> AgentRecord: ...

    @property
    def from_agent(self) -> AgentRecord | None: ...


def _conversations(message: InboundMessage) -> tuple[str, str | None]:
    return (message.external_conv_id, message.parent_conv_id)


class AccessGate:
    def __init__(self, *, metrics: Metrics) -> None:
        self._metrics = metrics

    async def check(
        self, writes: Writes, batch: Sequence[Candidate]
    ) -> list[IngestResult | BaseException | None]:
        """For each message: None (let it through), a refused result, or the ChainStopped a
        refused hand-off raises."""
        results: list[IngestResult | BaseException | None] = [None] * len(batch)
        wanted = {
            (item.agent.id, identity_of(item.message.channel, item.message.sender.external_id))
            for item in batch
            if item.from_agent is None
            and needs_grants(item.agent.settings.access, is_group=item.message.is_group)
        }
        approved = await granted(writes.db, wanted)
        counts: list[RefusalCount] = []
        for index, item in enumerate(batch):
            access = item.agent.settings.access
            message = item.message
            if item.from_agent is not None:
                reason = agent_refusal(
                    access,
                    identity=identity_of(AGENT_CHANNEL, item.from_agent.settings.slug),
                    conversation_ids=None
                    if message.channel == AGENT_CHANNEL
                    else _conversations(message),
                )
                if reason is not None:
                    self._refused(
                        item, reason, identity_of(AGENT_CHANNEL, item.from_agent.settings.slug)
                    )
                    results[index] = ChainStopped(
                        "refused",
                        f"{item.agent.settings.slug} does not take messages from"
                        f" {item.from_agent.settings.slug} here",
                    )
                continue
            if access.is_open:
                continue
            identity = identity_of(message.channel, message.sender.external_id)
            reason = refusal(
                access,
                identity=identity,
                is_group=message.is_group,
                conversation_ids=_conversations(message),
                granted=(item.agent.id, identity) in approved,
            )
            if reason is None:
                continue
            notice: str | None = None
            if reason == "pairing":
                code = await issue_code(
                    writes.db, agent_id=item.agent.id, identity=identity, now=writes.now
                )
                notice = None if code is None else pairing_text(code)
            elif (
                access.denied_text
                and not message.is_group
                and await first_notice_today(
                    writes.db, agent_id=item.agent.id, identity=identity, now=writes.now
                )
            ):
                notice = access.denied_text
            counts.append(
                RefusalCount(
                    agent_id=item.agent.id,
                    identity=identity,
                    external_conv_id=message.external_conv_id,
                    reason=reason,
                )
            )
            self._refused(item, reason, identity)
            results[index] = IngestResult(
                session_id=0, message_id=0, duplicate=False, refused=reason, notice=notice
            )
        await count_refusals(writes.db, counts, now=writes.now)
        return results

    def _refused(self, item: Candidate, reason: str, identity: str) -> None:
        slug = item.agent.settings.slug
        self._metrics.refused.labels(slug, reason).inc()
        log_event(
            logger,
            "access.refused",
            channel=item.message.channel,
            agent=slug,
            conversation=item.message.external_conv_id,
            identity=identity,
            reason=reason,
        )
