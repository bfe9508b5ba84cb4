"""``message.delta`` frames: a web reply's text while it is written, to those who may see it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.support.api import ApiClient, LiveSocket, api_clients, token_for
from tests.support.harness import make_settings, running_bridge
from tests.support.processes import bridge_database, serving_bridge, write_toml


def streaming_echo(chunk_chars: int, delay_ms: int) -> dict[str, Any]:
    return {
        "slug": "assistant",
        "echo_stream_chunk_chars": chunk_chars,
        "echo_stream_delay_ms": delay_ms,
    }


async def deltas_until_reply(live: LiveSocket, message_id: int) -> tuple[list[str], str]:
    """The delta texts for the reply to ``message_id``, and the stored reply's content."""
    reply = await live.reply_to(message_id, within=20)
    texts = [
        frame["text"]
        for frame in live.frames
        if frame["type"] == "message.delta" and frame["reply_to"] == message_id
    ]
    return texts, str(reply["content"])


def assert_grew(texts: list[str], final: str) -> None:
    assert texts, "no delta frame before the reply"
    assert texts[0] != final, "the first delta already had the whole reply"
    assert all(final.startswith(text) for text in texts)
    assert [len(t) for t in texts] == sorted(len(t) for t in texts)


async def test_a_web_reply_grows_in_delta_frames_then_arrives_whole(database_url: str) -> None:
    text = "streamed over the socket, " * 8
    settings = make_settings(database_url, agents=[streaming_echo(8, 15)])
    async with (
        running_bridge(settings) as bridge,
        api_clients(bridge.url, bridge.sessions, "alice", "bob") as clients,
    ):
        alice, bob = clients["alice"], clients["bob"]
        async with alice.live() as alice_live, bob.live() as bob_live:
            session = await alice.new_session()
            sent = await alice.say(session["id"], text)
            texts, final = await deltas_until_reply(alice_live, sent["id"])
            assert final == text
            assert_grew(texts, final)
            delta = next(f for f in alice_live.frames if f["type"] == "message.delta")
            assert set(delta) == {"type", "session_id", "reply_to", "text"}
            assert delta["session_id"] == session["id"]
            # Bob may not see Alice's session: none of its deltas reach him.
            own = await bob.new_session()
            mine = await bob.say(own["id"], "bob's own")
            await bob_live.reply_to(mine["id"], within=20)
            assert not [
                f
                for f in bob_live.frames
                if f["type"] == "message.delta" and f["session_id"] == session["id"]
            ]
        history = (await alice.get(f"/sessions/{session['id']}/messages")).ok()
        assert [m["content"] for m in history["items"]] == [text, text]


async def test_deltas_reach_clients_of_another_process(postgres_url: str, tmp_path: Path) -> None:
    """On PostgreSQL a delta is a NOTIFY: a client on the other process sees the text grow,
    also past the size of one payload (the delta travels in pieces)."""
    agents = [streaming_echo(700, 40)]
    config = write_toml(
        tmp_path / "bridge.toml", {"database": {"url": postgres_url}, "agents": agents}
    )
    async with bridge_database(postgres_url, agents) as db:
        token = await token_for(db.sessions, "alice")
    text = "".join(f"line {n}: é漢字 streamed across processes\n" for n in range(150))
    async with (
        serving_bridge(config, cwd=tmp_path) as first,
        serving_bridge(config, cwd=tmp_path) as second,
        aiohttp.ClientSession() as http,
    ):
        on_first = ApiClient(http=http, base_url=first.url, token=token)
        on_second = ApiClient(http=http, base_url=second.url, token=token)
        async with on_first.live() as live:
            session = await on_second.new_session()
            sent = await on_second.say(session["id"], text)
            texts, final = await deltas_until_reply(live, sent["id"])
        assert final == text
        assert_grew(texts, final)
        assert max(len(t) for t in texts) > 1_500
