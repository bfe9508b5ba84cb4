"""Agent-to-agent conversations through the real app, on SQLite and PostgreSQL: direct asks over
the API, hand-offs in a shared group conversation, and the budgets that end every chain."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import func, select

from bridge.settings import ConfigError, load_settings
from bridge.store.models import ChatMessage, ChatSession, MessageState, Participant
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.api import ApiClient, api_clients
from tests.support.harness import WEBHOOK_SECRET, RunningBridge, make_settings, running_bridge
from tests.support.metrics import metric
from tests.support.processes import wait_until

GROUP = "inmemory:group-1"


def pair(**extra: Any) -> list[dict[str, Any]]:
    """Two echo agents on the memory channel that may address each other."""
    return [
        {"slug": "alpha", "name": "Alpha", "peers": ["beta"], "inmemory": {}, **extra},
        {"slug": "beta", "name": "Beta", "peers": ["alpha"], "inmemory": {}, **extra},
    ]


@asynccontextmanager
async def admin_bridge(
    database_url: str, agents: list[dict[str, Any]], **settings: Any
) -> AsyncIterator[tuple[RunningBridge, ApiClient]]:
    async with (
        running_bridge(make_settings(database_url, agents=agents, **settings)) as bridge,
        api_clients(bridge.url, bridge.sessions, "ops", admin="ops") as clients,
    ):
        yield bridge, clients["ops"]


async def count_messages(bridge: RunningBridge) -> int:
    async with bridge.sessions() as db:
        return int((await db.execute(select(func.count()).select_from(ChatMessage))).scalar_one())


# --- direct asks ---------------------------------------------------------------------------


async def test_a_direct_ask_with_wait_returns_the_peers_answer(database_url: str) -> None:
    async with admin_bridge(database_url, pair()) as (bridge, ops):
        answered = await ops.post(
            "/agents/beta/messages",
            {"from_agent": "alpha", "text": "what is 2+2?"},
            params={"wait": 10},
        )
        reply = answered.ok(200)
        assert (reply["role"], reply["content"]) == ("assistant", "what is 2+2?")
        assert reply["sender"]["kind"] == "agent" and reply["sender"]["display_name"] == "Beta"

        session = (await ops.get(f"/sessions/{reply['session_id']}")).ok()
        assert session["agent"] == "beta" and session["peer_agent"] == "alpha"
        assert session["source_channel"] == "agent"
        assert session["external_conv_id"] == "agent:alpha"
        assert session["participant"]["kind"] == "agent"
        assert session["participant"]["display_name"] == "Alpha"

        history = (await ops.get(f"/sessions/{reply['session_id']}/messages")).ok()["items"]
        ask, answer = history
        assert ask["sender"]["display_name"] == "Alpha" and ask["sender"]["kind"] == "agent"
        assert (ask["chain_origin"], ask["chain_hops"]) == (ask["id"], 1)
        assert (answer["chain_origin"], answer["chain_hops"]) == (ask["id"], 1)
        assert answer["id"] == reply["id"]

        listed = (await ops.get("/sessions", channel="agent")).ok()["items"]
        assert [(s["agent"], s["peer_agent"]) for s in listed] == [("beta", "alpha")]
        assert await metric(bridge, 'bridge_a2a_messages_total{channel="agent"}') == 1


async def test_an_ask_without_wait_is_accepted_and_answered_later(database_url: str) -> None:
    async with admin_bridge(database_url, pair()) as (bridge, ops):
        body = {"from_agent": "alpha", "text": "later", "conversation": "plan-7"}
        asked = (await ops.post("/agents/beta/messages", body)).ok(202)
        assert asked["role"] == "user" and asked["content"] == "later"
        reply = await bridge.reply_to(asked["id"], state=MessageState.DELIVERED)
        assert reply.content == "later"
        session = (await ops.get(f"/sessions/{asked['session_id']}")).ok()
        assert session["external_conv_id"] == "agent:alpha:plan-7"

        again = await ops.post(
            "/agents/beta/messages", {**body, "client_message_id": "k1"}, params={"wait": 5}
        )
        retried = await ops.post(
            "/agents/beta/messages", {**body, "client_message_id": "k1"}, params={"wait": 5}
        )
        assert again.ok(200)["id"] == retried.ok(200)["id"]
        assert await count_messages(bridge) == 4


async def test_a_wait_that_runs_out_answers_202_with_the_ask(database_url: str) -> None:
    async with FakeWebhookAgent(secret=WEBHOOK_SECRET) as slow:
        slow.delay_seconds = 3.0
        agents = pair()
        agents[1] |= {
            "backend": "webhook",
            "webhook": {"url": slow.url, "secret": WEBHOOK_SECRET},
        }
        async with admin_bridge(database_url, agents) as (bridge, ops):
            response = await ops.post(
                "/agents/beta/messages",
                {"from_agent": "alpha", "text": "slow one"},
                params={"wait": 0.2},
            )
            asked = response.ok(202)
            assert asked["role"] == "user" and asked["content"] == "slow one"
            reply = await bridge.reply_to(asked["id"])
            assert reply.content == "echo: slow one"


async def test_a_peer_not_in_peers_is_refused_with_nothing_stored(database_url: str) -> None:
    agents = [
        {"slug": "alpha", "inmemory": {}},
        {"slug": "beta", "peers": ["alpha"], "inmemory": {}},
    ]
    async with (
        admin_bridge(database_url, agents) as (bridge, ops),
        api_clients(bridge.url, bridge.sessions, "user") as users,
    ):
        refused = await ops.post("/agents/beta/messages", {"from_agent": "alpha", "text": "hi"})
        error = refused.error(403, "not_a_peer")
        assert "'beta' is not among the peers of 'alpha'" in error["message"]
        assert "peers" in error["message"]
        ask = {"from_agent": "alpha", "text": "hi"}
        (await ops.post("/agents/alpha/messages", {**ask, "from_agent": "alpha"})).error(
            422, "self"
        )
        (await ops.post("/agents/nobody/messages", ask)).error(404)
        (await ops.post("/agents/beta/messages", {**ask, "from_agent": "ghost"})).error(
            422, "unknown_agent"
        )
        (await ops.post("/agents/beta/messages", {**ask, "conversation": "a b"})).error(422)
        (await ops.post("/agents/beta/messages", {**ask, "extra": 1})).error(422)
        (await users["user"].post("/agents/beta/messages", ask)).error(403, "forbidden")
        assert await count_messages(bridge) == 0
        assert await metric(bridge, 'bridge_a2a_chains_stopped_total{reason="not_a_peer"}') == 1


async def test_turns_per_hour_between_a_pair_are_limited(database_url: str) -> None:
    async with admin_bridge(database_url, pair(), a2a={"max_turns_per_hour": 2}) as (bridge, ops):
        for text in ("one", "two"):
            (
                await ops.post(
                    "/agents/beta/messages",
                    {"from_agent": "alpha", "text": text},
                    params={"wait": 5},
                )
            ).ok(200)
        # The pair counts both directions.
        refused = await ops.post("/agents/alpha/messages", {"from_agent": "beta", "text": "three"})
        assert "limit is 2" in refused.error(429, "max_turns_per_hour")["message"]
        assert await count_messages(bridge) == 4
        assert (
            await metric(bridge, 'bridge_a2a_chains_stopped_total{reason="max_turns_per_hour"}')
            == 1
        )


def test_peers_must_be_configured_agents_and_never_the_agent_itself() -> None:
    with pytest.raises(ConfigError, match=r"agents\[0\]\.peers\[0\]: unknown agent 'ghost'"):
        load_settings(overrides={"agents": [{"slug": "alpha", "peers": ["ghost"]}]})
    with pytest.raises(ConfigError, match="cannot be its own peer"):
        load_settings(overrides={"agents": [{"slug": "alpha", "peers": ["alpha"]}]})
    with pytest.raises(ConfigError, match=r"a2a\.max_hops"):
        load_settings(overrides={"a2a": {"max_hops": 0}})


# --- hand-offs in a shared group conversation (the memory channel) --------------------------


def always_mentioning(fake: FakeWebhookAgent) -> None:
    """Each agent answers by handing over to the other, with new words every time."""
    turns = itertools.count(1)
    other = {"alpha": "beta", "beta": "alpha"}
    fake.reply_with = lambda body: f"@{other[body['agent']['slug']]} turn {next(turns)}"


def webhook_pair(fake: FakeWebhookAgent) -> list[dict[str, Any]]:
    backend = {"backend": "webhook", "webhook": {"url": fake.url, "secret": WEBHOOK_SECRET}}
    return pair(**backend)


async def test_a_mention_in_a_group_hands_off_to_the_peer(database_url: str) -> None:
    async with admin_bridge(database_url, pair()) as (bridge, _ops):
        alpha, beta = bridge.memory("alpha"), bridge.memory("beta")
        await alpha.receive(
            "@beta please summarise", conversation=GROUP, is_group=True, group_name="team"
        )
        await wait_until(lambda: len(beta.sent) == 1, within=10)
        assert alpha.sent[0].text == "@beta please summarise"
        assert beta.sent[0].text == "please summarise"
        assert beta.sent[0].external_conv_id == GROUP
        async with bridge.sessions() as db:
            handed = (
                await db.execute(
                    select(ChatMessage, Participant)
                    .join(ChatSession, ChatSession.id == ChatMessage.session_id)
                    .join(Participant, Participant.id == ChatMessage.sender_participant_id)
                    .where(ChatMessage.role == "user", ChatSession.external_conv_id == GROUP)
                    .order_by(ChatMessage.id)
                )
            ).all()
        human, handoff = handed
        assert handoff[1].kind == "agent" and handoff[1].external_id == "alpha"
        assert handoff[0].chain_origin_id == human[0].id and handoff[0].chain_hops == 1
        # Only peers, and only in a group: a mention in a one-to-one chat goes nowhere.
        await alpha.receive("@beta private", conversation="inmemory:dm")
        await wait_until(lambda: len(alpha.sent) == 2, within=10)
        await asyncio.sleep(0.5)
        assert len(beta.sent) == 1


async def test_two_agents_that_always_mention_each_other_stop_at_the_hop_budget(
    database_url: str,
) -> None:
    async with FakeWebhookAgent(secret=WEBHOOK_SECRET) as fake:
        always_mentioning(fake)
        async with admin_bridge(database_url, webhook_pair(fake)) as (bridge, _ops):
            alpha, beta = bridge.memory("alpha"), bridge.memory("beta")
            await alpha.receive("start", conversation=GROUP, is_group=True, group_name="team")
            await wait_until(lambda: any("Stopped" in r.text for r in alpha.sent), within=20)
            # hop 0 alpha, 1 beta, 2 alpha, 3 beta, 4 alpha; hop 5 would pass max_hops = 4.
            assert [r.text for r in alpha.sent[:3]] == [
                "@beta turn 1",
                "@beta turn 3",
                "@beta turn 5",
            ]
            assert [r.text for r in beta.sent] == ["@alpha turn 2", "@alpha turn 4"]
            note = alpha.sent[3].text
            assert "hop 5, over the limit of 4" in note
            assert len(fake.requests) == 5
            assert await metric(bridge, 'bridge_a2a_chains_stopped_total{reason="max_hops"}') == 1
            async with bridge.sessions() as db:
                hops = (
                    (
                        await db.execute(
                            select(ChatMessage.chain_hops)
                            .where(ChatMessage.role == "user")
                            .order_by(ChatMessage.id)
                        )
                    )
                    .scalars()
                    .all()
                )
            assert list(hops) == [0, 1, 2, 3, 4]


async def test_the_same_text_coming_back_ends_the_chain(database_url: str) -> None:
    async with FakeWebhookAgent(secret=WEBHOOK_SECRET) as fake:
        other = {"alpha": "beta", "beta": "alpha"}
        fake.reply_with = lambda body: f"@{other[body['agent']['slug']]} same again"
        async with admin_bridge(database_url, webhook_pair(fake)) as (bridge, _ops):
            alpha, beta = bridge.memory("alpha"), bridge.memory("beta")
            await alpha.receive("start", conversation=GROUP, is_group=True, group_name="team")
            await wait_until(
                lambda: any("same message again" in r.text for r in alpha.sent), within=20
            )
            assert [r.text for r in beta.sent] == ["@alpha same again"]
            assert (
                await metric(bridge, 'bridge_a2a_chains_stopped_total{reason="repeated_text"}') == 1
            )


# --- the ask_agent tool of the openai backend -----------------------------------------------

OPENAI_KEY_ENV = "BRIDGE_TEST_A2A_OPENAI_KEY"


async def test_an_ask_agent_tool_call_returns_the_peers_answer(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPENAI_KEY_ENV, "sk-a2a")
    async with FakeOpenAIServer(api_key="sk-a2a", expected_model="gpt-test") as model:
        call_id = model.add_ask("beta", "what is the capital of France?")
        model.add_reply("Beta says: what is the capital of France?")
        agents = pair()
        agents[0] |= {
            "backend": "openai",
            "openai": {"base_url": model.url, "model": "gpt-test", "api_key_env": OPENAI_KEY_ENV},
        }
        async with admin_bridge(database_url, agents) as (bridge, ops):
            alpha = bridge.memory("alpha")
            asked = await alpha.receive("ask beta about France")
            await wait_until(lambda: len(alpha.sent) == 1, within=10)
            assert alpha.sent[0].text == "Beta says: what is the capital of France?"

            first, second = (request.json for request in model.requests)
            tool = first["tools"][0]["function"]
            assert tool["name"] == "ask_agent"
            assert tool["parameters"]["properties"]["agent"]["enum"] == ["beta"]
            # The peer (an echo agent) answered through the bridge: its answer is the result.
            assert second["messages"][-1] == {
                "role": "tool",
                "tool_call_id": call_id,
                "content": "what is the capital of France?",
            }

            beta_sessions = (await ops.get("/sessions", agent="beta")).ok()["items"]
            (beta_session,) = beta_sessions
            assert (
                beta_session["peer_agent"] == "alpha" and beta_session["source_channel"] == "agent"
            )
            assert beta_session["external_conv_id"] == f"agent:alpha:session-{asked.session_id}"
            ask, _answer = (await ops.get(f"/sessions/{beta_session['id']}/messages")).ok()["items"]
            assert ask["sender"]["display_name"] == "Alpha"
            assert (ask["chain_origin"], ask["chain_hops"]) == (asked.message_id, 1)

            # The asking session records the exchange, never sent to the platform.
            own = (await ops.get(f"/sessions/{asked.session_id}/messages")).ok()["items"]
            assert [(m["role"], m["content"], m["delivery"]) for m in own] == [
                ("user", "ask beta about France", None),
                ("system", "Asked beta: what is the capital of France?", None),
                ("system", "beta answered: what is the capital of France?", None),
                ("assistant", "Beta says: what is the capital of France?", "delivered"),
            ]
            assert len(alpha.sent) == 1


async def test_an_ask_agent_call_over_budget_gets_the_reason_as_its_result(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPENAI_KEY_ENV, "sk-a2a")
    async with FakeOpenAIServer(api_key="sk-a2a", expected_model="gpt-test") as model:
        model.add_ask("beta", "anything")
        model.add_reply("I could not reach beta.")
        agents = pair()
        agents[0] |= {
            "backend": "openai",
            "openai": {"base_url": model.url, "model": "gpt-test", "api_key_env": OPENAI_KEY_ENV},
        }
        async with admin_bridge(database_url, agents, a2a={"max_turns_per_hour": 1}) as (
            bridge,
            ops,
        ):
            (
                await ops.post(
                    "/agents/beta/messages",
                    {"from_agent": "alpha", "text": "hi"},
                    params={"wait": 5},
                )
            ).ok(200)
            alpha = bridge.memory("alpha")
            await alpha.receive("ask beta")
            await wait_until(lambda: len(alpha.sent) == 1, within=10)
            result = model.requests[-1].json["messages"][-1]
            assert result["role"] == "tool"
            assert result["content"].startswith("not asked: ") and "limit is 1" in result["content"]
            assert (
                await metric(bridge, 'bridge_a2a_chains_stopped_total{reason="max_turns_per_hour"}')
                == 1
            )
