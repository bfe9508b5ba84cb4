"""What access control keeps in the database: approved pairings, pairing codes, refusal counts
and the once-a-day notices. Every write is one ``INSERT ... ON CONFLICT``, so two processes
never issue two codes to one person or tell them ``denied_text`` twice in a day."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.store.engine import dialect_of, insert
from bridge.store.models import GRANTS, NOTICES, PAIRING_CODES, REFUSALS

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""No 0/O or 1/I: a code is read off a chat and typed into a terminal."""
CODE_LENGTH = 8
CODE_LIFETIME = timedelta(hours=1)


class PairingError(Exception):
    """An unknown or expired pairing code; the message says which, in one line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    agent_id: int
    identity: str
    created_at: datetime


def hour_of(moment: datetime) -> datetime:
    """The start of the hour: the granularity of refusal counts."""
    return moment.replace(minute=0, second=0, microsecond=0)


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


async def granted(db: AsyncSession, pairs: Collection[tuple[int, str]]) -> set[tuple[int, str]]:
    """Of ``(agent_id, identity)`` pairs, those approved by pairing."""
    if not pairs:
        return set()
    g = GRANTS.c
    rows = await db.execute(
        select(g.agent_id, g.identity).where(
            tuple_(g.agent_id, g.identity).in_(bindparam("pairs", expanding=True))
        ),
        {"pairs": sorted(pairs)},
    )
    return {(row.agent_id, row.identity) for row in rows}


async def issue_code(
    db: AsyncSession, *, agent_id: int, identity: str, now: datetime
) -> str | None:
    """A new code for an identity with no live one (its first DM, or its code expired); None
    while its code is live, so the person is told a code once and nothing else."""
    p = PAIRING_CODES.c
    code = new_code()
    values = insert(dialect_of(db), PAIRING_CODES).values(
        code=code,
        agent_id=agent_id,
        identity=identity,
        created_at=now,
        expires_at=now + CODE_LIFETIME,
    )
    statement = values.on_conflict_do_update(
        index_elements=["agent_id", "identity"],
        set_={"code": code, "created_at": now, "expires_at": now + CODE_LIFETIME},
        where=p.expires_at <= now,
    ).returning(p.code)
    issued = (await db.execute(statement)).scalar_one_or_none()
    return None if issued is None else str(issued)


async def approve(db: AsyncSession, *, code: str, now: datetime) -> tuple[int, str]:
    """Turn a live code into a grant; the ``(agent_id, identity)`` approved. The code is used
    up; approving an identity twice keeps one grant."""
    p = PAIRING_CODES.c
    row = (
        await db.execute(
            select(p.id, p.agent_id, p.identity, p.expires_at).where(p.code == code.strip().upper())
        )
    ).one_or_none()
    if row is None:
        raise PairingError(f"no pairing code {code.strip()!r}")
    if row.expires_at <= now:
        raise PairingError(
            f"pairing code {code.strip()!r} expired; the person gets a new one with their next DM"
        )
    await db.execute(
        insert(dialect_of(db), GRANTS)
        .values(agent_id=row.agent_id, identity=row.identity, created_at=now)
        .on_conflict_do_nothing(index_elements=["agent_id", "identity"])
    )
    await db.execute(delete(PAIRING_CODES).where(p.id == row.id))
    return int(row.agent_id), str(row.identity)


async def grants(db: AsyncSession, *, agent_id: int) -> list[Grant]:
    g = GRANTS.c
    rows = await db.execute(
        select(g.agent_id, g.identity, g.created_at)
        .where(g.agent_id == agent_id)
        .order_by(g.created_at, g.identity)
    )
    return [
        Grant(agent_id=row.agent_id, identity=row.identity, created_at=row.created_at)
        for row in rows
    ]


async def revoke(db: AsyncSession, *, agent_id: int, identity: str) -> bool:
    """Remove an approval (and any live code); whether there was one."""
    g, p = GRANTS.c, PAIRING_CODES.c
    removed = await db.execute(
        delete(GRANTS).where(and_(g.agent_id == agent_id, g.identity == identity))
    )
    await db.execute(
        delete(PAIRING_CODES).where(and_(p.agent_id == agent_id, p.identity == identity))
    )
    return bool(getattr(removed, "rowcount", 0))


@dataclass(frozen=True, slots=True, kw_only=True)
class RefusalCount:
    agent_id: int
    identity: str
    external_conv_id: str
    reason: str


async def count_refusals(
    db: AsyncSession, refusals: Sequence[RefusalCount], *, now: datetime
) -> None:
    """Add each refusal to its hour's count (refused messages leave no other row)."""
    if not refusals:
        return
    hour = hour_of(now)
    totals: dict[RefusalCount, int] = {}
    for refusal in refusals:
        totals[refusal] = totals.get(refusal, 0) + 1
    r = REFUSALS.c
    statement = insert(dialect_of(db), REFUSALS)
    statement = statement.on_conflict_do_update(
        index_elements=["agent_id", "identity", "external_conv_id", "reason", "hour"],
        set_={"count": r.count + statement.excluded.count},
    )
    await db.execute(
        statement,
        [
            {
                "agent_id": key.agent_id,
                "identity": key.identity,
                "external_conv_id": key.external_conv_id,
                "reason": key.reason,
                "hour": hour,
                "count": count,
            }
            for key, count in sorted(
                totals.items(),
                key=lambda item: (
                    item[0].agent_id,
                    item[0].identity,
                    item[0].external_conv_id,
                    item[0].reason,
                ),
            )
        ],
    )


async def first_notice_today(
    db: AsyncSession, *, agent_id: int, identity: str, now: datetime
) -> bool:
    """Whether this is the first time today the identity is told it was refused (and record
    that it now has been)."""
    n = NOTICES.c
    statement = (
        insert(dialect_of(db), NOTICES)
        .values(agent_id=agent_id, identity=identity, day=now.date().isoformat())
        .on_conflict_do_nothing(index_elements=["agent_id", "identity", "day"])
        .returning(n.day)
    )
    return (await db.execute(statement)).scalar_one_or_none() is not None
