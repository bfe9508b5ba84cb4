"""Direct asks: one agent sends another a message and waits for the answer.

Both ways in go through here: ``POST /api/v1/agents/{to}/messages`` and the ``ask_agent`` tool
an agent's backend may call while it answers. The ask is an ordinary inbound message of the
asked agent (source channel ``agent``, conversation ``agent:{from}[:{conversation}]``), so it
has the same storage, dedup, budgets and answering as any other; the answer is read back from
the database, which works across processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, func, select

from bridge.a2a.chains import ChainStopped, may_address
from bridge.agents.base import PeerAgent
from bridge.flow.ingest import Ingestor
from bridge.flow.outgoing import Outgoing, store_outgoing
from bridge.infra.logs import log_event
from bridge.ports.errors import InvalidMessage
from bridge.ports.events import AGENT_CHANNEL, ChainLink, InboundMessage, IngestResult, Sender
from bridge.store.directory import AgentDirectory, AgentRecord
from bridge.store.messages import MessageStore
from bridge.store.models import MESSAGES, MessageState

logger = logging.getLogger(__name__)
POLL_SECONDS = (0.02, 0.05, 0.1, 0.2, 0.25)
"""How often a waiting ask looks for its answer: quickly at first, then a few times a second."""


def agent_conversation(sender: str, conversation: str | None) -> str:
    """The asked agent's ``external_conv_id`` for asks from ``sender``."""
    return (
        f"{AGENT_CHANNEL}:{sender}"
        if not conversation
        else f"{AGENT_CHANNEL}:{sender}:{conversation}"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    message_id: int
    text: str
    answered: bool
    """False: the asked agent failed and the text is the bridge's apology."""


@cache
def _answer_query() -> Select[Any]:
    """The reply to one message (the position index: session, coalesce(reply_to, id))."""
    m = MESSAGES.c
    return (
        select(m.id, m.role, m.content)
        .where(
            m.session_id == bindparam("session_id"),
            func.coalesce(m.reply_to_message_id, m.id) == bindparam("message_id"),
            m.reply_to_message_id == bindparam("message_id"),
        )
        .order_by(m.id)
        .limit(1)
    )


class AgentAsks:
    def __init__(
        self,
        *,
        ingest: Ingestor,
        store: MessageStore,
        agents: AgentDirectory,
    ) -> None:
        self._ingest = ingest
        self._store = store
        self._agents = agents

    def peers_of(self, agent: AgentRecord) -> tuple[PeerAgent, ...]:
        """The peers ``agent`` may ask: a peer of another workspace only if it lists
        ``agent`` back (the model is not offered asks that would be refused)."""
        peers = (self._agents.get(slug) for slug in agent.settings.peers)
        return tuple(
            PeerAgent(slug=peer.settings.slug, name=peer.settings.name)
            for peer in peers
            if may_address(agent, peer)
        )

    async def send(
        self,
        *,
        sender: str,
        target: str,
        text: str,
        conversation: str | None,
        key: str,
        origin_message_id: int | None = None,
        hops: int = 1,
    ) -> IngestResult:
        """Store the ask. Raises UnknownAgent, ChainStopped (not a peer, over a budget) or
        InvalidMessage; nothing is stored then. The same ``key`` twice stores it once."""
        sender_record = self._agents.get(sender)
        return await self._ingest(
            InboundMessage(
                channel=AGENT_CHANNEL,
                agent_slug=target,
                external_conv_id=agent_conversation(sender, conversation),
                external_message_id=key,
                sender=Sender(
                    external_id=sender, display_name=sender_record.settings.name, kind="agent"
                ),
                text=text,
                title=f"{sender} → {target}" + (f" ({conversation})" if conversation else ""),
                chain=ChainLink(from_agent=sender, origin_message_id=origin_message_id, hops=hops),
            )
        )

    async def record(self, context: AskContext, key: str, lines: list[str]) -> None:
        """Keep the exchange in the asking session, for people to read; never sent anywhere
        and not part of the agent's history (its answer already says what it learned)."""
        async with self._store.write() as writes:
            await store_outgoing(
                writes,
                [
                    Outgoing(
                        session_id=context.session_id,
                        sender_participant_id=context.agent.participant_id,
                        role="system",
                        content=line,
                        channel=context.channel,
                        reply_target=context.reply_target,
                        state=MessageState.RECORDED,
                        chain_origin_id=context.chain_origin_id,
                        chain_hops=context.chain_hops + 1,
                        external_message_id=f"{key}:record:{index}",
                    )
                    for index, line in enumerate(lines)
                ],
            )

    async def answer(self, asked: IngestResult, *, within: float) -> Answer | None:
        """The stored answer to ``asked``, waiting up to ``within`` seconds; None if none yet."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        attempt = 0
        while True:
            async with self._store.sessions() as db:
                row = (
                    await db.execute(
                        _answer_query(),
                        {"session_id": asked.session_id, "message_id": asked.message_id},
                    )
                ).one_or_none()
            if row is not None:
                return Answer(message_id=row.id, text=row.content, answered=row.role == "assistant")
            left = deadline - loop.time()
            if left <= 0:
                return None
            await asyncio.sleep(min(left, POLL_SECONDS[min(attempt, len(POLL_SECONDS) - 1)]))
            attempt += 1


@dataclass(frozen=True, slots=True, kw_only=True)
class AskContext:
    """The message an agent is answering when it asks a peer: the exchange is recorded in its
    session, and the ask continues that message's chain."""

    agent: AgentRecord
    session_id: int
    message_id: int
    channel: str
    reply_target: dict[str, str]
    chain_origin_id: int
    chain_hops: int


class AskTools:
    """The ``AgentTools`` an answering agent gets: ``ask`` a peer through :class:`AgentAsks`."""

    def __init__(self, *, asks: AgentAsks, context: AskContext, wait_seconds: float) -> None:
        self._asks = asks
        self._context = context
        self._wait_seconds = wait_seconds
        self._peers = asks.peers_of(context.agent)

    @property
    def peers(self) -> tuple[PeerAgent, ...]:
        return self._peers

    async def ask(self, *, agent: str, text: str) -> str:
        context = self._context
        me = context.agent.settings.slug
        digest = hashlib.sha256(f"{agent}\n{text}".encode()).hexdigest()[:16]
        key = f"tool:{context.message_id}:{digest}"
        try:
            asked = await self._asks.send(
                sender=me,
                target=agent,
                text=text,
                conversation=f"session-{context.session_id}",
                key=key,
                origin_message_id=context.chain_origin_id,
                hops=context.chain_hops + 1,
            )
        except (ChainStopped, InvalidMessage, LookupError) as error:
            await self._asks.record(context, key, [f"Did not ask {agent}: {error}"])
            return f"not asked: {error}"
        answer = await self._asks.answer(asked, within=self._wait_seconds)
        if answer is None:
            note = f"{agent} did not answer within {self._wait_seconds:g} s"
            await self._asks.record(context, key, [f"Asked {agent}: {text}", note])
            return note
        await self._asks.record(
            context, key, [f"Asked {agent}: {text}", f"{agent} answered: {answer.text}"]
        )
        log_event(
            logger,
            "agent.asked",
            agent=me,
            peer=agent,
            session=context.session_id,
            message=context.message_id,
            ask=asked.message_id,
            answer=answer.message_id,
        )
        return answer.text if answer.answered else f"{agent} could not answer: {answer.text}"
