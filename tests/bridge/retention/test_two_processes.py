"""Two bridge processes on one PostgreSQL share one retention job: every old message is purged
once and every idle session archived once (summed over both processes' counters), the lease
moves to the other process when its holder stops, and both keep answering meanwhile."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import aiohttp
from sqlalchemy import update

from bridge.store.models import MESSAGES, MessageState, utcnow
from tests.bridge.retention.rows import (
    AGENTS,
    age_messages,
    answered,
    archived_count,
    idle_since,
    purged_count,
    stored,
)
from tests.support.api import ApiClient, token_for
from tests.support.metrics import metric
from tests.support.processes import (
    BridgeDatabase,
    BridgeProcess,
    bridge_database,
    serving_bridge,
    wait_until,
    write_toml,
)

PURGED = "bridge_retention_messages_purged_total"
BEFORE_STUCK = AFTER_STUCK = 30
"""Old messages before and after the stuck one (ten in each of three sessions)."""
IDLE = 6
ARCHIVED = "bridge_retention_sessions_archived_total"


async def seed(db: BridgeDatabase) -> int:
    """60 old answered messages in six idle sessions and, between them, one old reply stuck
    in delivery (a claim that runs for an hour): it holds retention's scan until it is done.
    Returns the stuck message's id."""
    old: list[int] = []
    idle: list[int] = []
    for n in range(3):
        session_id, ids = await stored(db, 10, conversation=f"conv-{n}")
        old += ids
        idle.append(session_id)
    _, (stuck,) = await stored(db, 1, conversation="stuck")
    for n in range(3, 6):
        session_id, ids = await stored(db, 10, conversation=f"conv-{n}")
        old += ids
        idle.append(session_id)
    await age_messages(db, [*old, stuck], days=3)
    async with db.sessions() as connection, connection.begin():
        await connection.execute(
            update(MESSAGES)
            .where(MESSAGES.c.id == stuck)
            .values(
                state=MessageState.DELIVERING,
                claimed_by="a-process-elsewhere",
                claim_expires_at=utcnow() + timedelta(hours=1),
            )
        )
    for session_id in idle:
        await idle_since(db, session_id, days=2)
    return stuck


async def read(process: BridgeProcess, name: str) -> float:
    """One counter off a process's ``/metrics`` (it serves them as the in-process app does)."""
    return await metric(process, name)  # type: ignore[arg-type]


async def total(processes: list[BridgeProcess], name: str) -> float:
    return sum([await read(process, name) for process in processes])


async def test_two_processes_purge_and_archive_once_and_hand_the_job_over(
    postgres_url: str, tmp_path: Path
) -> None:
    config = write_toml(
        tmp_path / "bridge.toml",
        {
            "database": {"url": postgres_url},
            "agents": AGENTS,
            "retention": {
                "message_days": 1,
                "idle_session_days": 1,
                "interval_seconds": 0.2,
                "batch_size": 7,
            },
        },
    )
    async with bridge_database(postgres_url, AGENTS) as db:
        stuck = await seed(db)
        alice = await token_for(db.sessions, "alice")
        async with (
            serving_bridge(config, cwd=tmp_path) as first,
            serving_bridge(config, cwd=tmp_path) as second,
            aiohttp.ClientSession() as http,
        ):
            both = [first, second]
            clients = {p.pid: ApiClient(http=http, base_url=p.url, token=alice) for p in both}

            async def counted(purged: int, archived: int) -> bool:
                return (await total(both, PURGED), await total(both, ARCHIVED)) == (
                    purged,
                    archived,
                )

            await wait_until(
                lambda: counted(BEFORE_STUCK, IDLE),
                within=30,
                what="the messages before the stuck one",
            )
            assert await purged_count(db) == BEFORE_STUCK and await archived_count(db) == IDLE
            for process in both:  # both answer while retention runs
                session = await clients[process.pid].new_session(title=f"live {process.pid}")
                await answered(clients[process.pid], session["id"], f"hi {process.pid}")

            # The holder stops (and releases the lease); the other takes the job over.
            by_purged = {p.pid: await read(p, PURGED) for p in both}
            holder = max(both, key=lambda p: by_purged[p.pid])
            survivor = second if holder is first else first
            assert sorted(by_purged.values()) == [0, BEFORE_STUCK], "one process held the lease"
            held = (await read(holder, PURGED), await read(holder, ARCHIVED))
            holder.terminate()
            assert await holder.wait(within=30) == 0
            async with db.sessions() as connection, connection.begin():
                await connection.execute(
                    update(MESSAGES)
                    .where(MESSAGES.c.id == stuck)
                    .values(state=MessageState.DELIVERED, claimed_by=None, claim_expires_at=None)
                )

            async def taken_over() -> bool:
                mine = await read(survivor, PURGED)
                return held[0] + mine == BEFORE_STUCK + 1 + AFTER_STUCK

            await wait_until(taken_over, within=30, what="the survivor purging the rest")
            assert await purged_count(db) == BEFORE_STUCK + 1 + AFTER_STUCK
            assert held[1] + await read(survivor, ARCHIVED) == IDLE
            assert await archived_count(db) == IDLE, "the live sessions stay"

            session = await clients[survivor.pid].new_session(title="after the hand-over")
            items = await answered(clients[survivor.pid], session["id"], "still answering")
            assert [m["content"] for m in items] == ["still answering"] * 2
            purged = held[0] + await read(survivor, PURGED)
            assert purged == BEFORE_STUCK + 1 + AFTER_STUCK, "nothing purged twice"
