"""An agent posts first (``POST /api/v1/agents/{agent}/send``), over HTTP against the real
bridge, on SQLite and PostgreSQL: stored as the agent's message, delivered once through the
outbox, idempotent on ``client_message_id``, and refused before anything is stored where the
caller may not post or the channel cannot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from sqlalchemy import func, select

from bridge.api.tokens import create_token
from bridge.store.models import ChatMessage, ChatSession, MessageState
from tests.bridge.workspaces.isolation import two_workspace_settings, two_workspaces
from tests.support.api import ApiClient
from tests.support.harness import RunningBridge, make_settings, running_bridge
from tests.support.processes import wait_until


@asynccontextmanager
async def bridge_and_clients(
    database_url: str,
) -> AsyncIterator[tuple[RunningBridge, ApiClient, ApiClient]]:
    """The bridge with agent ``assistant`` (web and inmemory channels), an admin of its
    workspace and a user of it."""
    async with (
        running_bridge(make_settings(database_url)) as bridge,
        aiohttp.ClientSession() as http,
    ):
        tokens = [
            await create_token(bridge.sessions, name=name, admin=admin, workspace="default")
            for name, admin in (("ops", True), ("ada", False))
        ]
        admin, user = (ApiClient(http=http, base_url=bridge.url, token=t) for t in tokens)
        yield bridge, admin, user


async def count(bridge: RunningBridge, model: Any) -> int:
    async with bridge.sessions() as db:
        return int((await db.execute(select(func.count()).select_from(model))).scalar_one())


async def stored(bridge: RunningBridge, message_id: int) -> ChatMessage:
    async with bridge.sessions() as db:
        return await db.get_one(ChatMessage, message_id)


async def delivered(
    bridge: RunningBridge, message_id: int, state: str = MessageState.DELIVERED
) -> ChatMessage:
    async def done() -> bool:
        return (await stored(bridge, message_id)).state == state

    await wait_until(done, within=10, what=f"message {message_id} {state}")
    return await stored(bridge, message_id)


async def test_into_a_web_session_it_is_the_agents_message_delivered_once_and_idempotent(
    database_url: str,
) -> None:
    async with bridge_and_clients(database_url) as (bridge, admin, user):
        session = await user.new_session()
        body = {
            "session_id": session["id"],
            "text": "Daily report: all green",
            "client_message_id": "r-1",
        }
        async with user.live() as live:
            first = (await admin.post("/agents/assistant/send", body)).ok(202)
            assert (first["role"], first["content"], first["sender"]["kind"]) == (
                "assistant",
                "Daily report: all green",
                "agent",
            )
            shown = await live.next(
                lambda f: (
                    f.get("message", {}).get("id") == first["id"]
                    and f["message"]["delivery"] == "delivered"
                )
            )
            assert shown["session_id"] == session["id"]
            assert shown["message"]["sender"]["id"] == first["sender"]["id"]
        again = (await admin.post("/agents/assistant/send", body)).ok(200)
        assert again["id"] == first["id"] and again["delivery"] == "delivered"
        row = await stored(bridge, first["id"])
        assert (row.attempts, row.platform_message_ids) == (1, [f"web:{first['id']}"])
        history = (await user.get(f"/sessions/{session['id']}/messages")).ok()["items"]
        assert [(m["id"], m["role"], m["delivery"]) for m in history] == [
            (first["id"], "assistant", "delivered")
        ]
        assert (await user.get(f"/sessions/{session['id']}")).ok()["message_count"] == 1
        # Another client_message_id is another message.
        other = (
            await admin.post("/agents/assistant/send", {**body, "client_message_id": "r-2"})
        ).ok(202)
        assert other["id"] != first["id"]
        assert await count(bridge, ChatMessage) == 2


async def test_into_a_conversation_never_seen_its_session_is_created_and_answers_land_in_it(
    database_url: str,
) -> None:
    async with bridge_and_clients(database_url) as (bridge, admin, _user):
        memory = bridge.memory()
        body = {
            "channel": "inmemory",
            "external_conv_id": "inmemory:room-9",
            "text": "Standup in 5 minutes",
            "client_message_id": "standup-2024-05-01",
        }
        sent = (await admin.post("/agents/assistant/send", body)).ok(202)
        reply = await memory.next_sent()
        assert (reply.message_id, reply.text, reply.reply_target) == (
            sent["id"],
            "Standup in 5 minutes",
            {"conversation": "inmemory:room-9"},
        )
        await delivered(bridge, sent["id"])
        assert (await admin.post("/agents/assistant/send", body)).ok(200)["id"] == sent["id"]
        session = (await admin.get(f"/sessions/{sent['session_id']}")).ok()
        assert (session["source_channel"], session["external_conv_id"]) == (
            "inmemory",
            "inmemory:room-9",
        )
        answer = await memory.receive("on my way", conversation="inmemory:room-9")
        assert answer.session_id == sent["session_id"]
        await memory.next_sent()  # the echo agent answers in the same session
        assert [r.message_id for r in memory.sent].count(sent["id"]) == 1
        history = (await admin.get(f"/sessions/{sent['session_id']}/messages")).ok()["items"]
        assert [m["content"] for m in history] == ["Standup in 5 minutes", "on my way", "on my way"]
        # A thread is its own session under the conversation's.
        threaded = (
            await admin.post(
                "/agents/assistant/send", {**body, "thread": "t1", "client_message_id": "x"}
            )
        ).ok(202)
        thread = (await admin.get(f"/sessions/{threaded['session_id']}")).ok()
        assert (thread["external_conv_id"], thread["parent_session"]) == (
            "inmemory:room-9:t1",
            sent["session_id"],
        )


async def test_a_refused_delivery_ends_failed_with_the_reason_on_the_message(
    database_url: str,
) -> None:
    from bridge.ports.errors import DeliveryError

    async with bridge_and_clients(database_url) as (bridge, admin, _user):
        bridge.memory().fail_next(DeliveryError("not_in_channel", permanent=True))
        body = {"channel": "inmemory", "external_conv_id": "inmemory:closed", "text": "hello?"}
        sent = (await admin.post("/agents/assistant/send", body)).ok(202)
        row = await delivered(bridge, sent["id"], MessageState.FAILED)
        assert row.last_error == "not_in_channel"
        (shown,) = (await admin.get(f"/sessions/{sent['session_id']}/messages")).ok()["items"]
        assert (shown["delivery"], shown["error"]) == ("failed", "not_in_channel")


async def test_who_may_post_and_where_everything_refused_stores_nothing(database_url: str) -> None:
    async with bridge_and_clients(database_url) as (bridge, admin, user):
        session = await user.new_session()
        before = (await count(bridge, ChatMessage), await count(bridge, ChatSession))
        send = "/agents/assistant/send"
        by_session = {"session_id": session["id"], "text": "hi"}
        (await user.post(send, by_session)).error(403, "forbidden")
        (await admin.post("/agents/nobody/send", by_session)).error(404, "not_found")
        (await admin.post(send, {"session_id": 987654321, "text": "hi"})).error(404, "not_found")
        unknown = {"channel": "telegram", "external_conv_id": "telegram:1", "text": "hi"}
        error = (await admin.post(send, unknown)).error(422, "cannot_post")
        assert "telegram" in error["message"]
        wrong_id = {"channel": "inmemory", "external_conv_id": "slack:T1:C1", "text": "hi"}
        (await admin.post(send, wrong_id)).error(422, "cannot_post")
        bad_web = {"channel": "web", "external_conv_id": "web:not-a-uuid", "text": "hi"}
        (await admin.post(send, bad_web)).error(422, "cannot_post")
        asks = {"channel": "agent", "external_conv_id": "agent:other", "text": "hi"}
        (await admin.post(send, asks)).error(422, "cannot_post")
        files = {**by_session, "attachments": [{"file_id": 1}]}
        (await admin.post(send, files)).error(422, "invalid")  # not {name, data_base64}
        (await admin.post(send, {**by_session, **unknown})).error(422, "invalid")
        (await admin.post(send, {"channel": "inmemory", "text": "hi"})).error(422, "invalid")
        assert (await count(bridge, ChatMessage), await count(bridge, ChatSession)) == before
        (await user.call("DELETE", f"/sessions/{session['id']}")).ok()
        (await admin.post(send, by_session)).error(409, "session_deleted")
        assert await count(bridge, ChatMessage) == before[0]


async def test_a_foreign_workspaces_agent_is_not_found_and_the_operator_may_post(
    database_url: str,
) -> None:
    async with two_workspaces(two_workspace_settings(database_url)) as (bridge, clients):
        body = {"channel": "inmemory", "external_conv_id": "inmemory:ops", "text": "hi"}
        foreign = await clients["acme_admin"].post("/agents/globex-bot/send", body)
        ghost = await clients["acme_admin"].post("/agents/ghost-bot/send", body)
        assert (
            foreign.error(404, "not_found")["message"].replace("globex", "ghost")
            == (ghost.error(404, "not_found")["message"])
        )
        (await clients["globex_user"].post("/agents/globex-bot/send", body)).error(403)
        assert await count(bridge, ChatMessage) == 0
        mine = (await clients["globex_admin"].post("/agents/globex-bot/send", body)).ok(202)
        operator = (await clients["operator"].post("/agents/acme-bot/send", body)).ok(202)
        assert mine["session_id"] != operator["session_id"]
        await delivered(bridge, mine["id"])
        await delivered(bridge, operator["id"])
