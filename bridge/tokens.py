"""API tokens. Only a token's SHA-256 is stored; the token itself is shown once, at creation."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bridge.db.models import ApiToken, utcnow
from bridge.sessions import find_or_create_participant

WEB_CHANNEL = "web"


class TokenError(Exception):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(
    sessions: async_sessionmaker[AsyncSession], *, name: str, admin: bool
) -> str:
    """A new token for the web user ``name``; a revoked token of that name is replaced."""
    if not name.strip():
        raise TokenError("a token needs a name")
    token = "brg_" + secrets.token_urlsafe(32)
    async with sessions() as db, db.begin():
        existing = (
            await db.execute(select(ApiToken).where(ApiToken.name == name))
        ).scalar_one_or_none()
        if existing is not None and existing.revoked_at is None:
            raise TokenError(f"a token named {name!r} exists already; revoke it first")
        participant_id = await find_or_create_participant(
            db, kind="user", channel=WEB_CHANNEL, external_id=name, display_name=name
        )
        if existing is None:
            db.add(
                ApiToken(
                    name=name,
                    token_hash=hash_token(token),
                    is_admin=admin,
                    participant_id=participant_id,
                    created_at=utcnow(),
                )
            )
        else:
            existing.token_hash = hash_token(token)
            existing.is_admin = admin
            existing.created_at = utcnow()
            existing.revoked_at = None
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


async def find_token(sessions: async_sessionmaker[AsyncSession], token: str) -> ApiToken | None:
    async with sessions() as db:
        return (
            await db.execute(
                select(ApiToken).where(
                    ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)
                )
            )
        ).scalar_one_or_none()
