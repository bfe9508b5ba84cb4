"""The change feed: every change a live client may want to see, as rows of ``change_events``.

A change is written in the same transaction as the change itself, so it exists exactly when the
change does, whichever process made it. Each process tails the table (woken by ``LISTEN/NOTIFY``
on PostgreSQL, in-process otherwise, with a slow poll as a safety net) and hands new rows to
its live clients; a reconnecting client catches up by event id.

PostgreSQL hands out ids before commit, so a transaction can commit after one with a higher id.
The tail remembers such holes for a while and reads them again, so a late commit still streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.infra.logs import log_event
from bridge.infra.tasks import cancel_and_wait
from bridge.store.models import AGENTS, CHANGES, MEMBERS, SESSIONS, utcnow
from bridge.store.wakeups import WorkSignals

logger = logging.getLogger(__name__)

FEED = "feed"
"""The wake-up kind for new changes."""

ChangeKind = Literal["message.created", "message.updated", "session.updated"]

HOLE_SECONDS = 30.0
"""How long an id skipped by the tail is looked for again (a transaction that slow is rare; a
rolled-back one leaves its hole for good)."""
MAX_HOLES = 1_000
"""Holes are read again by id: this bounds that list (normally a handful: the transactions in
flight)."""
BATCH = 500
PRUNE_EVERY_SECONDS = 600.0
LATE_COMMIT_SECONDS = 10.0
"""A catch-up also re-sends changes this recent, so one that committed late is not missed."""
LATE_COMMIT_EVENTS = 500
"""... but only among this many ids before the client's last one: late commits are close in id
to it, and a busy second must not make every catch-up replay thousands of events."""
MAX_EVENT_ID = 2**63 - 1
"""Ids are 64-bit: a client's resume point beyond this is not one the bridge handed out."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    id: int
    kind: str
    session_id: int
    message_id: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CatchUp:
    """A resume from ``after``: replay up to ``head`` (see :meth:`ChangeFeed.replay_page`), or
    ``reset`` (the client reloads its state and carries on from ``head``)."""

    after: int
    head: int
    reset: bool


def _change(row: object) -> Change:
    return Change(
        id=int(row.id),  # type: ignore[attr-defined]
        kind=str(row.kind),  # type: ignore[attr-defined]
        session_id=int(row.session_id),  # type: ignore[attr-defined]
        message_id=row.message_id,  # type: ignore[attr-defined]
    )


_COLUMNS = (CHANGES.c.id, CHANGES.c.kind, CHANGES.c.session_id, CHANGES.c.message_id)

OnChanges = Callable[[Sequence[Change]], Awaitable[None]]


class ChangeFeed:
    """Tails ``change_events`` and passes each new batch (possibly empty, at least once per
    poll) to ``on_changes``."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        signals: WorkSignals,
        on_changes: OnChanges,
        retention_hours: float,
        poll_seconds: float = 1.0,
        wanted: Callable[[], bool] = lambda: True,
    ) -> None:
        self._sessions = sessions
        self._wanted = wanted
        self._behind = False
        self._signals = signals
        self._on_changes = on_changes
        self._retention = timedelta(hours=retention_hours)
        self._poll_seconds = poll_seconds
        self._cursor = 0
        self._holes: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def head(self) -> int:
        """The highest change id streamed so far."""
        return self._cursor

    async def start(self) -> None:
        await self._jump_to_head()
        self._task = asyncio.create_task(self._run(), name="bridge-change-feed")

    async def follow(self) -> None:
        """Call before a client is added and told :attr:`head`: while nobody was listening the
        tail read nothing (see ``wanted``), so the stream starts at the newest event. With
        clients already listening the tail is current and stays where it is."""
        if self._behind and not self._wanted():
            await self._jump_to_head()

    async def _jump_to_head(self) -> None:
        async with self._sessions() as db:
            newest = int((await db.execute(select(func.max(CHANGES.c.id)))).scalar() or 0)
        if self._wanted() and self._task is not None:
            return  # someone started listening meanwhile: the tail streams from where it is
        self._cursor = max(self._cursor, newest)
        self._holes.clear()
        self._behind = False

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def catch_up(self, after: int, *, max_events: int) -> CatchUp:
        """Where a client that saw everything up to ``after`` resumes: a bounded id range, or
        ``reset`` when more than ``max_events`` events followed it or some were pruned. Costs a
        few index look-ups and at most ``max_events`` ids scanned, whatever the feed holds."""
        async with self._sessions() as db:
            # Two statements: SQLite reads min() or max() from the index only when alone.
            oldest = (await db.execute(select(func.min(CHANGES.c.id)))).scalar()
            newest = (await db.execute(select(func.max(CHANGES.c.id)))).scalar()
            head = max(after, int(newest or 0))
            if after > 0 and (oldest is None or oldest > after):
                reset = True  # the client's last event was pruned: what followed may be gone
            elif newest is None or newest <= after:
                reset = False
            elif newest - after <= max_events:
                reset = False  # ids only grow, so this is an upper bound of the gap
            else:
                gap = (
                    select(CHANGES.c.id)
                    .where(CHANGES.c.id > after, CHANGES.c.id <= newest)
                    .order_by(CHANGES.c.id)
                    .limit(max_events + 1)
                    .subquery()
                )
                reset = (
                    int((await db.execute(select(func.count()).select_from(gap))).scalar_one())
                    > max_events
                )
        return CatchUp(after=after, head=head, reset=reset)

    async def replay_page(
        self,
        catch_up: CatchUp,
        *,
        since: int,
        participant_id: int | None,
        limit: int,
        workspace_id: int | None = None,
    ) -> list[Change]:
        """Up to ``limit`` changes of ``catch_up`` with ids above ``since``, in id order: the
        gap after the client's last event, and the last :data:`LATE_COMMIT_EVENTS` before it that
        are recent enough to have committed late. ``participant_id`` limits them to the sessions
        it takes part in (None: every session, for admins); ``workspace_id`` to the sessions of
        that workspace's agents (None: every workspace, for the operator)."""
        recent = utcnow() - timedelta(seconds=LATE_COMMIT_SECONDS)
        query = (
            select(*_COLUMNS)
            .where(
                CHANGES.c.id > max(since, catch_up.after - LATE_COMMIT_EVENTS),
                CHANGES.c.id <= catch_up.head,
                or_(CHANGES.c.id > catch_up.after, CHANGES.c.created_at > recent),
            )
            .order_by(CHANGES.c.id)
            .limit(limit)
        )
        if participant_id is not None:
            query = query.join(
                MEMBERS,
                and_(
                    MEMBERS.c.session_id == CHANGES.c.session_id,
                    MEMBERS.c.participant_id == participant_id,
                ),
            )
        if workspace_id is not None:
            query = query.join(SESSIONS, SESSIONS.c.id == CHANGES.c.session_id).join(
                AGENTS,
                and_(AGENTS.c.id == SESSIONS.c.agent_id, AGENTS.c.workspace_id == workspace_id),
            )
        async with self._sessions() as db:
            return [_change(row) for row in await db.execute(query)]

    async def _run(self) -> None:
        wake = self._signals.event(FEED)
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_seconds):
                    await wake.wait()
            wake.clear()
            try:
                if not self._wanted():
                    # Nobody to stream to: reading every change would cost round trips and
                    # CPU on every commit of a busy process for nothing.
                    self._behind = True
                else:
                    self._behind = False
                    while True:
                        changes = await self._read()
                        await self._on_changes(changes)
                        if len(changes) < BATCH:
                            break
                if loop.time() >= next_prune:
                    next_prune = loop.time() + PRUNE_EVERY_SECONDS
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database is away: try again at the next poll
                log_event(logger, "feed.read_failed", level=logging.WARNING, error=str(error))

    async def _read(self) -> list[Change]:
        now = asyncio.get_running_loop().time()
        self._holes = {
            hole: seen for hole, seen in self._holes.items() if now - seen < HOLE_SECONDS
        }
        condition = CHANGES.c.id > self._cursor
        if self._holes:
            condition = or_(condition, CHANGES.c.id.in_(list(self._holes)))
        async with self._sessions() as db:
            rows = await db.execute(
                select(*_COLUMNS).where(condition).order_by(CHANGES.c.id).limit(BATCH)
            )
            changes = [_change(row) for row in rows]
        for change in changes:
            self._holes.pop(change.id, None)
        fresh = sorted(change.id for change in changes if change.id > self._cursor)
        expected = self._cursor + 1
        for change_id in fresh:
            if change_id - expected <= MAX_HOLES - len(self._holes):
                self._holes.update(dict.fromkeys(range(expected, change_id), now))
            expected = change_id + 1
        if fresh:
            self._cursor = fresh[-1]
        return changes

    async def prune(self) -> int:
        """Drop events older than the retention; a client resuming from before them resyncs."""
        async with self._sessions() as db, db.begin():
            result = await db.execute(
                delete(CHANGES).where(CHANGES.c.created_at < utcnow() - self._retention)
            )
        pruned = int(result.rowcount or 0)  # type: ignore[attr-defined]
        if pruned:
            log_event(logger, "feed.pruned", events=pruned)
        return pruned
