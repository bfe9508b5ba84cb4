"""Workspaces in the database: create, list, delete and restore, for the operator.

Deleting is soft and reversible. One moment T is written everywhere the delete touches: the
workspace's ``deleted_at``, the ``deleted_at`` of its sessions that were not deleted yet and
the ``revoked_at`` of its tokens that still worked. Restoring undoes exactly the rows that carry
T, so a session its user had deleted before, or a token revoked before, stays as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.ports.events import storable_text
from bridge.store.engine import insert
from bridge.store.messages import MessageStore, Writes
from bridge.store.models import AGENTS, SESSIONS, TOKENS, WORKSPACES, utcnow

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
"""A workspace's slug has the shape of an agent's."""
MAX_NAME = 200


class WorkspaceError(Exception):
    """An expected failure: ``status`` and ``code`` for the API, the message for both."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceRef:
    id: int
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceInfo:
    slug: str
    name: str
    created_at: datetime
    deleted_at: datetime | None
    agents: int
    active_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceChange:
    """What a delete or restore did."""

    workspace: WorkspaceInfo
    sessions: int
    tokens: int


def unknown(slug: str) -> WorkspaceError:
    return WorkspaceError(404, "not_found", f"no workspace {slug!r}")


async def find_workspace(db: AsyncSession, slug: str, *, lock: bool = False) -> WorkspaceRef | None:
    """The workspace of that slug, deleted or not; None if there is none. With ``lock`` its
    row stays as read until the transaction ends (a token created in it cannot slip past a
    concurrent delete)."""
    statement = select(WORKSPACES.c.id, WORKSPACES.c.deleted_at).where(WORKSPACES.c.slug == slug)
    if lock:
        statement = statement.with_for_update(read=True)
    row = (await db.execute(statement)).one_or_none()
    return None if row is None else WorkspaceRef(id=row.id, deleted_at=row.deleted_at)


async def workspace_slug(db: AsyncSession, workspace_id: int) -> str | None:
    found = await db.execute(select(WORKSPACES.c.slug).where(WORKSPACES.c.id == workspace_id))
    return found.scalar_one_or_none()


def _listing() -> Select[tuple[str, str, datetime, datetime | None, int, int]]:
    agents = (
        select(func.count())
        .where(AGENTS.c.workspace_id == WORKSPACES.c.id)
        .correlate(WORKSPACES)
        .scalar_subquery()
    )
    tokens = (
        select(func.count())
        .where(TOKENS.c.workspace_id == WORKSPACES.c.id, TOKENS.c.revoked_at.is_(None))
        .correlate(WORKSPACES)
        .scalar_subquery()
    )
    return select(
        WORKSPACES.c.slug,
        WORKSPACES.c.name,
        WORKSPACES.c.created_at,
        WORKSPACES.c.deleted_at,
        agents.label("agents"),
        tokens.label("active_tokens"),
    )


async def _infos(db: AsyncSession, slug: str | None = None) -> list[WorkspaceInfo]:
    statement = _listing()
    if slug is not None:
        statement = statement.where(WORKSPACES.c.slug == slug)
    rows = await db.execute(statement.order_by(WORKSPACES.c.slug))
    return [
        WorkspaceInfo(
            slug=row.slug,
            name=row.name,
            created_at=row.created_at,
            deleted_at=row.deleted_at,
            agents=row.agents,
            active_tokens=row.active_tokens,
        )
        for row in rows
    ]


async def _info(db: AsyncSession, slug: str) -> WorkspaceInfo:
    (info,) = await _infos(db, slug)
    return info


async def list_workspaces(sessions: async_sessionmaker[AsyncSession]) -> list[WorkspaceInfo]:
    """Every workspace, deleted ones included, by slug."""
    async with sessions() as db:
        return await _infos(db)


async def create_workspace(
    sessions: async_sessionmaker[AsyncSession], *, slug: str, name: str | None = None
) -> WorkspaceInfo:
    if not SLUG.match(slug):
        raise WorkspaceError(
            422, "invalid", f"{slug!r} is not a slug (lowercase letters, digits, - and _)"
        )
    shown = storable_text(name or "").strip() or slug
    if len(shown) > MAX_NAME:
        raise WorkspaceError(
            422, "invalid", f"a workspace's name has at most {MAX_NAME} characters"
        )
    async with sessions() as db, db.begin():
        created = await db.execute(
            insert(db.get_bind().dialect.name, WORKSPACES)
            .values(slug=slug, name=shown, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["slug"])
            .returning(WORKSPACES.c.id)
        )
        if created.first() is None:
            found = await find_workspace(db, slug)
            deleted = found is not None and found.deleted_at is not None
            raise WorkspaceError(
                409,
                "conflict",
                f"workspace {slug!r} exists already"
                + (" (deleted: restore it instead)" if deleted else ""),
            )
        return await _info(db, slug)


def _sessions_of(workspace_id: int) -> ColumnElement[bool]:
    return SESSIONS.c.agent_id.in_(select(AGENTS.c.id).where(AGENTS.c.workspace_id == workspace_id))


async def delete_workspace(store: MessageStore, slug: str) -> WorkspaceChange:
    """Soft-delete the workspace, its live sessions and its working tokens at one moment, in
    one transaction (each session gets a ``session.updated`` event)."""
    async with store.write() as writes:
        db, moment = writes.db, writes.now
        claimed = await db.execute(
            update(WORKSPACES)
            .where(WORKSPACES.c.slug == slug, WORKSPACES.c.deleted_at.is_(None))
            .values(deleted_at=moment)
            .returning(WORKSPACES.c.id)
        )
        workspace_id = claimed.scalar_one_or_none()
        if workspace_id is None:
            if await find_workspace(db, slug) is None:
                raise unknown(slug)
            raise WorkspaceError(409, "conflict", f"workspace {slug!r} is deleted already")
        changed = await _set_moment(
            writes,
            workspace_id,
            sessions_now=SESSIONS.c.deleted_at.is_(None),
            tokens_now=TOKENS.c.revoked_at.is_(None),
            value=moment,
        )
        change = WorkspaceChange(
            workspace=await _info(db, slug), sessions=changed[0], tokens=changed[1]
        )
    return change


async def restore_workspace(store: MessageStore, slug: str) -> WorkspaceChange:
    """Undo a delete: exactly the sessions and tokens it took come back."""
    async with store.write() as writes:
        db = writes.db
        found = (
            await db.execute(
                select(WORKSPACES.c.id, WORKSPACES.c.deleted_at)
                .where(WORKSPACES.c.slug == slug)
                .with_for_update()
            )
        ).one_or_none()
        if found is None:
            raise unknown(slug)
        moment = found.deleted_at
        if moment is None:
            raise WorkspaceError(409, "conflict", f"workspace {slug!r} is not deleted")
        await db.execute(
            update(WORKSPACES).where(WORKSPACES.c.id == found.id).values(deleted_at=None)
        )
        changed = await _set_moment(
            writes,
            found.id,
            sessions_now=SESSIONS.c.deleted_at == moment,
            tokens_now=TOKENS.c.revoked_at == moment,
            value=None,
        )
        change = WorkspaceChange(
            workspace=await _info(db, slug), sessions=changed[0], tokens=changed[1]
        )
    return change


async def _set_moment(
    writes: Writes,
    workspace_id: int,
    *,
    sessions_now: ColumnElement[bool],
    tokens_now: ColumnElement[bool],
    value: datetime | None,
) -> tuple[int, int]:
    """Set ``deleted_at`` of the workspace's sessions and ``revoked_at`` of its tokens that
    match; how many of each changed."""
    db = writes.db
    session_ids = (
        await db.execute(
            update(SESSIONS)
            .where(_sessions_of(workspace_id), sessions_now)
            .values(deleted_at=value)
            .returning(SESSIONS.c.id)
        )
    ).scalars()
    count = 0
    for session_id in session_ids:
        writes.changed("session.updated", session_id, None)
        count += 1
    tokens = await db.execute(
        update(TOKENS)
        .where(TOKENS.c.workspace_id == workspace_id, tokens_now)
        .values(revoked_at=value)
    )
    return count, tokens.rowcount  # type: ignore[attr-defined]
