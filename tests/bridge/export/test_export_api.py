"""``GET /api/v1/sessions/{id}/export``: the same lines as ``bridge export --session``, streamed
to whoever may see the session; everyone else gets the 404 of a session that does not exist."""

from __future__ import annotations

import json

import aiohttp

from tests.bridge.export.support import add_messages, export
from tests.support.api import api_clients
from tests.support.harness import make_settings, running_bridge


async def test_a_member_gets_the_session_as_json_lines_and_others_a_404(
    database_url: str,
) -> None:
    settings = make_settings(database_url)
    async with (
        running_bridge(settings) as bridge,
        api_clients(bridge.url, bridge.sessions, "alice", "bob", "root", admin="root") as (clients),
    ):
        alice = clients["alice"]
        session = await alice.new_session(title="Plans")
        async with alice.live() as live:
            sent = await alice.say(session["id"], "hello")
            await live.reply_to(sent["id"])
        await add_messages(bridge.sessions, session["id"], 1_200)
        path = f"/api/v1/sessions/{session['id']}/export"

        async def get(name: str, target: str = path) -> tuple[int, dict[str, str], bytes]:
            headers = {"Authorization": f"Bearer {clients[name].token}"}
            async with alice.http.get(bridge.url + target, headers=headers) as response:
                return response.status, dict(response.headers), await response.read()

        status, headers, body = await get("alice")
        assert status == 200
        assert headers["Content-Type"] == "application/x-ndjson"
        assert headers["Content-Disposition"] == (
            f'attachment; filename="session-{session["id"]}.jsonl"'
        )
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers.get("Transfer-Encoding") == "chunked", "streamed, not buffered"
        assert "Content-Length" not in headers
        lines = [json.loads(line) for line in body.decode().splitlines()]
        assert lines[0]["type"] == "session" and lines[0]["id"] == session["id"]
        assert lines[0]["title"] == "Plans"
        messages = lines[1:]
        assert len(messages) == 2 + 1_200
        assert [m["id"] for m in messages] == sorted(m["id"] for m in messages)
        assert messages[0]["content"] == "hello" and messages[0]["sender"] == {
            "kind": "user",
            "channel": "web",
            "external_id": "alice",
            "display_name": "alice",
        }
        assert messages[1]["reply_to"] == sent["id"]

        assert (await get("root"))[2] == body, "an admin sees it too"
        missing_status, _, missing = await get("alice", "/api/v1/sessions/987654321/export")
        assert missing_status == 404
        assert json.loads(missing) == {"error": {"code": "not_found", "message": "no such session"}}
        other_status, other_headers, other = await get("bob")
        assert (other_status, other) == (404, missing), "exactly like a missing session"
        assert "Content-Disposition" not in other_headers
        async with (
            aiohttp.ClientSession() as anonymous,
            anonymous.get(bridge.url + path) as response,
        ):
            assert response.status == 401

    cli = await export(settings, "--session", str(session["id"]))
    assert cli.code == 0 and cli.output == body, "the route and the command write the same"
