"""API tokens. Only a token's SHA-256 is stored; the token itself is shown once, at creation."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.ports.events import WEB_CHANNEL
from bridge.store.models import DEFAULT_WORKSPACE, ApiToken, Participant, utcnow
from bridge.store.sessions import find_or_create_participant
from bridge.workspaces.store import find_workspace


class TokenError(Exception):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(
    sessions: async_sessionmaker[AsyncSession],
    *,
    name: str,
    admin: bool,
    user: str | None = None,
    workspace: str | None = None,
) -> str:
    """A new token named ``name`` for the web user ``user`` (by default the user ``name``);
    a revoked token of that name is replaced. With ``workspace`` it is a user (or with
    ``admin`` the admin) of that workspace; without, an admin token is the operator's and any
    other token a user of ``default``."""
    if not name.strip():
        raise TokenError("a token needs a name")
    token = "brg_" + secrets.token_urlsafe(32)
    async with sessions() as db, db.begin():
        workspace_id = await _workspace_id(db, workspace, admin=admin)
        existing = (
            await db.execute(select(ApiToken).where(ApiToken.name == name))
        ).scalar_one_or_none()
        if existing is not None and existing.revoked_at is None:
            raise TokenError(f"a token named {name!r} exists already; revoke it first")
        participant_id = await find_or_create_participant(
            db,
            kind="user",
            channel=WEB_CHANNEL,
            external_id=user or name,
            display_name=user or name,
        )
        if existing is None:
            db.add(
                ApiToken(
                    name=name,
                    token_hash=hash_token(token),
                    is_admin=admin,
                    participant_id=participant_id,
                    workspace_id=workspace_id,
                    created_at=utcnow(),
                )
            )
        else:
            existing.token_hash = hash_token(token)
            existing.is_admin = admin
            existing.workspace_id = workspace_id
            existing.created_at = utcnow()
            existing.revoked_at = None
    return token


async def _workspace_id(db: AsyncSession, slug: str | None, *, admin: bool) -> int | None:
    """The workspace a new token belongs to (None: the operator's); it must exist and not be
    deleted."""
    if slug is None:
        if admin:
            return None
        slug = DEFAULT_WORKSPACE
    found = await find_workspace(db, slug, lock=True)
    if found is None:
        raise TokenError(f"no workspace {slug!r} (`bridge workspace list` shows them)")
    if found.deleted_at is not None:
        raise TokenError(
            f"workspace {slug!r} is deleted; restore it first (`bridge workspace restore {slug}`)"
        )
    return found.id


LEGACY_LOCAL_PREFIX = "dev-login-"
"""Tokens the local sign-in used to mint, one per call; the next sign-in removes them."""
REPLACED_SUFFIX = ".replaced"


async def rotate_token(sessions: async_sessionmaker[AsyncSession], *, name: str, user: str) -> str:
    """A new admin token named ``name`` for the web user ``user``, replacing the one of that
    name, which stops working at once (live sockets opened with it are closed, as for any
    revoked token). However often it is called, one such token is active.

    The replaced row is kept, revoked, until the next rotation: SQLite hands the highest id
    out again once its row is deleted, and a new token must never take over the id that open
    sockets of the old one are checked by."""
    token = "brg_" + secrets.token_urlsafe(32)
    replaced = f"{name}{REPLACED_SUFFIX}"
    async with sessions() as db, db.begin():
        participant_id = await find_or_create_participant(
            db, kind="user", channel=WEB_CHANNEL, external_id=user, display_name=user
        )
        # Concurrent rotations take turns (a row lock on PostgreSQL; SQLite has one writer),
        # so each one replaces the row the previous one wrote instead of racing on its name.
        await db.execute(
            select(Participant.id).where(Participant.id == participant_id).with_for_update()
        )
        await db.execute(delete(ApiToken).where(ApiToken.name == replaced))
        await db.execute(
            update(ApiToken)
            .where(ApiToken.name == name)
            .values(name=replaced, revoked_at=func.coalesce(ApiToken.revoked_at, utcnow()))
        )
        await db.execute(
            delete(ApiToken).where(
                ApiToken.name.startswith(LEGACY_LOCAL_PREFIX, autoescape=True),
                ApiToken.participant_id == participant_id,
                ApiToken.is_admin.is_(True),
            )
        )
        db.add(
            ApiToken(
                name=name,
                token_hash=hash_token(token),
                is_admin=True,
                participant_id=participant_id,
                created_at=utcnow(),
            )
        )
    return token


async def revoke_token(sessions: async_sessionmaker[AsyncSession], *, name: str) -> None:
    async with sessions() as db, db.begin():
        result = await db.execute(
            update(ApiToken)
            .where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise TokenError(f"no active token named {name!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    """Who an API request speaks for."""

    token_id: int
    user: str
    participant_id: int
    is_admin: bool
    workspace_id: int | None = None
    """The workspace the token sees; None only for an operator (an admin of every one)."""

    @property
    def is_operator(self) -> bool:
        """Sees every workspace: an admin token not bound to one."""
        return self.is_admin and self.workspace_id is None


async def find_caller(sessions: async_sessionmaker[AsyncSession], token: str) -> Caller | None:
    """The active token's owner. The lookup is by the token's hash (an index on it), and the
    hash found is compared in constant time as well."""
    wanted = hash_token(token)
    async with sessions() as db:
        row = (
            await db.execute(
                select(
                    ApiToken.id,
                    ApiToken.token_hash,
                    ApiToken.is_admin,
                    ApiToken.workspace_id,
                    Participant,
                )
                .join(Participant, Participant.id == ApiToken.participant_id)
                .where(ApiToken.token_hash == wanted, ApiToken.revoked_at.is_(None))
            )
        ).one_or_none()
    if row is None or not hmac.compare_digest(row.token_hash, wanted):
        return None
    return Caller(
        token_id=row.id,
        user=row.Participant.external_id,
        participant_id=row.Participant.id,
        is_admin=row.is_admin,
        workspace_id=row.workspace_id,
    )


async def active_token_ids(
    sessions: async_sessionmaker[AsyncSession], token_ids: Collection[int]
) -> set[int]:
    """Which of these tokens still work (live connections drop the others)."""
    async with sessions() as db:
        rows = await db.execute(
            select(ApiToken.id).where(
                ApiToken.id.in_(list(token_ids)), ApiToken.revoked_at.is_(None)
            )
        )
        return set(rows.scalars())
