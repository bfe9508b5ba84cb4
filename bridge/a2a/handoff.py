"""Hand-offs in a shared place: an agent's reply that mentions a peer (``@slug``) in a group
conversation where that peer is a bot too becomes a message to the peer.

The peer gets it through the bridge, never by waiting for the platform to deliver one bot's
message to another (most do not), and answers in the same thread under its own bot identity.
The hand-off is stored after the reply was posted (so the peer never answers ahead of it) and
before the reply is marked delivered, under a key derived from the reply: a delivery repeated
after a crash stores it once. A hand-off the loop budgets refuse leaves a short note in the
conversation instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, select

from bridge.a2a.chains import ChainStopped
from bridge.a2a.mentions import mentioned_slugs, strip_mention
from bridge.flow.claims import DELIVER
from bridge.flow.ingest import Ingestor
from bridge.flow.outgoing import Outgoing, new_delivery_key, store_outgoing
from bridge.infra.logs import log_event
from bridge.ports.contract import Channel, Channels
from bridge.ports.errors import InvalidMessage
from bridge.ports.events import ChainLink, InboundMessage, Reply, Sender
from bridge.store.directory import AgentDirectory
from bridge.store.messages import MessageStore
from bridge.store.models import MESSAGES, SESSIONS

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    slug: str
    mention_id: str | None
    """The peer's own id on the platform, for a native mention; None when not known."""


@cache
def _source_query() -> Select[Any]:
    """The reply's chain and its conversation, with the parent conversation of a thread."""
    m, s = MESSAGES.c, SESSIONS.c
    parent = SESSIONS.alias("parent")
    return (
        select(
            m.role,
            m.chain_origin_id,
            m.chain_hops,
            s.is_group,
            s.group_name,
            parent.c.external_conv_id.label("parent_conv_id"),
        )
        .select_from(
            MESSAGES.join(SESSIONS, s.id == m.session_id).outerjoin(
                parent, parent.c.id == s.parent_session_id
            )
        )
        .where(m.id == bindparam("message_id"))
    )


class HandOffs:
    def __init__(
        self,
        *,
        agents: AgentDirectory,
        channels: Channels,
        ingest: Ingestor,
        store: MessageStore,
    ) -> None:
        self._agents = agents
        self._channels = channels
        self._ingest = ingest
        self._store = store

    def targets(self, reply: Reply) -> list[Target]:
        """The peers the reply mentions that are on the same platform. Cheap when the text
        mentions nobody, which is nearly always."""
        if not self._channels.capabilities(reply.channel).shared_rooms or "@" not in reply.text:
            return []
        try:
            peers = self._agents.get(reply.agent_slug).settings.peers
        except LookupError:
            return []
        found: list[Target] = []
        for slug in mentioned_slugs(reply.text, peers):
            channel: Channel | None = self._channels.get(reply.channel, slug)
            if channel is None or slug == reply.agent_slug:
                continue
            found.append(Target(slug=slug, mention_id=channel.mention_id()))
        return found

    async def hand_off(self, reply: Reply, targets: list[Target]) -> None:
        """Give the posted ``reply`` to each target, or leave a note where a budget says no."""
        async with self._store.sessions() as db:
            source = (
                await db.execute(_source_query(), {"message_id": reply.message_id})
            ).one_or_none()
        if source is None or source.role != "assistant" or not source.is_group:
            return
        sender = self._agents.get(reply.agent_slug)
        for target in targets:
            text = strip_mention(reply.text, target.slug)
            message = InboundMessage(
                channel=reply.channel,
                agent_slug=target.slug,
                external_conv_id=reply.external_conv_id,
                external_message_id=f"handoff:{reply.message_id}",
                sender=Sender(
                    external_id=reply.agent_slug, display_name=sender.settings.name, kind="agent"
                ),
                text=text,
                is_group=True,
                group_name=source.group_name,
                parent_conv_id=source.parent_conv_id,
                reply_target=dict(reply.reply_target),
                chain=ChainLink(
                    from_agent=reply.agent_slug,
                    origin_message_id=source.chain_origin_id,
                    hops=source.chain_hops + 1,
                ),
            )
            try:
                result = await self._ingest(message)
            except ChainStopped as stopped:
                await self._note(reply, target, str(stopped), source)
                continue
            except InvalidMessage as error:
                log_event(
                    logger,
                    "handoff.skipped",
                    level=logging.WARNING,
                    agent=reply.agent_slug,
                    peer=target.slug,
                    message=reply.message_id,
                    error=str(error),
                )
                continue
            log_event(
                logger,
                "handoff.stored",
                channel=reply.channel,
                agent=reply.agent_slug,
                peer=target.slug,
                reply=reply.message_id,
                message=result.message_id,
                hops=source.chain_hops + 1,
                duplicate=result.duplicate,
            )

    async def _note(self, reply: Reply, target: Target, text: str, source: Any) -> None:
        """The visible end of a chain: a short bridge note in the conversation, delivered like
        any reply. Keyed by the reply and the peer, so a repeated delivery notes it once."""
        async with self._store.write() as writes:
            [note_id] = await store_outgoing(
                writes,
                [
                    Outgoing(
                        session_id=reply.session_id,
                        sender_participant_id=None,
                        role="system",
                        content=text,
                        channel=reply.channel,
                        reply_target=dict(reply.reply_target),
                        delivery_key=new_delivery_key(),
                        chain_origin_id=source.chain_origin_id,
                        chain_hops=source.chain_hops,
                        external_message_id=f"chain-stop:{reply.message_id}:{target.slug}",
                    )
                ],
            )
            if note_id is not None:
                writes.wake(DELIVER.name)
