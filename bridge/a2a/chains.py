"""The loop budgets of agent-to-agent chains, checked in the transaction that would store the
next message, so no path lets two agents ping-pong forever.

A chain starts at a human message (or at a direct ask) and every message an agent sends another
agent is one hop further. The chain stops when the next hop would pass ``a2a.max_hops``, when
the two agents have already exchanged ``a2a.max_turns_per_hour`` messages in the last hour, or
when the same text comes back to an agent within the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any, Literal

from sqlalchemy import Select, and_, bindparam, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.settings import A2ASettings
from bridge.store.directory import AgentRecord
from bridge.store.models import MESSAGES, SESSIONS, UTCDateTime, utcnow

StopReason = Literal[
    "not_a_peer", "self", "max_hops", "max_turns_per_hour", "repeated_text", "refused"
]


class ChainStopped(Exception):
    """The message was not stored: the chain ends here. ``str()`` is the note people see."""

    def __init__(self, reason: StopReason, note: str) -> None:
        super().__init__(note)
        self.reason = reason


def mutual_peers(one: AgentRecord, other: AgentRecord) -> bool:
    """Each lists the other among its peers: what lets agents of two workspaces talk."""
    return other.settings.slug in one.settings.peers and one.settings.slug in other.settings.peers


def may_address(sender: AgentRecord, target: AgentRecord) -> bool:
    """``target`` is among ``sender``'s peers and, in another workspace, lists it back."""
    if target.settings.slug not in sender.settings.peers:
        return False
    return sender.workspace_id == target.workspace_id or mutual_peers(sender, target)


def refuse_address(sender: AgentRecord, target: AgentRecord) -> None:
    """An agent addresses only its configured peers, and never itself; an agent of another
    workspace only when both list each other, whoever asks (the operator too)."""
    if sender.id == target.id:
        raise ChainStopped("self", f"{sender.settings.slug} cannot address itself")
    if target.settings.slug in sender.settings.peers and not may_address(sender, target):
        raise ChainStopped(
            "not_a_peer",
            f"{target.settings.slug!r} is in another workspace and does not list"
            f" {sender.settings.slug!r} among its peers; agents of two workspaces talk only"
            " when each lists the other in [[agents]] peers = [...]",
        )
    if target.settings.slug not in sender.settings.peers:
        raise ChainStopped(
            "not_a_peer",
            f"{target.settings.slug!r} is not among the peers of {sender.settings.slug!r}"
            f" (peers: {', '.join(sender.settings.peers) or 'none'}); add it to"
            f" [[agents]] slug = {sender.settings.slug!r}, peers = [...]",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Hop:
    sender: AgentRecord
    target: AgentRecord
    origin_message_id: int | None
    hops: int
    text: str


@cache
def _pair_turns() -> Select[Any]:
    """Messages either agent of the pair sent the other since ``since`` (index on sender and
    creation time)."""
    m, s = MESSAGES.c, SESSIONS.c
    one_way = and_(
        m.sender_participant_id == bindparam("a_participant"), s.agent_id == bindparam("b")
    )
    other_way = and_(
        m.sender_participant_id == bindparam("b_participant"), s.agent_id == bindparam("a")
    )
    return (
        select(func.count())
        .select_from(MESSAGES.join(SESSIONS, s.id == m.session_id))
        .where(
            m.created_at >= bindparam("since", type_=UTCDateTime()),
            m.role == "user",
            or_(one_way, other_way),
        )
    )


@cache
def _repeated_text() -> Select[Any]:
    """Has this agent already been sent this very text in this chain?"""
    m, s = MESSAGES.c, SESSIONS.c
    return (
        select(m.id)
        .select_from(MESSAGES.join(SESSIONS, s.id == m.session_id))
        .where(
            or_(m.chain_origin_id == bindparam("origin"), m.id == bindparam("origin")),
            s.agent_id == bindparam("target"),
            m.role == "user",
            m.content == bindparam("text"),
        )
        .limit(1)
    )


async def check_budget(db: AsyncSession, hop: Hop, budget: A2ASettings) -> None:
    """Raise ChainStopped if ``hop`` may not be stored. Runs in the storing transaction; on
    PostgreSQL a transaction lock per agent pair makes concurrent hops count each other."""
    sender, target = hop.sender.settings.slug, hop.target.settings.slug
    refuse_address(hop.sender, hop.target)
    if hop.hops > budget.max_hops:
        raise ChainStopped(
            "max_hops",
            f"Stopped the conversation between agents here: {sender} → {target} would be hop"
            f" {hop.hops}, over the limit of {budget.max_hops}.",
        )
    if db.get_bind().dialect.name == "postgresql":
        low, high = sorted((hop.sender.id, hop.target.id))
        await db.execute(
            text("SELECT pg_advisory_xact_lock(:space, :pair)"),
            {"space": 0x0A2A, "pair": (low * 1_000_003 + high) % 2**31},
        )
    turns = (
        await db.execute(
            _pair_turns(),
            {
                "a_participant": hop.sender.participant_id,
                "b": hop.target.id,
                "b_participant": hop.target.participant_id,
                "a": hop.sender.id,
                "since": utcnow() - timedelta(hours=1),
            },
        )
    ).scalar_one()
    if turns >= budget.max_turns_per_hour:
        raise ChainStopped(
            "max_turns_per_hour",
            f"Stopped the conversation between agents here: {sender} and {target} have"
            f" exchanged {turns} messages in the last hour, the limit is"
            f" {budget.max_turns_per_hour}.",
        )
    if hop.origin_message_id is not None:
        repeated = await db.execute(
            _repeated_text(),
            {"origin": hop.origin_message_id, "target": hop.target.id, "text": hop.text},
        )
        if repeated.first() is not None:
            raise ChainStopped(
                "repeated_text",
                f"Stopped the conversation between agents here: {sender} sent {target} the"
                " same message again.",
            )
