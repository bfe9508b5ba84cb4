"""``GET /api/v1/sessions/{id}/summary`` over HTTP on both databases: admins who may see the
session read its long memory; a user is refused; an admin of another workspace, or any admin
for a session that does not exist, gets the same 404."""

from __future__ import annotations

import aiohttp

from bridge.api.tokens import create_token
from tests.bridge.memory.conversation import remembering_agent, say
from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.api import ApiClient
from tests.support.harness import make_settings, running_bridge


async def test_admins_read_the_summary_users_may_not(
    database_url: str, model: FakeOpenAIServer
) -> None:
    elsewhere = {"slug": "other-agent", "workspace": "other", "inmemory": {}}
    settings = make_settings(database_url, agents=[remembering_agent(model), elsewhere])
    async with running_bridge(settings) as bridge, aiohttp.ClientSession() as http:

        async def client(
            name: str, *, admin: bool = False, workspace: str | None = None
        ) -> ApiClient:
            minted = await create_token(
                bridge.sessions, name=name, admin=admin, workspace=workspace
            )
            return ApiClient(http=http, base_url=bridge.url, token=minted)

        operator = await client("operator", admin=True)
        default_admin = await client("default-admin", admin=True, workspace="default")
        other_admin = await client("other-admin", admin=True, workspace="other")
        user = await client("someone")

        memory = bridge.memory()
        await say(memory, model, "m1")
        session_id = (await bridge.messages())[0].session_id
        path = f"/sessions/{session_id}/summary"
        empty = (await operator.get(path)).ok()
        assert empty == {
            "session_id": session_id,
            "summary": None,
            "through_message_id": None,
            "updated_at": None,
        }
        for text in ("m2", "m3", "m4"):
            await say(memory, model, text)
        first = (await bridge.messages())[0]
        for admin in (operator, default_admin):
            shown = (await admin.get(path)).ok()
            assert shown["summary"] == "[Ada: m1; Assistant: re: m1]"
            assert shown["through_message_id"] == first.id
            assert shown["updated_at"] is not None

        (await user.get(path)).error(403, "forbidden")
        (await other_admin.get(path)).error(404, "not_found")
        (await operator.get("/sessions/987654321/summary")).error(404, "not_found")
        (await operator.get("/sessions/nope/summary")).error(404, "not_found")

        await memory.receive("/reset")
        await memory.next_sent()
        cleared = (await operator.get(path)).ok()
        assert (cleared["summary"], cleared["through_message_id"], cleared["updated_at"]) == (
            None,
            None,
            None,
        )
