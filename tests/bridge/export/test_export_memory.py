"""An export's memory does not grow with the history it writes: pages of rows are read,
written and dropped. Peak traced memory (tracemalloc) of exporting 10,000 messages is within
1.5x of exporting 1,000, on SQLite and PostgreSQL. A structural check, not a timing one."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.export import start_export
from bridge.store.engine import create_engine, session_factory
from bridge.store.models import MESSAGES
from tests.bridge.export.support import add_messages
from tests.support.harness import make_settings, running_bridge


@contextmanager
def tracing() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


async def exported_peak(sessions: async_sessionmaker[AsyncSession], session_id: int) -> int:
    """Export one session into a sink that only checks each line and drops it; the peak of
    memory traced during the export, above what was in use before it."""
    async with sessions() as db:
        expected = await db.scalar(
            select(func.count()).select_from(MESSAGES).where(MESSAGES.c.session_id == session_id)
        )
    gc.collect()
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    last_id, count, head = 0, 0, None
    pages = await start_export(sessions, session_id=session_id)
    async for chunk in pages:
        for raw in chunk.splitlines():
            line = json.loads(raw)
            if line["type"] == "session":
                assert head is None and count == 0
                head = line["id"]
                continue
            assert line["session_id"] == session_id and line["id"] > last_id
            last_id, count = line["id"], count + 1
    _, peak = tracemalloc.get_traced_memory()
    assert head == session_id and count == expected, "every message, once, in id order"
    return peak - before


async def test_exporting_ten_times_the_messages_takes_no_more_memory(database_url: str) -> None:
    settings = make_settings(database_url)
    async with running_bridge(settings) as bridge:
        first = await bridge.memory().receive("one", conversation="inmemory:small")
        second = await bridge.memory().receive("two", conversation="inmemory:big")
        for result in (first, second):
            await bridge.reply_to(result.message_id, state="delivered")
    # The bridge is stopped: nothing else allocates while memory is traced.
    engine = create_engine(settings.database)
    try:
        sessions = session_factory(engine)
        await add_messages(sessions, first.session_id, 1_000 - 2)
        await add_messages(sessions, second.session_id, 10_000 - 2)
        await exported_peak(sessions, first.session_id)  # compiled statements, caches, pools
        with tracing():
            small = await exported_peak(sessions, first.session_id)
            big = await exported_peak(sessions, second.session_id)
        print(f"peak: 1,000 messages {small} B, 10,000 messages {big} B")
        assert big <= 1.5 * small, (small, big)
    finally:
        await engine.dispose()
