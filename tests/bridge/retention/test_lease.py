"""The job lease: one holder at a time, taken over once expired, its bookmark kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.settings import DatabaseSettings
from bridge.store.engine import create_engine, session_factory
from bridge.store.leases import Lease, LeaseLost
from bridge.store.models import LEASES, utcnow


@asynccontextmanager
async def connected(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """An engine of its own, as another process would have."""
    engine = create_engine(DatabaseSettings(url=database_url))
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


def lease(sessions: async_sessionmaker[AsyncSession], holder: str) -> Lease:
    return Lease(sessions=sessions, name="job", holder=holder, ttl_seconds=60)


async def expire(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as db, db.begin():
        await db.execute(
            update(LEASES)
            .where(LEASES.c.name == "job")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


async def test_one_of_two_racing_holders_gets_the_lease(database_url: str) -> None:
    async with connected(database_url) as one, connected(database_url) as two:
        first, second = lease(one, "first"), lease(two, "second")
        won = await asyncio.gather(first.acquire(), second.acquire())
        assert sorted(won) == [False, True]
        holder, other = (first, second) if won[0] else (second, first)
        assert await holder.acquire(), "the holder takes its own lease again (a renewal)"
        assert not await other.acquire()
        async with other._sessions() as db, db.begin():
            with pytest.raises(LeaseLost):
                await other.hold(db)


async def test_an_expired_lease_is_taken_over_with_its_progress(database_url: str) -> None:
    async with connected(database_url) as one, connected(database_url) as two:
        first, second = lease(one, "first"), lease(two, "second")
        assert await first.acquire()
        async with one() as db, db.begin():
            assert await first.hold(db) == 0
            await first.advance(db, 42)
        assert not await second.acquire()

        await expire(one)
        assert await second.acquire()
        async with one() as db, db.begin():
            with pytest.raises(LeaseLost):
                await first.hold(db)
        async with two() as db, db.begin():
            assert await second.hold(db) == 42, "the bookmark outlives its holder"
        assert await first.progress() == 42


async def test_progress_moves_only_with_a_committed_transaction(database_url: str) -> None:
    async with connected(database_url) as sessions:
        holder = lease(sessions, "first")
        assert await holder.acquire()
        with pytest.raises(RuntimeError):
            async with sessions() as db, db.begin():
                await holder.hold(db)
                await holder.advance(db, 7)
                raise RuntimeError("the batch failed")
        assert await holder.progress() == 0
        async with sessions() as db, db.begin():
            await holder.advance(db, 9)
        assert await holder.progress() == 9


async def test_a_released_lease_is_free_at_once(database_url: str) -> None:
    async with connected(database_url) as one, connected(database_url) as two:
        first, second = lease(one, "first"), lease(two, "second")
        assert await first.acquire()
        assert not await second.acquire()
        assert await first.release()
        assert not await first.release(), "only the holder releases"
        assert await second.acquire()
        assert not await first.acquire()
