"""An agent's ``access.deny`` and ``access.conversations`` apply to other agents too: a direct
ask from a denied agent is refused with nothing stored, and a hand-off into a conversation the
peer does not take, or from an agent it denies, ends the chain with a note."""

from __future__ import annotations

from sqlalchemy import func, select

from bridge.store.models import Agent, ChatSession
from tests.bridge.a2a.test_a2a import GROUP, admin_bridge, count_messages, pair
from tests.support.metrics import metric
from tests.support.processes import wait_until


async def test_an_ask_from_a_denied_agent_is_refused_with_nothing_stored(
    database_url: str,
) -> None:
    agents = [
        {"slug": "alpha", "peers": ["beta"], "inmemory": {}},
        {"slug": "beta", "peers": ["alpha"], "inmemory": {}, "access": {"deny": ["agent:alpha"]}},
    ]
    async with admin_bridge(database_url, agents) as (bridge, ops):
        refused = await ops.post("/agents/beta/messages", {"from_agent": "alpha", "text": "hi"})
        refused.error(403, "refused")
        assert await count_messages(bridge) == 0
        assert await metric(bridge, 'bridge_refused_total{agent="beta",reason="denied"}') == 1
        # The other way round is untouched: alpha does not deny beta.
        asked = await ops.post(
            "/agents/alpha/messages?wait=10", {"from_agent": "beta", "text": "yo"}
        )
        assert asked.status == 200


async def test_a_hand_off_outside_the_peers_conversations_ends_with_a_note(
    database_url: str,
) -> None:
    agents = pair()
    agents[1] = {**agents[1], "access": {"conversations": ["inmemory:elsewhere"]}}
    async with admin_bridge(database_url, agents) as (bridge, _ops):
        alpha, beta = bridge.memory("alpha"), bridge.memory("beta")
        await alpha.receive("@beta summarise", conversation=GROUP, is_group=True, group_name="t")
        await wait_until(lambda: len(alpha.sent) == 2, within=10)
        assert alpha.sent[0].text == "@beta summarise"
        assert "beta does not take messages from alpha here" in alpha.sent[1].text
        assert beta.sent == []
        async with bridge.sessions() as db:
            beta_in_group = await db.execute(
                select(func.count())
                .select_from(ChatSession)
                .join(Agent, Agent.id == ChatSession.agent_id)
                .where(Agent.slug == "beta", ChatSession.external_conv_id == GROUP)
            )
            assert beta_in_group.scalar_one() == 0
        assert await metric(bridge, 'bridge_refused_total{agent="beta",reason="conversation"}') == 1
