"""The admin routes for pairing approvals and the usage API, against the real app on SQLite and
PostgreSQL: web users pair, get limited and refused, and the figures match what they did."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, select, update

from bridge.store.models import (
    GRANTS,
    MESSAGES,
    PAIRING_CODES,
    REFUSALS,
    ChatMessage,
    MessageState,
)
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.api import ApiClient
from tests.support.harness import RunningBridge, make_settings, webhook_agent_config
from tests.support.shared_api import bridge_with_users

PAIRING_AGENT = {"slug": "assistant", "inmemory": {}, "access": {"dm": "pairing"}}


def code_of(refused: dict[str, Any]) -> str:
    """The pairing code in a ``pairing_required`` error."""
    assert refused["code"] == "pairing_required", refused
    found = re.search(r"code: ([A-Z0-9]{8}) ", refused["message"])
    assert found is not None, refused
    return found.group(1)


async def pairing_code(user: ApiClient, session_id: int) -> str:
    return code_of((await user.post(f"/sessions/{session_id}/messages", {"text": "hi"})).error(403))


async def grant_count(bridge: RunningBridge) -> int:
    async with bridge.sessions() as db:
        return int((await db.execute(select(func.count()).select_from(GRANTS))).scalar_one())


async def test_pairing_is_approved_listed_and_revoked_by_an_admin(database_url: str) -> None:
    settings = make_settings(database_url, agents=[PAIRING_AGENT])
    async with bridge_with_users(settings, "root", "alice", "bob", admin="root") as (
        bridge,
        users,
    ):
        root, alice, bob = users["root"], users["alice"], users["bob"]
        session = await alice.new_session()
        code = await pairing_code(alice, session["id"])

        # Non-admins are refused, whatever they ask, and nothing changes.
        (await bob.post("/access/approve", {"code": code})).error(403, "forbidden")
        (await bob.get("/agents/assistant/access")).error(403, "forbidden")
        (await bob.call("DELETE", "/agents/assistant/access/web:alice")).error(403, "forbidden")

        # Bad input: clear errors, nothing stored.
        for body in ({}, {"code": "AB CD"}, {"code": code, "agent": "assistant"}, {"code": ""}):
            (await root.post("/access/approve", body)).error(422, "invalid")
        malformed = await root.call("POST", "/access/approve", data=b"{", headers={})
        malformed.error(400, "malformed_json")
        unknown = (await root.post("/access/approve", {"code": "ZZZZ2222"})).error(404, "not_found")
        assert "ZZZZ2222" in unknown["message"]
        assert await grant_count(bridge) == 0
        assert (await root.get("/agents/assistant/access")).ok() == {"items": []}

        approved = (await root.post("/access/approve", {"code": code.lower()})).ok()
        assert approved == {"agent": "assistant", "identity": "web:alice"}
        (await root.post("/access/approve", {"code": code})).error(404, "not_found")
        (listed,) = (await root.get("/agents/assistant/access")).ok()["items"]
        assert listed["identity"] == "web:alice"
        approved_at = datetime.fromisoformat(listed["approved_at"])
        assert abs(approved_at - datetime.now(UTC)) < timedelta(minutes=5)

        sent = await alice.say(session["id"], "now you know me")
        reply = await bridge.reply_to(sent["id"], state=MessageState.DELIVERED)
        assert reply.content == "now you know me"

        # Unknown agents and identities are not found; what cannot be one neither.
        (await root.get("/agents/nobody/access")).error(404, "not_found")
        (await root.get("/agents/Not%20A%20Slug/access")).error(404, "not_found")
        (await root.call("DELETE", "/agents/nobody/access/web:alice")).error(404, "not_found")
        (await root.call("DELETE", "/agents/assistant/access/web:bob")).error(404, "not_found")
        for odd in ("no-colon", "web:a\x00b", "web:x/y"):
            path = "/agents/assistant/access/" + quote(odd, safe=":")
            (await root.call("DELETE", path)).error(404)
        assert await grant_count(bridge) == 1

        revoked = await root.call("DELETE", "/agents/assistant/access/web:alice")
        assert (revoked.status, revoked.body) == (204, None)
        assert (await root.get("/agents/assistant/access")).ok() == {"items": []}
        (await root.call("DELETE", "/agents/assistant/access/web:alice")).error(404, "not_found")
        new_code = await pairing_code(alice, session["id"])
        assert new_code != code


async def test_an_expired_code_is_gone_and_the_next_dm_gets_a_new_one(database_url: str) -> None:
    settings = make_settings(database_url, agents=[PAIRING_AGENT])
    async with bridge_with_users(settings, "root", "alice", admin="root") as (bridge, users):
        root, alice = users["root"], users["alice"]
        session = await alice.new_session()
        code = await pairing_code(alice, session["id"])
        async with bridge.sessions() as db, db.begin():
            await db.execute(
                update(PAIRING_CODES).values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
            )
        expired = (await root.post("/access/approve", {"code": code})).error(410, "expired")
        assert code in expired["message"]
        assert await grant_count(bridge) == 0

        fresh = await pairing_code(alice, session["id"])
        assert fresh != code
        (await root.post("/access/approve", {"code": code})).error(404, "not_found")
        assert (await root.post("/access/approve", {"code": fresh})).ok()["identity"] == "web:alice"


# --- usage ---------------------------------------------------------------------------------


def usage_agents(fake: FakeWebhookAgent) -> list[dict[str, Any]]:
    """``assistant`` (webhook, reports usage): mallory denied, two messages an hour each;
    ``helper`` (echo, no usage): open. They may ask each other."""
    return [
        webhook_agent_config(
            fake,
            access={"deny": ["web:mallory"]},
            limits={"user_messages_per_hour": 2},
            peers=["helper"],
        ),
        {"slug": "helper", "inmemory": {}, "peers": ["assistant"]},
    ]


def figures(
    answered: int = 0,
    failed: int = 0,
    limited: int = 0,
    refused: int = 0,
    tokens: tuple[int, int] = (0, 0),
) -> dict[str, int]:
    return {
        "answered": answered,
        "failed": failed,
        "limited": limited,
        "refused": refused,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
    }


async def answered(bridge: RunningBridge, user: ApiClient, session_id: int, text: str) -> None:
    sent = await user.say(session_id, text)
    await bridge.reply_to(sent["id"], state=MessageState.DELIVERED)


async def test_usage_figures_match_what_users_did(
    database_url: str, webhook_agent: FakeWebhookAgent
) -> None:
    settings = make_settings(database_url, agents=usage_agents(webhook_agent))
    names = ("root", "alice", "bob", "mallory")
    async with bridge_with_users(settings, *names, admin="root") as (bridge, users):
        root, alice, bob, mallory = (users[name] for name in names)
        a1, a2 = await alice.new_session(), await alice.new_session()
        b1, m1 = await bob.new_session(), await mallory.new_session()
        h1 = await alice.new_session("helper")

        webhook_agent.raw_next({"reply": "one", "usage": {"input_tokens": 10, "output_tokens": 3}})
        await answered(bridge, alice, a1["id"], "first")
        webhook_agent.raw_next({"reply": "two", "usage": {"input_tokens": 20, "output_tokens": 4}})
        await answered(bridge, alice, a1["id"], "second")
        limited = await alice.say(a2["id"], "third")
        assert limited["state"] == MessageState.LIMITED
        webhook_agent.raw_next({"reply": "hi", "usage": {"input_tokens": 5, "output_tokens": 1}})
        await answered(bridge, bob, b1["id"], "hello")
        webhook_agent.fail_next(1, status=500)
        failing = await bob.say(b1["id"], "again")
        await bridge.reply_to(failing["id"], state=MessageState.DELIVERED)  # the apology
        for text in ("let me in", "please"):
            (await mallory.post(f"/sessions/{m1['id']}/messages", {"text": text})).error(
                403, "refused"
            )
        await answered(bridge, alice, h1["id"], "hello helper")
        # An agent's ask is not a user's message: it never shows in the figures.
        ask = {"from_agent": "assistant", "text": "psst"}
        (await root.post("/agents/helper/messages", ask, params={"wait": 10})).ok(200)
        # A deleted session's usage still happened.
        (await alice.call("DELETE", f"/sessions/{a2['id']}")).ok()

        by_user = (await root.get("/usage")).ok()
        assert by_user["agent"] is None and by_user["group_by"] == "user"
        since = datetime.fromisoformat(by_user["since"])
        assert abs(datetime.now(UTC) - timedelta(hours=24) - since) < timedelta(minutes=5)
        assert by_user["items"] == [
            {"agent": "assistant", "user": "web:alice", **figures(2, 0, 1, 0, (30, 7))},
            {"agent": "helper", "user": "web:alice", **figures(answered=1)},
            {"agent": "assistant", "user": "web:bob", **figures(1, 1, 0, 0, (5, 1))},
            {"agent": "assistant", "user": "web:mallory", **figures(refused=2)},
        ]
        only = (await root.get("/usage", agent="assistant", group_by="user")).ok()
        assert only["agent"] == "assistant"
        assert only["items"] == [row for row in by_user["items"] if row["agent"] == "assistant"]

        by_conversation = (await root.get("/usage", group_by="conversation")).ok()
        conv = {s["id"]: s["external_conv_id"] for s in (a1, a2, b1, m1, h1)}
        expected = [
            {"agent": "assistant", "conversation": conv[a1["id"]], **figures(2, tokens=(30, 7))},
            {"agent": "assistant", "conversation": conv[a2["id"]], **figures(limited=1)},
            {"agent": "assistant", "conversation": conv[b1["id"]], **figures(1, 1, tokens=(5, 1))},
            {"agent": "assistant", "conversation": conv[m1["id"]], **figures(refused=2)},
            {"agent": "helper", "conversation": conv[h1["id"]], **figures(answered=1)},
        ]
        assert by_conversation["items"] == sorted(expected, key=lambda row: row["conversation"])

        # `since`: older messages and the refusals of older hours drop out.
        two_days_ago = datetime.now(UTC) - timedelta(days=2)
        async with bridge.sessions() as db, db.begin():
            await db.execute(
                update(MESSAGES)
                .where(ChatMessage.id == failing["id"])
                .values(created_at=two_days_ago)
            )
            await db.execute(update(REFUSALS).values(hour=two_days_ago))
        recent = (await root.get("/usage", agent="assistant")).ok()["items"]
        assert [(row["user"], row["failed"], row["refused"]) for row in recent] == [
            ("web:alice", 0, 0),
            ("web:bob", 0, 0),
        ]
        week = (datetime.now(UTC) - timedelta(days=7)).isoformat()
        assert (await root.get("/usage", agent="assistant", since=week)).ok()["items"] == (
            only["items"]
        )
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert (await root.get("/usage", since=later)).ok()["items"] == []


async def test_usage_is_for_admins_and_validates_its_query(database_url: str) -> None:
    async with bridge_with_users(make_settings(database_url), "root", "alice", admin="root") as (
        _bridge,
        users,
    ):
        root, alice = users["root"], users["alice"]
        (await alice.get("/usage")).error(403, "forbidden")
        for query in (
            {"since": "yesterday"},
            {"since": "2026-05-01T00:00:00"},  # no offset: which zone?
            {"since": "0001-01-01T00:00:00+01:00"},  # before the first representable moment
            {"group_by": "team"},
            {"agent": "Not A Slug"},
            {"limit": "5"},
        ):
            (await root.get("/usage", **query)).error(422, "invalid")
        (await root.get("/usage", agent="nobody")).error(422, "unknown_agent")
        empty = (await root.get("/usage", agent="assistant", since="2026-05-01T02:00:00Z")).ok()
        assert empty == {
            "agent": "assistant",
            "since": "2026-05-01T02:00:00Z",
            "group_by": "user",
            "items": [],
        }
