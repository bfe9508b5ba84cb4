"""A rate limit holds across processes: two bridges on one PostgreSQL count one user's
messages in the database, in the transaction that stores each of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from bridge.store.models import MessageState
from tests.support.api import ApiClient, token_for
from tests.support.processes import bridge_database, serving_bridge, wait_until, write_toml

LIMITED_TEXT = "One moment: you are over your hourly messages."
AGENTS = [
    {
        "slug": "assistant",
        "limits": {"user_messages_per_hour": 3, "limited_text": LIMITED_TEXT},
    }
]


@asynccontextmanager
async def two_bridges(
    postgres_url: str, tmp_path: Path
) -> AsyncIterator[tuple[ApiClient, ApiClient, ApiClient]]:
    """Alice's client on each of two processes, and an admin's on the first."""
    config = write_toml(
        tmp_path / "bridge.toml", {"database": {"url": postgres_url}, "agents": AGENTS}
    )
    async with bridge_database(postgres_url, AGENTS) as db:
        alice = await token_for(db.sessions, "alice")
        root = await token_for(db.sessions, "root", admin=True)
    async with (
        serving_bridge(config, cwd=tmp_path) as first,
        serving_bridge(config, cwd=tmp_path) as second,
        aiohttp.ClientSession() as http,
    ):
        assert first.url != second.url
        yield (
            ApiClient(http=http, base_url=first.url, token=alice),
            ApiClient(http=http, base_url=second.url, token=alice),
            ApiClient(http=http, base_url=first.url, token=root),
        )


async def settled_history(admin: ApiClient, session_id: int) -> list[dict[str, Any]]:
    """The session's messages once three replies and the note are delivered."""
    items: list[dict[str, Any]] = []

    async def done() -> bool:
        nonlocal items
        items = await admin.all_pages(f"/sessions/{session_id}/messages", "before")
        replies = [m for m in items if m["role"] != "user"]
        return len(replies) >= 4 and all(m["delivery"] == "delivered" for m in replies)

    await wait_until(done, within=30, what="three replies and the note delivered")
    return items


def check_history(items: list[dict[str, Any]], limited_ids: list[int]) -> None:
    users = [m for m in items if m["role"] == "user"]
    assert len(users) == 5
    assert sorted(m["id"] for m in users if m["state"] == MessageState.LIMITED) == limited_ids
    answered = [m["id"] for m in users if m["state"] == MessageState.ANSWERED]
    assert len(answered) == 3
    replies = [m for m in items if m["role"] == "assistant"]
    assert sorted(m["reply_to"] for m in replies) == sorted(answered)
    (note,) = [m for m in items if m["role"] == "system"]
    assert note["content"] == LIMITED_TEXT
    assert note["reply_to"] == min(limited_ids), "the first limited message gets the note"
    assert len(items) == 9


async def test_five_messages_over_two_processes_give_three_answers_and_one_note(
    postgres_url: str, tmp_path: Path
) -> None:
    async with two_bridges(postgres_url, tmp_path) as (on_first, on_second, admin):
        session = await on_first.new_session(title="limited")
        sent = []
        for n in range(5):
            client = on_first if n % 2 == 0 else on_second
            sent.append(await client.say(session["id"], f"message {n}"))
        # The answer worker may have picked up an accepted message already.
        assert [m["state"] == MessageState.LIMITED for m in sent] == [False] * 3 + [True] * 2
        assert sent[3]["error"] == "over the limit of messages per hour"
        items = await settled_history(admin, session["id"])
        check_history(items, [sent[3]["id"], sent[4]["id"]])
        by_id = {m["id"]: m for m in items}
        assert [by_id[m["id"]]["state"] for m in sent[:3]] == [MessageState.ANSWERED] * 3


async def test_a_burst_to_both_processes_at_once_is_limited_exactly(
    postgres_url: str, tmp_path: Path
) -> None:
    async with two_bridges(postgres_url, tmp_path) as (on_first, on_second, admin):
        session = await on_second.new_session(title="burst")
        sent = await asyncio.gather(
            *(
                (on_first if n % 2 == 0 else on_second).say(session["id"], f"burst {n}")
                for n in range(5)
            )
        )
        assert sum(m["state"] == MessageState.LIMITED for m in sent) == 2
        limited = sorted(m["id"] for m in sent if m["state"] == MessageState.LIMITED)
        items = await settled_history(admin, session["id"])
        check_history(items, limited)
