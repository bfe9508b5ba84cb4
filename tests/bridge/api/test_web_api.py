"""The sessions API and its WebSocket against the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from sqlalchemy import delete, func, insert, select, update

from bridge.api.live import LIVE
from bridge.api.tokens import revoke_token
from bridge.ports.events import InboundMessage, Sender
from bridge.store.models import CHANGES, MESSAGES, ChatMessage, ChatSession, MessageState
from tests.support.api import ApiClient
from tests.support.harness import RunningBridge, make_settings, running_bridge
from tests.support.shared_api import (
    bridge_with_users,
    live_exchange,
    resume_is_reset,
    user_with_session,
)


async def _counts(bridge: RunningBridge) -> tuple[int, int]:
    async with bridge.sessions() as db:
        messages = (await db.execute(select(func.count()).select_from(ChatMessage))).scalar()
        sessions = (await db.execute(select(func.count()).select_from(ChatSession))).scalar()
    return int(messages or 0), int(sessions or 0)


async def test_rest_round_trip_with_the_echo_agent(database_url: str) -> None:
    async with bridge_with_users(make_settings(database_url), "alice") as (bridge, users):
        alice = users["alice"]
        assert (await alice.get("/me")).ok() == {
            "name": "alice",
            "is_admin": False,
            "participant_id": (await alice.get("/me")).body["participant_id"],
            "workspace": "default",
        }
        agents = (await alice.get("/agents")).ok()["items"]
        assert [a["slug"] for a in agents] == ["assistant"]

        session = await alice.new_session(title="Plans")
        assert session["source_channel"] == "web"
        assert session["external_conv_id"].startswith("web:")
        assert session["participant"]["display_name"] == "alice"
        assert session["title"] == "Plans" and session["message_count"] == 0

        sent = await alice.say(session["id"], "hello there")
        assert sent["role"] == "user" and sent["content"] == "hello there"
        assert sent["sender"]["display_name"] == "alice"
        reply = await bridge.reply_to(sent["id"], state=MessageState.DELIVERED)
        history = (await alice.get(f"/sessions/{session['id']}/messages")).ok()
        assert [(m["role"], m["content"], m["delivery"]) for m in history["items"]] == [
            ("user", "hello there", None),
            ("assistant", "hello there", "delivered"),
        ]
        assert history["items"][1]["id"] == reply.id
        assert history["items"][1]["sender"]["kind"] == "agent"
        assert history["next_cursor"] is None

        renamed = await alice.call("PATCH", f"/sessions/{session['id']}", json={"title": "X"})
        assert renamed.ok()["title"] == "X"
        listed = (await alice.get("/sessions")).ok()["items"]
        assert [(s["id"], s["title"], s["message_count"]) for s in listed] == [
            (session["id"], "X", 2)
        ]


async def test_the_same_client_message_id_is_stored_and_answered_once(database_url: str) -> None:
    async with user_with_session(make_settings(database_url)) as (bridge, alice, session):
        posts = await asyncio.gather(
            *(alice.say(session["id"], "once", client_message_id="c-1") for _ in range(5))
        )
        assert len({post["id"] for post in posts}) == 1
        await bridge.reply_to(posts[0]["id"], state=MessageState.DELIVERED)
        later = await alice.say(session["id"], "once", client_message_id="c-1")
        assert later["id"] == posts[0]["id"]
        stored = await bridge.messages(session["id"])
        assert [(m.role, m.content) for m in stored] == [("user", "once"), ("assistant", "once")]


async def test_pagination_has_no_gap_and_no_duplicate_while_messages_arrive(
    database_url: str,
) -> None:
    async with bridge_with_users(make_settings(database_url), "alice") as (bridge, users):
        alice = users["alice"]
        created = [await alice.new_session(title=f"s{i}") for i in range(250)]
        # Fifty sessions share one timestamp: the id breaks the tie.
        tied = [s["id"] for s in created[100:150]]
        async with bridge.sessions() as db, db.begin():
            await db.execute(
                update(ChatSession)
                .where(ChatSession.id.in_(tied))
                .values(last_message_at=datetime(2026, 1, 1, tzinfo=UTC))
            )
        expected = {s["id"] for s in created}

        seen: list[int] = []
        cursor = None
        while True:
            query: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            page = (await alice.get("/sessions", **query)).ok()
            seen += [s["id"] for s in page["items"]]
            # Meanwhile: a new session, and a message in a session already walked past
            # (it moves to the top, behind the walk).
            await alice.new_session(title="newcomer")
            await alice.say(seen[0], "bump")
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 250
        assert set(seen) == expected

        # 1,000 messages in one session, paged back from the newest while more arrive.
        target = created[0]["id"]
        await _fill_history(bridge, target, 1000)
        first = (await alice.get(f"/sessions/{target}/messages", limit=50)).ok()
        walked = [m["id"] for m in first["items"]]
        existing = {m.id for m in await bridge.messages(target)}
        cursor = first["next_cursor"]
        while cursor:
            await alice.say(target, "arriving meanwhile")
            page = (await alice.get(f"/sessions/{target}/messages", limit=50, before=cursor)).ok()
            ids = [m["id"] for m in page["items"]]
            assert ids == sorted(ids), "oldest first within a page"
            walked = ids + walked
            cursor = page["next_cursor"]
        assert walked == sorted(existing)
        assert len(walked) >= 1000


async def _fill_history(bridge: RunningBridge, session_id: int, count: int) -> None:
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "session_id": session_id,
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"message {i}",
            "external_message_id": f"fill-{i}" if i % 2 == 0 else None,
            "channel": "web",
            "reply_target": {},
            "attachments": [],
            "state": MessageState.ANSWERED if i % 2 == 0 else MessageState.DELIVERED,
            "attempts": 1,
            "delivery_in_doubt": False,
            "platform_message_ids": [],
            "created_at": now,
            "updated_at": now,
        }
        for i in range(count)
    ]
    async with bridge.sessions() as db, db.begin():
        await db.execute(insert(MESSAGES), rows)


async def test_soft_delete_hides_a_session_and_restore_brings_it_back(database_url: str) -> None:
    async with bridge_with_users(make_settings(database_url), "alice") as (bridge, users):
        alice = users["alice"]
        kept = await alice.new_session(title="kept")
        gone = await alice.new_session(title="gone")
        sent = await alice.say(gone["id"], "remember this")
        await bridge.reply_to(sent["id"], state=MessageState.DELIVERED)

        deleted = (await alice.call("DELETE", f"/sessions/{gone['id']}")).ok()
        assert deleted["deleted_at"] is not None
        assert [s["id"] for s in (await alice.get("/sessions")).ok()["items"]] == [kept["id"]]
        with_deleted = (await alice.get("/sessions", include_deleted="true")).ok()["items"]
        assert {s["id"] for s in with_deleted} == {kept["id"], gone["id"]}
        history = (await alice.get(f"/sessions/{gone['id']}/messages")).ok()["items"]
        assert [m["content"] for m in history] == ["remember this", "remember this"]
        (await alice.post(f"/sessions/{gone['id']}/messages", {"text": "x"})).error(
            409, "session_deleted"
        )

        restored = (await alice.post(f"/sessions/{gone['id']}/restore")).ok()
        assert restored["deleted_at"] is None
        listed = {s["id"] for s in (await alice.get("/sessions")).ok()["items"]}
        assert listed == {kept["id"], gone["id"]}


async def _ingest_platform_sessions(bridge: RunningBridge) -> None:
    """Group conversations from other channels, as their adapters would store them."""
    for channel, conversation, group in (
        ("slack", "slack:T1:C1", "#general"),
        ("discord", "discord:G1:C1", "#chat in Guild"),
        ("feishu", "feishu:oc_1", "Team"),
    ):
        stored = await bridge.pipeline.ingest(
            InboundMessage(
                channel=channel,
                agent_slug="assistant",
                external_conv_id=conversation,
                external_message_id=f"{channel}-1",
                sender=Sender(external_id=f"{channel}-user", display_name="Pat"),
                text="hi all",
                is_group=True,
                group_name=group,
            )
        )
        # No such channel runs here: the reply fails, visibly.
        await bridge.reply_to(stored.message_id, state=MessageState.FAILED)


async def test_users_are_isolated_and_an_admin_sees_every_channel(database_url: str) -> None:
    async with bridge_with_users(
        make_settings(database_url), "alice", "bob", "root", admin="root"
    ) as (bridge, users):
        alice, bob, root = users["alice"], users["bob"], users["root"]
        mine = await alice.new_session(title="alice's")
        async with bob.live() as bob_live:
            sent = await alice.say(mine["id"], "private")
            await bridge.reply_to(sent["id"], state=MessageState.DELIVERED)
            own = await bob.new_session(title="bob's")
            await bob_live.next(lambda f: f["type"] == "session.updated")
            assert {f["session_id"] for f in bob_live.frames if "session_id" in f} == {own["id"]}

        before = await _counts(bridge)
        path = f"/sessions/{mine['id']}"
        for response in (
            await bob.get(path),
            await bob.get(path + "/messages"),
            await bob.post(path + "/messages", {"text": "let me in"}),
            await bob.call("PATCH", path, json={"title": "mine now"}),
            await bob.call("DELETE", path),
            await bob.post(path + "/restore"),
            await bob.get("/sessions/999999"),
        ):
            assert response.error(404, "not_found") == {
                "code": "not_found",
                "message": "no such session",
            }
        assert await _counts(bridge) == before
        assert [s["id"] for s in (await bob.get("/sessions")).ok()["items"]] == [own["id"]]
        assert (await alice.get(path)).ok()["title"] == "alice's"

        await _ingest_platform_sessions(bridge)
        everything = await root.all_pages("/sessions", "cursor", limit=2)
        assert {s["source_channel"] for s in everything} == {"web", "slack", "discord", "feishu"}
        slack = (await root.get("/sessions", channel="slack", is_group="true")).ok()["items"]
        assert [(s["external_conv_id"], s["group_name"]) for s in slack] == [
            ("slack:T1:C1", "#general")
        ]
        found = (await root.get("/sessions", q="GUILD")).ok()["items"]
        assert [s["source_channel"] for s in found] == ["discord"]
        assert (await root.get(f"/sessions/{mine['id']}/messages")).ok()["items"]
        (await root.post(f"/sessions/{slack[0]['id']}/messages", {"text": "hi"})).error(
            409, "read_only_session"
        )
        for name in ("alice", "bob"):
            listed = (await users[name].get("/sessions")).ok()["items"]
            assert {s["source_channel"] for s in listed} == {"web"}


async def test_the_websocket_brings_the_reply_and_catches_up_after_a_reconnect(
    database_url: str,
) -> None:
    async with user_with_session(make_settings(database_url)) as (bridge, alice, session):
        reply, last_seen = await live_exchange(alice, session["id"], "live please")
        assert reply["content"] == "live please" and reply["role"] == "assistant"

        # Offline: two more exchanges happen.
        missed = [await alice.say(session["id"], f"while away {i}") for i in range(2)]
        for message in missed:
            await bridge.reply_to(message["id"], state=MessageState.DELIVERED)

        async with alice.live() as live:
            await live.socket.send_json({"type": "resume", "last_event_id": last_seen})
            resumed = await live.next(lambda f: f["type"] == "resumed")
            assert resumed["replayed"] == len([f for f in live.frames if "id" in f])
            replayed = [f for f in live.frames if f["type"].startswith("message.")]
            contents = {(f["message"]["role"], f["message"]["content"]) for f in replayed}
            for i in range(2):
                assert ("user", f"while away {i}") in contents
                assert ("assistant", f"while away {i}") in contents
            delivered = {
                f["message"]["reply_to"]
                for f in replayed
                if f["message"]["delivery"] == "delivered"
            }
            assert delivered >= {m["id"] for m in missed}
            ids = [f["id"] for f in replayed]
            assert len(ids) == len(set(ids)), "each event once per connection"

            await live.socket.send_json({"type": "resume", "last_event_id": -1})
            error = await live.next(lambda f: f["type"] == "error")
            assert "last_event_id" in error["message"]

            # A resume point older than what is kept asks the client to reload.
            async with bridge.sessions() as db, db.begin():
                await db.execute(delete(CHANGES).where(CHANGES.c.id <= last_seen + 1))
            await resume_is_reset(live, last_seen)


async def test_a_revoked_token_stops_at_once_also_on_an_open_socket(database_url: str) -> None:
    async with bridge_with_users(make_settings(database_url), "alice") as (bridge, users):
        alice = users["alice"]
        (await alice.get("/me")).ok()
        async with alice.live() as live:
            await revoke_token(bridge.sessions, name="alice")
            (await alice.get("/me")).error(401, "unauthorized")
            async with asyncio.timeout(10):
                message = await live.socket.receive()
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert live.socket.close_code == 4401
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await alice.http.ws_connect(bridge.url + "/api/v1/ws", params={"token": alice.token})
        assert refused.value.status == 401


async def test_bad_input_is_refused_with_a_json_error_and_nothing_stored(
    database_url: str,
) -> None:
    async with user_with_session(make_settings(database_url)) as (bridge, alice, session):
        path = f"/sessions/{session['id']}/messages"
        before = await _counts(bridge)
        too_long = "é" * (32 * 1024 // 2 + 1)
        cases: list[tuple[ApiClient | None, str, str, dict[str, Any], int, str]] = [
            (alice, "POST", path, {"data": b"{not json"}, 400, "malformed_json"),
            (alice, "POST", path, {"json": ["a list"]}, 422, "invalid"),
            (alice, "POST", path, {"json": {"text": "hi", "colour": "red"}}, 422, "invalid"),
            (alice, "POST", path, {"json": {"text": ""}}, 422, "invalid"),
            (alice, "POST", path, {"json": {"text": "\x00"}}, 422, "invalid"),
            (alice, "POST", path, {"json": {"text": too_long}}, 422, "text_too_long"),
            (alice, "POST", path, {"json": {"text": 5}}, 422, "invalid"),
            (alice, "POST", "/sessions", {"json": {"agent": "nobody"}}, 422, "unknown_agent"),
            (alice, "POST", "/sessions", {"json": {"agent": "assistant", "x": 1}}, 422, "invalid"),
            (alice, "GET", "/sessions", {"params": {"cursor": "garbage"}}, 400, "bad_cursor"),
            (alice, "GET", "/sessions", {"params": {"limit": "0"}}, 422, "invalid"),
            (alice, "GET", "/sessions", {"params": {"is_group": "maybe"}}, 422, "invalid"),
            (alice, "GET", path, {"params": {"before": "garbage"}}, 400, "bad_cursor"),
            (alice, "GET", "/sessions/abc", {}, 404, "not_found"),
            (alice, "GET", "/sessions/99999999999999999999999", {}, 404, "not_found"),
            (alice, "GET", "/nowhere", {}, 404, "not_found"),
            (alice, "PUT", "/sessions", {}, 405, "method_not_allowed"),
            (alice, "POST", path, {"data": b"x" * 2_000_000}, 413, "payload_too_large"),
        ]
        for client, method, where, kwargs, status, code in cases:
            assert client is not None
            (await client.call(method, where, **kwargs)).error(status, code)
        page = (await alice.get("/sessions", limit=1)).ok()
        assert page["next_cursor"] is None
        message_cursor = (await alice.get(path)).ok()["next_cursor"]
        assert message_cursor is None
        anonymous = ApiClient(http=alice.http, base_url=bridge.url, token="brg_not-a-token")
        (await anonymous.get("/sessions")).error(401, "unauthorized")
        async with alice.http.get(bridge.url + "/api/v1/sessions") as response:
            assert response.status == 401
        assert await _counts(bridge) == before


async def test_old_events_are_pruned_and_a_resume_from_before_them_resyncs(
    database_url: str,
) -> None:
    async with user_with_session(make_settings(database_url)) as (bridge, alice, session):
        _, old_point = await live_exchange(alice, session["id"], "one")
        await alice.say(session["id"], "two")
        async with bridge.sessions() as db, db.begin():
            await db.execute(update(CHANGES).values(created_at=datetime(2020, 1, 1, tzinfo=UTC)))
        assert await bridge.app[LIVE].feed.prune() > 0
        async with alice.live() as live:
            await resume_is_reset(live, old_point)


async def test_an_agent_can_be_kept_off_the_web(database_url: str) -> None:
    settings = make_settings(
        database_url,
        agents=[
            {"slug": "assistant", "inmemory": {}},
            {"slug": "private", "web": {"enabled": False}},
        ],
    )
    async with bridge_with_users(settings, "alice") as (_bridge, users):
        alice = users["alice"]
        (await alice.post("/sessions", {"agent": "private"})).error(409, "channel_disabled")
        assert (await alice.new_session(agent="assistant"))["agent"] == "assistant"


async def test_local_sign_in_only_on_a_loopback_only_bridge(database_url: str) -> None:
    public = make_settings(database_url)
    public = public.model_copy(update={"http": public.http.model_copy(update={"host": "0.0.0.0"})})
    async with (
        running_bridge(public) as bridge,
        aiohttp.ClientSession() as http,
        http.post(bridge.url + "/api/v1/auth/dev-login") as refused,
    ):
        assert refused.status == 403
        assert (await refused.json())["error"]["code"] == "dev_login_disabled"
    async with (
        running_bridge(make_settings(database_url)) as bridge,
        aiohttp.ClientSession() as http,
    ):
        async with http.post(bridge.url + "/api/v1/auth/dev-login") as signed_in:
            token = (await signed_in.json())["token"]
        me = ApiClient(http=http, base_url=bridge.url, token=token)
        assert (await me.get("/me")).ok()["is_admin"] is True
