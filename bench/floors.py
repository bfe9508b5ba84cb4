"""The floor: the same durable work per message as the bridge (session upsert, user message
insert, reply insert, one transaction per message) done by the raw driver, with nothing else.
The bridge's throughput is reported as a fraction of it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiosqlite
import asyncpg

AGENT_ROW = (
    "INSERT INTO agents (slug, name, backend, backend_options, system_prompt, history_messages,"
    " history_chars, workspace_id, created_at, updated_at) VALUES ('floor', 'floor', 'echo',"
    " '{{}}', '', 20, 12000, (SELECT id FROM workspaces WHERE slug = 'default'), {now}, {now})"
    " ON CONFLICT (slug) DO NOTHING"
)
SESSION_UPSERT = (
    "INSERT INTO chat_sessions (agent_id, external_conv_id, source_channel, is_group,"
    " message_count, created_at, last_message_at) VALUES ({p1}, {p2}, 'floor', false, 1, {now},"
    " {now}) ON CONFLICT (agent_id, external_conv_id) DO UPDATE SET message_count ="
    " chat_sessions.message_count + 1, last_message_at = excluded.last_message_at RETURNING id"
)
MESSAGE_INSERT = (
    "INSERT INTO chat_messages (session_id, role, content, external_message_id, channel,"
    " reply_target, attachments, state, attempts, delivery_in_doubt, platform_message_ids,"
    " created_at, updated_at) VALUES ({p1}, {p2}, {p3}, {p4}, 'floor', '{{}}', '[]', {p5}, 0,"
    " false, '[]', {now}, {now}) RETURNING id"
)


def _sql(template: str, style: str) -> str:
    if style == "pg":
        marks = {f"p{i}": f"${i}" for i in range(1, 6)}
        return template.format(now="now()", **marks)
    marks = {f"p{i}": "?" for i in range(1, 6)}
    return template.format(now="CURRENT_TIMESTAMP", **marks)


async def postgres_floor(dsn: str, *, messages: int, concurrency: int, conversations: int) -> float:
    """Messages per second for raw asyncpg."""
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    assert pool is not None
    try:
        async with pool.acquire() as connection:
            await connection.execute(_sql(AGENT_ROW, "pg"))
            agent_id = await connection.fetchval("SELECT id FROM agents WHERE slug = 'floor'")
        upsert, insert = _sql(SESSION_UPSERT, "pg"), _sql(MESSAGE_INSERT, "pg")
        queue = iter(range(messages))

        async def worker() -> None:
            for n in queue:
                async with pool.acquire() as connection, connection.transaction():
                    session = await connection.fetchval(
                        upsert, agent_id, f"floor:{n % conversations}"
                    )
                    await connection.fetchval(insert, session, "user", f"m{n}", f"e{n}", "answered")
                    await connection.fetchval(
                        insert, session, "assistant", f"m{n}", None, "delivered"
                    )

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return messages / (time.perf_counter() - started)
    finally:
        await pool.close()


async def sqlite_floor(path: Path, *, messages: int, concurrency: int, conversations: int) -> float:
    """Messages per second for raw aiosqlite (one connection, as SQLite serializes writers)."""
    async with aiosqlite.connect(path) as connection:
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA synchronous=NORMAL")
        await connection.execute(_sql(AGENT_ROW, "sqlite"))
        await connection.commit()
        async with connection.execute("SELECT id FROM agents WHERE slug = 'floor'") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        agent_id = row[0]
        upsert, insert = _sql(SESSION_UPSERT, "sqlite"), _sql(MESSAGE_INSERT, "sqlite")
        lock = asyncio.Lock()
        queue = iter(range(messages))

        async def one(n: int) -> None:
            async with lock:  # one transaction at a time on the one connection
                async with connection.execute(
                    upsert, (agent_id, f"floor:{n % conversations}")
                ) as c:
                    session = (await c.fetchone())[0]  # type: ignore[index]
                for role, ext, state in (
                    ("user", f"e{n}", "answered"),
                    ("assistant", None, "delivered"),
                ):
                    async with connection.execute(insert, (session, role, f"m{n}", ext, state)):
                        pass
                await connection.commit()

        async def worker() -> None:
            for n in queue:
                await one(n)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return messages / (time.perf_counter() - started)
