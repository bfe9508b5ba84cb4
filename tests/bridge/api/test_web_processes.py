"""Two bridge processes on one PostgreSQL: a live client of one sees what the other stores."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.support.api import ApiClient, token_for
from tests.support.processes import bridge_database, serving_bridge, write_toml

AGENTS = [{"slug": "assistant"}]


async def test_an_event_from_either_process_reaches_every_live_client(
    postgres_url: str, tmp_path: Path
) -> None:
    config = write_toml(
        tmp_path / "bridge.toml",
        {"database": {"url": postgres_url}, "agents": AGENTS},
    )
    async with bridge_database(postgres_url, AGENTS) as db:
        alice_token = await token_for(db.sessions, "alice")
        root_token = await token_for(db.sessions, "root", admin=True)
    async with (
        serving_bridge(config, cwd=tmp_path) as first,
        serving_bridge(config, cwd=tmp_path) as second,
        aiohttp.ClientSession() as http,
    ):
        assert first.url and second.url and first.url != second.url
        on_first = ApiClient(http=http, base_url=first.url, token=alice_token)
        on_second = ApiClient(http=http, base_url=second.url, token=alice_token)
        admin_on_second = ApiClient(http=http, base_url=second.url, token=root_token)
        async with on_first.live() as alice_live, admin_on_second.live() as admin_live:
            session = await on_second.new_session(title="across")
            for live in (alice_live, admin_live):
                created = await live.next(lambda f: f["type"] == "session.updated")
                assert created["session"]["title"] == "across"

            sent = await on_second.say(session["id"], "from the second process")
            for live in (alice_live, admin_live):
                reply = await live.reply_to(sent["id"], within=15)
                assert reply["content"] == "from the second process"

            sent = await on_first.say(session["id"], "and from the first")
            for live in (alice_live, admin_live):
                reply = await live.reply_to(sent["id"], within=15)
                assert reply["content"] == "and from the first"
