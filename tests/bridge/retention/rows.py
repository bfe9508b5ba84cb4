"""Rows for retention tests: stored through the core's own ingest, then aged by direct UPDATE
(retention only looks at timestamps and states)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from bridge.store.models import (
    CHANGES,
    MESSAGES,
    SESSIONS,
    ChatMessage,
    ChatSession,
    MessageState,
    utcnow,
)
from tests.support.api import ApiClient
from tests.support.processes import BridgeDatabase, wait_until

AGENTS = [{"slug": "assistant"}]


def days_ago(days: float, *, plus_seconds: float = 0) -> datetime:
    return utcnow() - timedelta(days=days) + timedelta(seconds=plus_seconds)


async def stored(
    db: BridgeDatabase, count: int, *, conversation: str, prefix: str | None = None
) -> tuple[int, list[int]]:
    """``count`` user messages in ``conversation``: its session id and the message ids."""
    ids = []
    session_id = 0
    for n in range(count):
        result = await db.ingest(
            f"{prefix or conversation} {n}",
            message_id=f"{prefix or conversation}-{n}",
            conversation=f"inmemory:{conversation}",
        )
        ids.append(result.message_id)
        session_id = result.session_id
    return session_id, ids


async def age_messages(
    db: BridgeDatabase,
    ids: Sequence[int],
    *,
    days: float,
    state: str = MessageState.ANSWERED,
    **values: Any,
) -> None:
    """Make messages ``days`` old (one second apart, in id order, as real ones are) and put
    them in ``state``."""
    async with db.sessions() as session, session.begin():
        for n, message_id in enumerate(sorted(ids)):
            await session.execute(
                update(MESSAGES)
                .where(MESSAGES.c.id == message_id)
                .values(created_at=days_ago(days, plus_seconds=n), state=state, **values)
            )


async def idle_since(db: BridgeDatabase, session_id: int, *, days: float) -> None:
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(SESSIONS)
            .where(SESSIONS.c.id == session_id)
            .values(last_message_at=days_ago(days))
        )


async def messages(db: BridgeDatabase) -> dict[int, ChatMessage]:
    return {message.id: message for message in await db.messages()}


async def chat_session(db: BridgeDatabase, session_id: int) -> ChatSession:
    async with db.sessions() as session:
        found = await session.get(ChatSession, session_id)
    assert found is not None
    return found


async def changes(db: BridgeDatabase, kind: str) -> list[tuple[int, int | None]]:
    """``(session_id, message_id)`` of the change events of ``kind``, in order."""
    async with db.sessions() as session:
        rows = await session.execute(
            select(CHANGES.c.session_id, CHANGES.c.message_id)
            .where(CHANGES.c.kind == kind)
            .order_by(CHANGES.c.id)
        )
        return [(row.session_id, row.message_id) for row in rows]


async def purged_count(db: BridgeDatabase) -> int:
    async with db.sessions() as session:
        return int(
            (
                await session.execute(select(func.count()).where(MESSAGES.c.purged_at.is_not(None)))
            ).scalar_one()
        )


async def archived_count(db: BridgeDatabase) -> int:
    async with db.sessions() as session:
        return int(
            (
                await session.execute(
                    select(func.count()).where(SESSIONS.c.deleted_at.is_not(None))
                )
            ).scalar_one()
        )


async def answered(client: ApiClient, session_id: int, text: str) -> list[dict[str, Any]]:
    """Say ``text`` and wait for its delivered (echo) reply: the session's messages then."""
    sent = await client.say(session_id, text)
    items: list[dict[str, Any]] = []

    async def replied() -> bool:
        nonlocal items
        items = await client.all_pages(f"/sessions/{session_id}/messages", "before")
        return any(
            m["reply_to"] == sent["id"] and m["delivery"] == "delivered" and m["content"] == text
            for m in items
        )

    await wait_until(replied, within=20, what=f"the reply to {text!r}")
    return items
