"""The access gate meets only messages that could be stored: a thread follow-up in a
conversation the agent is not in is ignored as before, not refused or counted."""

from __future__ import annotations

from sqlalchemy import func, select

from bridge.ports.events import InboundMessage, Sender
from bridge.store.models import REFUSALS, Agent, ChatSession
from tests.support.harness import RunningBridge, make_settings, running_bridge

AGENT = {"slug": "assistant", "inmemory": {}, "access": {"groups": "allowlist"}}


def follow_up(*, conversation: str, message_id: str) -> InboundMessage:
    return InboundMessage(
        channel="inmemory",
        agent_slug="assistant",
        external_conv_id=conversation,
        external_message_id=message_id,
        sender=Sender(external_id="stranger"),
        text="a reply in a thread, no mention",
        is_group=True,
        only_if_engaged=True,
    )


async def test_a_follow_up_the_agent_is_not_in_is_ignored_not_refused(database_url: str) -> None:
    async with running_bridge(make_settings(database_url, agents=[AGENT])) as bridge:
        dispatch = bridge.pipeline.dispatch
        ignored = await dispatch(follow_up(conversation="inmemory:thread-1", message_id="m1"))
        assert ignored.ignored and ignored.refused is None
        # In a conversation the agent is in, the same stranger is refused (and counted).
        async with bridge.sessions() as db, db.begin():
            db.add(
                ChatSession(
                    agent_id=await _agent_id(bridge),
                    external_conv_id="inmemory:thread-2",
                    source_channel="inmemory",
                    is_group=True,
                )
            )
        refused = await dispatch(follow_up(conversation="inmemory:thread-2", message_id="m2"))
        assert refused.refused == "not_allowed"
        async with bridge.sessions() as db:
            counted = await db.execute(
                select(REFUSALS.c.external_conv_id, func.sum(REFUSALS.c.count)).group_by(
                    REFUSALS.c.external_conv_id
                )
            )
            assert dict(counted.all()) == {"inmemory:thread-2": 1}


async def _agent_id(bridge: RunningBridge) -> int:
    async with bridge.sessions() as db:
        found = await db.execute(select(Agent.id).where(Agent.slug == "assistant"))
        return int(found.scalar_one())
