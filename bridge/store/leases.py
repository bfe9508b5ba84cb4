"""Leases on named periodic jobs: one process at a time runs a job, across processes.

A lease is one ``job_leases`` row: its holder and until when it holds. Taking it is one
conditional UPDATE (free, expired, or already ours), so two processes racing for it cannot both
win; a holder that dies simply stops renewing and another takes over once the lease expires.

The job's work holds the lease inside its own transactions (:meth:`Lease.hold`): that locks the
lease row, renews it and reads the job's ``progress`` bookmark; :meth:`Lease.advance` writes the
bookmark back in the same transaction. A batch therefore commits only while the lease is still
ours, and its bookmark moves exactly when its work does.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.store.engine import dialect_of, insert
from bridge.store.models import LEASES, utcnow


class LeaseLost(Exception):
    """Another process took the lease over: this one stops the job's run."""


class Lease:
    """The lease on job ``name`` for ``holder`` (unique per process), ``ttl_seconds`` long
    from each :meth:`acquire` or :meth:`hold`."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        name: str,
        holder: str,
        ttl_seconds: float,
    ) -> None:
        self._sessions = sessions
        self.name = name
        self.holder = holder
        self._ttl = timedelta(seconds=ttl_seconds)

    async def acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours; True if it is ours now."""
        now = utcnow()
        async with self._sessions() as db, db.begin():
            await db.execute(
                insert(dialect_of(db), LEASES)
                .values(name=self.name, holder=None, expires_at=now, progress=0)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            taken = await db.execute(
                update(LEASES)
                .where(
                    LEASES.c.name == self.name,
                    or_(
                        LEASES.c.holder.is_(None),
                        LEASES.c.holder == self.holder,
                        LEASES.c.expires_at < now,
                    ),
                )
                .values(holder=self.holder, expires_at=now + self._ttl)
            )
        return bool(taken.rowcount)  # type: ignore[attr-defined]

    async def hold(self, db: AsyncSession) -> int:
        """In the caller's transaction: lock and renew the lease, and return its progress.
        Raises LeaseLost when another process holds it now."""
        row = (
            await db.execute(
                update(LEASES)
                .where(LEASES.c.name == self.name, LEASES.c.holder == self.holder)
                .values(expires_at=utcnow() + self._ttl)
                .returning(LEASES.c.progress)
            )
        ).one_or_none()
        if row is None:
            raise LeaseLost(self.name)
        return int(row.progress)

    async def advance(self, db: AsyncSession, progress: int) -> None:
        """In the caller's transaction (after :meth:`hold`): store the job's bookmark."""
        await db.execute(
            update(LEASES)
            .where(LEASES.c.name == self.name, LEASES.c.holder == self.holder)
            .values(progress=progress)
        )

    async def release(self) -> bool:
        """Give the lease up (on stop), so another process need not wait for it to expire.
        True if it was ours."""
        async with self._sessions() as db, db.begin():
            released = await db.execute(
                update(LEASES)
                .where(LEASES.c.name == self.name, LEASES.c.holder == self.holder)
                .values(holder=None, expires_at=utcnow())
            )
        return bool(released.rowcount)  # type: ignore[attr-defined]

    async def progress(self) -> int:
        """The job's bookmark as stored (0 before the first run), whoever holds the lease."""
        async with self._sessions() as db:
            value = (
                await db.execute(select(LEASES.c.progress).where(LEASES.c.name == self.name))
            ).scalar()
        return int(value or 0)
