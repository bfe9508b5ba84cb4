"""Workspaces see only their own: sessions, messages, agents, usage, access and live events,
for a user and an admin of each, while the operator sees everything. Real bridge, SQLite and
PostgreSQL; globex's objects are asked for by acme and must look exactly like missing ones."""

from __future__ import annotations

from typing import Any

from bridge.api.live import LIVE
from bridge.appkeys import AGENTS
from tests.bridge.workspaces.isolation import (
    SECRET,
    Globex,
    globex_state,
    leaks,
    two_workspace_settings,
    two_workspaces,
)
from tests.support.api import ApiClient, ApiResponse, LiveSocket
from tests.support.harness import make_settings


def same_error(got: ApiResponse, missing: ApiResponse, real: str, ghost: str) -> None:
    """``got`` (asked for ``real``, another workspace's) answers as ``missing`` (asked for
    ``ghost``, which does not exist): same status, same body but for the name sent."""
    assert got.status == missing.status and got.status >= 400, (got, missing)
    assert got.body == _replaced(missing.body, ghost, real), (got.body, missing.body)


def _replaced(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {key: _replaced(item, old, new) for key, item in value.items()}
    return value


async def session_ids(client: ApiClient, **params: Any) -> set[int]:
    return {s["id"] for s in await client.all_pages("/sessions", "cursor", **params)}


async def test_each_workspace_sees_only_its_sessions_messages_agents_and_usage(
    database_url: str,
) -> None:
    async with two_workspaces(two_workspace_settings(database_url)) as (bridge, clients):
        acme_user, acme_admin = clients["acme_user"], clients["acme_admin"]
        globex_user, globex_admin = clients["globex_user"], clients["globex_admin"]
        operator = clients["operator"]

        acme = await acme_user.new_session("acme-bot", "acme plans")
        said = await acme_user.say(acme["id"], "hello from acme")
        await bridge.reply_to(said["id"], state="delivered")
        globex = await globex_user.new_session("globex-bot", f"plans {SECRET}")
        said = await globex_user.say(globex["id"], f"the code is {SECRET}")
        await bridge.reply_to(said["id"], state="delivered")
        desk = await globex_user.new_session("globex-desk")
        refused = await globex_user.post(f"/sessions/{desk['id']}/messages", {"text": "hi"})
        refused.error(403, "pairing_required")
        acme_admins_own = await acme_admin.new_session("acme-peer")

        # Sessions: a user its own, an admin its workspace's, the operator all.
        assert await session_ids(acme_user) == {acme["id"]}
        assert await session_ids(acme_admin) == {acme["id"], acme_admins_own["id"]}
        assert await session_ids(acme_admin, agent="globex-bot") == set()
        assert await session_ids(globex_admin) == {globex["id"], desk["id"]}
        assert await session_ids(operator) >= {
            acme["id"],
            acme_admins_own["id"],
            globex["id"],
            desk["id"],
        }
        for client in (acme_user, acme_admin):
            for path in (f"/sessions/{globex['id']}", f"/sessions/{globex['id']}/messages"):
                same_error(await client.get(path), await client.get("/sessions/999999999"), "", "")
        history = (await acme_admin.get(f"/sessions/{acme['id']}/messages")).ok()["items"]
        assert [m["content"] for m in history] == ["hello from acme", "hello from acme"]
        history = (await operator.get(f"/sessions/{globex['id']}/messages")).ok()["items"]
        assert SECRET in history[0]["content"]
        assert (await globex_admin.get(f"/sessions/{globex['id']}")).ok()["title"].endswith(SECRET)

        # Agents: the workspace's; a foreign one cannot be talked to, like a missing one.
        async def slugs(client: ApiClient) -> list[str]:
            return [a["slug"] for a in (await client.get("/agents")).ok()["items"]]

        assert await slugs(acme_user) == ["acme-bot", "acme-peer"]
        assert await slugs(acme_admin) == ["acme-bot", "acme-peer"]
        assert await slugs(globex_user) == ["globex-bot", "globex-desk"]
        assert await slugs(operator) == ["acme-bot", "acme-peer", "globex-bot", "globex-desk"]
        for client in (acme_user, acme_admin):
            same_error(
                await client.post("/sessions", {"agent": "globex-bot"}),
                await client.post("/sessions", {"agent": "ghost-bot"}),
                "globex-bot",
                "ghost-bot",
            )

        # Usage: the workspace's agents' figures, refusals included; the operator's all.
        def figures(report: dict[str, Any]) -> dict[str, tuple[int, int]]:
            return {row["agent"]: (row["answered"], row["refused"]) for row in report["items"]}

        assert figures((await acme_admin.get("/usage")).ok()) == {"acme-bot": (1, 0)}
        assert figures((await globex_admin.get("/usage")).ok()) == {
            "globex-bot": (1, 0),
            "globex-desk": (0, 1),
        }
        assert figures((await operator.get("/usage")).ok()) == {
            "acme-bot": (1, 0),
            "globex-bot": (1, 0),
            "globex-desk": (0, 1),
        }
        same_error(
            await acme_admin.get("/usage", agent="globex-desk"),
            await acme_admin.get("/usage", agent="ghost-desk"),
            "globex-desk",
            "ghost-desk",
        )
        assert figures((await globex_admin.get("/usage", agent="globex-desk")).ok()) == {
            "globex-desk": (0, 1)
        }


async def test_access_of_another_workspaces_agent_is_not_found_and_left_alone(
    database_url: str,
) -> None:
    """Approving a globex code, listing or revoking a globex approval: 404 for acme's admin,
    as for a code or agent that does not exist, and globex's grants and codes stay."""
    settings = two_workspace_settings(database_url)
    async with two_workspaces(settings, ("carol", "globex"), ("dave", "globex")) as (
        bridge,
        clients,
    ):
        acme_admin, globex_admin = clients["acme_admin"], clients["globex_admin"]
        codes = []
        for name in ("carol", "dave"):
            session = await clients[name].new_session("globex-desk")
            refused = await clients[name].post(
                f"/sessions/{session['id']}/messages", {"text": "hi"}
            )
            codes.append(refused.error(403, "pairing_required")["message"].split("code: ")[1][:8])
        approved = (await globex_admin.post("/access/approve", {"code": codes[0]})).ok()
        assert approved == {"agent": "globex-desk", "identity": "web:carol"}
        before = await globex_state(bridge)

        same_error(
            await acme_admin.post("/access/approve", {"code": codes[1]}),
            await acme_admin.post("/access/approve", {"code": "ZZZZ2222"}),
            codes[1],
            "ZZZZ2222",
        )
        same_error(
            await acme_admin.get("/agents/globex-desk/access"),
            await acme_admin.get("/agents/ghost-desk/access"),
            "globex-desk",
            "ghost-desk",
        )
        same_error(
            await acme_admin.call("DELETE", "/agents/globex-desk/access/web:carol"),
            await acme_admin.call("DELETE", "/agents/ghost-desk/access/web:carol"),
            "globex-desk",
            "ghost-desk",
        )
        assert await globex_state(bridge) == before
        assert [
            g["identity"]
            for g in (await globex_admin.get("/agents/globex-desk/access")).ok()["items"]
        ] == ["web:carol"]
        # The code acme's admin tried is still good for globex's admin.
        assert (await globex_admin.post("/access/approve", {"code": codes[1]})).ok()[
            "identity"
        ] == "web:dave"
        assert (await clients["operator"].get("/agents/globex-desk/access")).ok()["items"]


def globex_frames(live: LiveSocket, globex: Globex) -> list[dict[str, Any]]:
    return [frame for frame in live.frames if leaks(frame, globex)]


async def test_live_events_and_resume_stay_in_the_workspace(database_url: str) -> None:
    """acme's user and admin get nothing of globex on their sockets, deltas included, live or
    replayed after a gap; the operator gets both workspaces."""
    async with two_workspaces(two_workspace_settings(database_url)) as (bridge, clients):
        acme_user, acme_admin = clients["acme_user"], clients["acme_admin"]
        globex_user, operator = clients["globex_user"], clients["operator"]
        acme = await acme_user.new_session("acme-bot")
        globex_session = await globex_user.new_session("globex-bot", f"t {SECRET}")
        globex = Globex(session_ids={globex_session["id"]})

        async with (
            acme_user.live() as user_live,
            acme_admin.live() as admin_live,
            operator.live() as operator_live,
        ):
            resume_from = operator_live.ready["last_event_id"]
            said = await globex_user.say(globex_session["id"], f"{SECRET} " * 12)
            seen = await operator_live.reply_to(said["id"], within=20)
            assert SECRET in seen["content"]
            assert any(
                f["type"] == "message.delta" and f["session_id"] == globex_session["id"]
                for f in operator_live.frames
            ), "the operator gets globex's deltas"
            # acme talks after globex: its frames come behind any globex frame.
            mine = await acme_user.say(acme["id"], "acme after the others")
            await user_live.reply_to(mine["id"])
            await admin_live.reply_to(mine["id"])
            await operator_live.reply_to(mine["id"])
            assert globex_frames(user_live, globex) == []
            assert globex_frames(admin_live, globex) == []
            assert {f.get("session_id") for f in operator_live.frames} >= {
                acme["id"],
                globex_session["id"],
            }

        # A gap: both workspaces talk while nobody is connected, then each resumes.
        said = await globex_user.say(globex_session["id"], f"later {SECRET}")
        await bridge.reply_to(said["id"], state="delivered")
        later = await acme_user.say(acme["id"], "acme later")
        await bridge.reply_to(later["id"], state="delivered")
        # The catch-up is scoped in SQL: a page for acme's workspace reads no globex event.
        feed, acme_workspace = (
            bridge.app[LIVE].feed,
            bridge.app[AGENTS].get("acme-bot").workspace_id,
        )
        catch_up = await feed.catch_up(resume_from, max_events=1000)
        page = await feed.replay_page(
            catch_up, since=0, participant_id=None, workspace_id=acme_workspace, limit=1000
        )
        assert page and {change.session_id for change in page} == {acme["id"]}
        page = await feed.replay_page(catch_up, since=0, participant_id=None, limit=1000)
        assert {change.session_id for change in page} == {acme["id"], globex_session["id"]}

        for client, sees_globex in ((acme_user, False), (acme_admin, False), (operator, True)):
            async with client.live() as live:
                await live.socket.send_json({"type": "resume", "last_event_id": resume_from})
                resumed = await live.next(lambda f: f["type"] == "resumed", within=10)
                assert resumed["replayed"] > 0
                contents = {f["message"]["content"] for f in live.frames if "message" in f}
                assert "acme later" in contents
                assert bool(globex_frames(live, globex)) == sees_globex, live.frames
                if sees_globex:
                    assert f"later {SECRET}" in contents


async def test_asks_across_workspaces_need_both_agents_to_list_each_other(
    database_url: str,
) -> None:
    agents = [
        {"slug": "acme-bot", "workspace": "acme", "peers": ["globex-bot"], "inmemory": {}},
        {"slug": "acme-peer", "workspace": "acme", "peers": ["globex-desk"], "inmemory": {}},
        {"slug": "globex-bot", "workspace": "globex", "inmemory": {}},
        {"slug": "globex-desk", "workspace": "globex", "peers": ["acme-peer"], "inmemory": {}},
    ]
    settings = make_settings(database_url, agents=agents)
    async with two_workspaces(settings) as (bridge, clients):
        acme_admin, globex_admin = clients["acme_admin"], clients["globex_admin"]
        operator, acme_user = clients["operator"], clients["acme_user"]

        def ask(frm: str, text: str) -> dict[str, Any]:
            return {"from_agent": frm, "text": text}

        # One-sided: acme-bot lists globex-bot, globex-bot does not list it back.
        refused = await operator.post("/agents/globex-bot/messages", ask("acme-bot", "hi"))
        assert "another workspace" in refused.error(403, "not_a_peer")["message"]
        same_error(
            await acme_admin.post("/agents/globex-bot/messages", ask("acme-bot", "hi")),
            await acme_admin.post("/agents/ghost-bot/messages", ask("acme-bot", "hi")),
            "globex-bot",
            "ghost-bot",
        )
        # A workspace admin speaks only as its own agents.
        same_error(
            await globex_admin.post("/agents/globex-desk/messages", ask("acme-peer", "hi")),
            await globex_admin.post("/agents/globex-desk/messages", ask("ghost-peer", "hi")),
            "acme-peer",
            "ghost-peer",
        )
        (await acme_user.post("/agents/acme-peer/messages", ask("acme-bot", "hi"))).error(403)
        assert await bridge.messages() == []

        # Mutual: acme-peer and globex-desk list each other, whoever asks.
        for client, sender, target in (
            (operator, "acme-peer", "globex-desk"),
            (acme_admin, "acme-peer", "globex-desk"),
            (globex_admin, "globex-desk", "acme-peer"),
        ):
            answer = (
                await client.post(f"/agents/{target}/messages?wait=10", ask(sender, "ping"))
            ).ok(200)
            assert answer["content"] == "ping" and answer["role"] == "assistant"

        # The agent list shows a peer of another workspace only when it lists the agent back.
        listed = {a["slug"]: a["peers"] for a in (await acme_user.get("/agents")).ok()["items"]}
        assert listed == {"acme-bot": [], "acme-peer": ["globex-desk"]}
