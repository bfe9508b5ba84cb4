"""Which sessions an export takes, and the export itself as an async generator of byte chunks.

Sessions are paged by id; the messages of a page of sessions by ``(session_id, id)``, which
the ``(session_id, id)`` index walks in order. Every page is its own short read: no
transaction or connection is held while a chunk is written (an export to a slow reader must
not pin SQLite's one connection or an old PostgreSQL snapshot), and nothing but the current
page is in memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.export.lines import encode, message_line, message_select, session_line, session_select
from bridge.store.models import AGENTS, MESSAGES, SESSIONS, WORKSPACES

PAGE_SIZE = 500


class ExportError(Exception):
    """An export that cannot start: the session or workspace does not exist."""


async def start_export(
    sessions: async_sessionmaker[AsyncSession],
    *,
    session_id: int | None = None,
    workspace: str | None = None,
    since: datetime | None = None,
    page_size: int = PAGE_SIZE,
) -> AsyncGenerator[bytes, None]:
    """Check what to export (``ExportError`` now, before a byte is written) and return the
    export: one chunk of whole lines per page.

    One session (``session_id``): its session line always, then its messages. A workspace:
    every session of its agents, soft-deleted ones included (an export is an archive), in id
    order. ``since`` keeps the messages created at or after it, and of a workspace the
    sessions created since or with such a message."""
    if (session_id is None) == (workspace is None):
        raise ValueError("export one session or one workspace")
    async with sessions() as db:
        if session_id is not None:
            found = await db.scalar(select(SESSIONS.c.id).where(SESSIONS.c.id == session_id))
            if found is None:
                raise ExportError(f"no session {session_id}")
            scope: ColumnElement[bool] = SESSIONS.c.id == session_id
        else:
            workspace_id = await db.scalar(
                select(WORKSPACES.c.id).where(WORKSPACES.c.slug == workspace)
            )
            if workspace_id is None:
                raise ExportError(f"no workspace {workspace!r}")
            scope = AGENTS.c.workspace_id == workspace_id
            if since is not None:
                scope = and_(scope, _active_since(since))
    return _pages(sessions, scope=scope, since=since, page_size=page_size)


def _active_since(since: datetime) -> ColumnElement[bool]:
    return or_(
        SESSIONS.c.created_at >= since,
        exists().where(MESSAGES.c.session_id == SESSIONS.c.id, MESSAGES.c.created_at >= since),
    )


async def _pages(
    sessions: async_sessionmaker[AsyncSession],
    *,
    scope: ColumnElement[bool],
    since: datetime | None,
    page_size: int,
) -> AsyncGenerator[bytes, None]:
    after = 0
    while True:
        async with sessions() as db:
            page = (
                await db.execute(
                    session_select()
                    .where(scope, SESSIONS.c.id > after)
                    .order_by(SESSIONS.c.id)
                    .limit(page_size)
                )
            ).all()
        if not page:
            return
        after = page[-1].id
        async for chunk in _session_page(sessions, page, since=since, page_size=page_size):
            yield chunk
        if len(page) < page_size:
            return


async def _session_page(
    sessions: async_sessionmaker[AsyncSession],
    page: Sequence[Any],
    *,
    since: datetime | None,
    page_size: int,
) -> AsyncIterator[bytes]:
    """The lines of one page of sessions: each session line, then its messages."""
    unwritten = deque(page)
    ids = [row.id for row in page]
    statement = message_select().where(
        MESSAGES.c.session_id.in_(ids), MESSAGES.c.session_id <= ids[-1]
    )
    if since is not None:
        statement = statement.where(MESSAGES.c.created_at >= since)
    position = (ids[0], 0)
    while True:
        async with sessions() as db:
            rows = (
                await db.execute(
                    statement.where(
                        tuple_(MESSAGES.c.session_id, MESSAGES.c.id) > tuple_(*position)
                    )
                    .order_by(MESSAGES.c.session_id, MESSAGES.c.id)
                    .limit(page_size)
                )
            ).all()
        chunk = bytearray()
        for row in rows:
            while unwritten and unwritten[0].id <= row.session_id:
                chunk += encode(session_line(unwritten.popleft()))
            chunk += encode(message_line(row))
        last_page = len(rows) < page_size
        if last_page:
            while unwritten:
                chunk += encode(session_line(unwritten.popleft()))
        if chunk:
            yield bytes(chunk)
        if last_page:
            return
        position = (rows[-1].session_id, rows[-1].id)
