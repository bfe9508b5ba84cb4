"""Workspaces over the real API on SQLite and PostgreSQL: tokens of each kind and what
``/me`` says of them; only the operator manages workspaces; a delete hides exactly one
workspace's sessions and stops its tokens at once, and a restore brings back exactly those."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bridge.api.tokens import TokenError, create_token, revoke_token
from bridge.store.models import TOKENS, WORKSPACES
from tests.support.api import ApiClient
from tests.support.harness import RunningBridge, make_settings, running_bridge

AGENTS = [
    {"slug": "assistant", "inmemory": {}},
    {"slug": "helper", "workspace": "acme", "inmemory": {}},
]


@asynccontextmanager
async def bridge_and_clients(
    database_url: str,
) -> AsyncIterator[tuple[RunningBridge, dict[str, ApiClient]]]:
    """The bridge with agents in ``default`` and ``acme``, and a client per kind of token:
    ``root`` the operator, ``boss`` acme's admin, ``carol`` a user of acme, ``alice`` a user
    with no workspace given (so of ``default``)."""
    kinds: dict[str, dict[str, Any]] = {
        "root": {"admin": True},
        "boss": {"admin": True, "workspace": "acme"},
        "carol": {"admin": False, "workspace": "acme"},
        "alice": {"admin": False},
    }
    async with (
        running_bridge(make_settings(database_url, agents=AGENTS)) as bridge,
        aiohttp.ClientSession() as http,
    ):
        clients = {
            name: ApiClient(
                http=http,
                base_url=bridge.url,
                token=await create_token(bridge.sessions, name=name, **kind),
            )
            for name, kind in kinds.items()
        }
        yield bridge, clients


async def token_workspaces(bridge: RunningBridge) -> dict[str, str | None]:
    async with bridge.sessions() as db:
        rows = await db.execute(
            select(TOKENS.c.name, WORKSPACES.c.slug).outerjoin(
                WORKSPACES, WORKSPACES.c.id == TOKENS.c.workspace_id
            )
        )
        return {name: slug for name, slug in rows}


async def test_each_kind_of_token_and_what_me_says(database_url: str) -> None:
    async with bridge_and_clients(database_url) as (bridge, clients):
        seen = {name: (await client.get("/me")).ok() for name, client in clients.items()}
        assert {name: (me["workspace"], me["is_admin"]) for name, me in seen.items()} == {
            "root": (None, True),
            "boss": ("acme", True),
            "carol": ("acme", False),
            "alice": ("default", False),
        }
        assert seen["carol"]["name"] == "carol"
        assert await token_workspaces(bridge) == {
            "root": None,
            "boss": "acme",
            "carol": "acme",
            "alice": "default",
        }

        with pytest.raises(TokenError, match="no workspace 'nope'"):
            await create_token(bridge.sessions, name="dave", admin=False, workspace="nope")
        with pytest.raises(TokenError, match="no workspace 'nope'"):
            await create_token(bridge.sessions, name="dave", admin=True, workspace="nope")
        assert "dave" not in await token_workspaces(bridge), "nothing was written"

        # A revoked token re-created under its name takes the new workspace.
        await revoke_token(bridge.sessions, name="carol")
        (await clients["carol"].get("/me")).error(401, "unauthorized")
        clients["carol"].token = await create_token(
            bridge.sessions, name="carol", admin=False, workspace="default"
        )
        assert (await clients["carol"].get("/me")).ok()["workspace"] == "default"


async def test_only_the_operator_manages_workspaces(database_url: str) -> None:
    async with bridge_and_clients(database_url) as (_bridge, clients):
        root = clients["root"]
        before = (await root.get("/workspaces")).ok()
        for name in ("boss", "carol", "alice"):
            client = clients[name]
            for response in (
                await client.get("/workspaces"),
                await client.post("/workspaces", {"slug": "mine"}),
                await client.post("/workspaces", {"not": "even valid"}),
                await client.call("DELETE", "/workspaces/acme"),
                await client.call("DELETE", "/workspaces/nope"),
                await client.post("/workspaces/acme/restore"),
                await client.post("/workspaces/nope/restore"),
            ):
                error = response.error(403, "forbidden")
                assert "nope" not in error["message"] and "acme" not in error["message"]
        assert (await root.get("/workspaces")).ok() == before, "nothing changed"
        for name in ("boss", "carol", "alice"):
            (await clients[name].get("/me")).ok()


async def test_the_operator_creates_and_lists_workspaces(database_url: str) -> None:
    async with bridge_and_clients(database_url) as (bridge, clients):
        root = clients["root"]
        created = (await root.post("/workspaces", {"slug": "beta", "name": "Beta team"})).ok(201)
        assert created["slug"] == "beta" and created["name"] == "Beta team"
        assert created["deleted_at"] is None
        assert (created["agents"], created["active_tokens"]) == (0, 0)
        unnamed = (await root.post("/workspaces", {"slug": "gamma"})).ok(201)
        assert unnamed["name"] == "gamma"

        again = (await root.post("/workspaces", {"slug": "beta"})).error(409, "conflict")
        assert "'beta' exists already" in again["message"]
        for bad in ({"slug": "Beta"}, {"slug": "-x"}, {"slug": ""}, {"slug": "a", "extra": 1}):
            (await root.post("/workspaces", bad)).error(422, "invalid")

        listed = (await root.get("/workspaces")).ok()["items"]
        assert [(w["slug"], w["agents"], w["active_tokens"]) for w in listed] == [
            ("acme", 1, 2),
            ("beta", 0, 0),
            ("default", 1, 1),
            ("gamma", 0, 0),
        ]
        token = await create_token(bridge.sessions, name="bea", admin=False, workspace="beta")
        assert token.startswith("brg_")
        beta = [w for w in (await root.get("/workspaces")).ok()["items"] if w["slug"] == "beta"]
        assert beta[0]["active_tokens"] == 1

        for path in ("/workspaces/nope", "/workspaces/NOT-A-SLUG!"):
            (await root.call("DELETE", path)).error(404, "not_found")
            (await root.post(path + "/restore")).error(404, "not_found")


async def session_of(client: ApiClient, session_id: int) -> dict[str, Any]:
    return dict((await client.get(f"/sessions/{session_id}")).ok())


async def test_delete_hides_one_workspace_and_restore_brings_back_exactly_that(
    database_url: str,
) -> None:
    async with bridge_and_clients(database_url) as (bridge, clients):
        root, boss, carol, alice = (clients[n] for n in ("root", "boss", "carol", "alice"))
        kept = await carol.new_session("helper", "kept")
        other = await carol.new_session("helper", "other")
        gone_before = await carol.new_session("helper", "deleted before")
        (await carol.call("DELETE", f"/sessions/{gone_before['id']}")).ok()
        default_session = await alice.new_session("assistant", "in default")
        old = ApiClient(
            http=carol.http,
            base_url=carol.base_url,
            token=await create_token(bridge.sessions, name="old", admin=False, workspace="acme"),
        )
        await revoke_token(bridge.sessions, name="old")
        revoked_before = await token_workspaces(bridge)
        assert "old" in revoked_before

        async with root.live() as live:
            deleted = (await root.call("DELETE", "/workspaces/acme")).ok()
            assert deleted["slug"] == "acme" and deleted["deleted_at"] is not None
            assert deleted["active_tokens"] == 0
            hidden: dict[int, str] = {}
            while set(hidden) != {kept["id"], other["id"]}:
                frame = await live.next(lambda f: f["type"] == "session.updated")
                if frame["session"]["deleted_at"] is not None:
                    hidden[frame["session_id"]] = frame["session"]["deleted_at"]
            assert set(hidden.values()) == {deleted["deleted_at"]}

        # Its tokens stop at once; the other workspace is untouched.
        for client in (boss, carol):
            (await client.get("/sessions")).error(401, "unauthorized")
        assert (await alice.get("/me")).ok()["workspace"] == "default"
        assert (await session_of(alice, default_session["id"]))["deleted_at"] is None
        for session in (kept, other):
            assert (await session_of(root, session["id"]))["deleted_at"] == deleted["deleted_at"]
        deleted_earlier = (await session_of(root, gone_before["id"]))["deleted_at"]
        assert deleted_earlier is not None and deleted_earlier != deleted["deleted_at"]

        (await root.call("DELETE", "/workspaces/acme")).error(409, "conflict")
        with pytest.raises(TokenError, match="'acme' is deleted"):
            await create_token(bridge.sessions, name="eve", admin=False, workspace="acme")
        listed = {w["slug"]: w for w in (await root.get("/workspaces")).ok()["items"]}
        assert listed["acme"]["deleted_at"] == deleted["deleted_at"]
        assert listed["default"]["deleted_at"] is None

        restored = (await root.post("/workspaces/acme/restore")).ok()
        assert restored["deleted_at"] is None and restored["active_tokens"] == 2
        assert (await carol.get("/me")).ok()["workspace"] == "acme"
        assert (await boss.get("/me")).ok()["is_admin"] is True
        (await old.get("/me")).error(401, "unauthorized")
        visible = {s["id"] for s in (await carol.get("/sessions")).ok()["items"]}
        assert visible == {kept["id"], other["id"]}
        for session in (kept, other):
            assert (await session_of(carol, session["id"]))["deleted_at"] is None
        assert (await session_of(root, gone_before["id"]))["deleted_at"] == deleted_earlier
        (await root.post("/workspaces/acme/restore")).error(409, "conflict")


async def test_default_can_be_deleted_like_any_other(database_url: str) -> None:
    async with bridge_and_clients(database_url) as (bridge, clients):
        root, alice, carol = clients["root"], clients["alice"], clients["carol"]
        mine = await alice.new_session("assistant")
        (await root.call("DELETE", "/workspaces/default")).ok()
        (await alice.get("/me")).error(401, "unauthorized")
        (await carol.get("/me")).ok()
        (await root.get("/me")).ok()  # the operator belongs to no workspace
        with pytest.raises(TokenError, match="'default' is deleted"):
            await create_token(bridge.sessions, name="frank", admin=False)
        assert (await session_of(root, mine["id"]))["deleted_at"] is not None
        (await root.post("/workspaces/default/restore")).ok()
        assert (await session_of(alice, mine["id"]))["deleted_at"] is None
