"""The message store: the one place that writes message rows, records the change events of a
transaction and wakes the workers once it has committed.

Every step of the flow (and the API, hand-offs, asks) writes through :meth:`MessageStore.write`:

    async with store.write() as writes:
        ids = await writes.insert_messages(rows)
        writes.changed("message.created", session_id, ids[0])
        writes.wake(ANSWER.name)

On commit the change events are inserted and one ``NOTIFY`` per kind is queued in the same
transaction (other processes hear of it exactly when it is visible); after the commit this
process's own workers and feed are woken. Nothing is woken for a rolled-back transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import BigInteger, Insert, String, TextClause, bindparam, select, text, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import ReturningInsert

from bridge.store.engine import insert
from bridge.store.feed import FEED, ChangeKind
from bridge.store.models import CHANGES, MESSAGES, MessageState, UTCDateTime, utcnow
from bridge.store.wakeups import NOTIFY_CHANNEL, WorkSignals

MessageKey = tuple[int, str]
"""``(session_id, external_message_id)``: what makes a message unique."""


@cache
def _insert_messages(dialect: str) -> ReturningInsert[Any]:
    """Built once per dialect: a row whose key exists is skipped and returns nothing."""
    m = MESSAGES.c
    return (
        insert(dialect, MESSAGES)
        .on_conflict_do_nothing(index_elements=["session_id", "external_message_id"])
        .returning(m.id, m.session_id, m.external_message_id)
    )


@cache
def _insert_unkeyed() -> ReturningInsert[Any]:
    return MESSAGES.insert().returning(MESSAGES.c.id, sort_by_parameter_order=True)


@cache
def _existing_messages() -> Any:
    m = MESSAGES.c
    return select(m.id, m.session_id, m.external_message_id).where(
        tuple_(m.session_id, m.external_message_id).in_(bindparam("keys", expanding=True))
    )


@cache
def _insert_change() -> Insert:
    return CHANGES.insert()


@cache
def _record_and_notify() -> TextClause:
    """PostgreSQL: the transaction's change events and its NOTIFYs in one statement (one
    round trip, one execution, whatever the batch size)."""
    return text(
        """
        WITH recorded AS (
            INSERT INTO change_events (kind, session_id, message_id, created_at)
            SELECT kind, session_id, message_id, :now
            FROM unnest(:kinds, :sessions, :messages)
                WITH ORDINALITY AS c(kind, session_id, message_id, position)
            ORDER BY position
        )
        SELECT pg_notify(:channel, kind) FROM unnest(:woken) AS w(kind)
        """
    ).bindparams(
        bindparam("kinds", type_=ARRAY(String())),
        bindparam("sessions", type_=ARRAY(BigInteger())),
        bindparam("messages", type_=ARRAY(BigInteger())),
        bindparam("now", type_=UTCDateTime()),
        bindparam("woken", type_=ARRAY(String())),
    )


class Writes:
    """One transaction of the store: statements through :attr:`db`, message rows through
    :meth:`insert_messages`, and what to record and wake when it commits."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db
        self.now = utcnow()
        self._changes: list[dict[str, Any]] = []
        self.woken: set[str] = set()
        self.rolled_back = False

    @property
    def dialect(self) -> str:
        return self.db.get_bind().dialect.name

    def changed(self, kind: ChangeKind, session_id: int, message_id: int | None) -> None:
        """A change live clients see (a ``change_events`` row, written on commit)."""
        self._changes.append(
            {
                "kind": kind,
                "session_id": session_id,
                "message_id": message_id,
                "created_at": self.now,
            }
        )
        self.woken.add(FEED)

    def wake(self, kind: str) -> None:
        """Wake the workers of ``kind`` (in every process) once this commits."""
        self.woken.add(kind)

    def roll_back(self) -> None:
        """Write nothing of this transaction and wake nobody."""
        self.rolled_back = True

    async def insert_messages(self, rows: Sequence[dict[str, Any]]) -> list[int | None]:
        """Insert message rows, in order (ids grow with it, which keeps a session in order);
        each row's new id, or None where its ``(session_id, external_message_id)`` was already
        stored (or repeats an earlier row of ``rows``). One statement per run of rows with
        and without an external id (in practice one: a batch is all one or the other)."""
        ids: list[int | None] = []
        start = 0
        while start < len(rows):
            keyed = rows[start]["external_message_id"] is not None
            end = start
            while end < len(rows) and (rows[end]["external_message_id"] is not None) == keyed:
                end += 1
            run = rows[start:end]
            ids += await (self._insert_keyed(run) if keyed else self._insert_unkeyed(run))
            start = end
        return ids

    async def _insert_keyed(self, rows: Sequence[dict[str, Any]]) -> list[int | None]:
        ids: list[int | None] = [None] * len(rows)
        first: dict[MessageKey, int] = {}
        for index, row in enumerate(rows):
            first.setdefault((row["session_id"], row["external_message_id"]), index)
        stored = await self.db.execute(
            _insert_messages(self.dialect), [rows[index] for index in first.values()]
        )
        for row in stored:
            ids[first[(row.session_id, row.external_message_id)]] = row.id
        return ids

    async def _insert_unkeyed(self, rows: Sequence[dict[str, Any]]) -> list[int | None]:
        """Nothing to skip (no key), so every row is inserted and RETURNING, kept in
        parameter order, gives each its id."""
        stored = await self.db.execute(_insert_unkeyed(), list(rows))
        return [row.id for row in stored]

    async def existing_messages(self, keys: Sequence[MessageKey]) -> dict[MessageKey, int]:
        """The ids of stored messages by key (those that :meth:`insert_messages` skipped)."""
        if not keys:
            return {}
        found = await self.db.execute(_existing_messages(), {"keys": list(set(keys))})
        return {(row.session_id, row.external_message_id): row.id for row in found}

    async def _flush(self) -> None:
        if self.dialect == "postgresql":
            if self.woken:
                await self.db.execute(_record_and_notify(), self._record_parameters())
        elif self._changes:
            await self.db.execute(_insert_change(), self._changes)

    def _record_parameters(self) -> dict[str, Any]:
        return {
            "kinds": [change["kind"] for change in self._changes],
            "sessions": [change["session_id"] for change in self._changes],
            "messages": [change["message_id"] for change in self._changes],
            "now": self.now,
            "channel": NOTIFY_CHANNEL,
            "woken": sorted(self.woken),
        }


class MessageStore:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], signals: WorkSignals) -> None:
        self.sessions = sessions
        self._signals = signals

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Writes]:
        """One transaction: commits (with its change events and NOTIFYs) when the block ends,
        rolls back on an exception or :meth:`Writes.roll_back`; wakes after the commit."""
        async with self.sessions() as db, db.begin() as transaction:
            writes = Writes(db)
            yield writes
            if writes.rolled_back:
                await transaction.rollback()
                return
            await writes._flush()
        for kind in writes.woken:
            self._signals.wake(kind)


def new_delivery_key() -> str:
    """Stable id of one reply's delivery; 24 characters fit Discord's 25-character nonce."""
    return secrets.token_hex(12)


def message_row(
    *,
    session_id: int,
    sender_participant_id: int | None,
    role: str,
    content: str,
    channel: str,
    reply_target: dict[str, str],
    state: str,
    now: datetime,
    external_message_id: str | None = None,
    attachments: list[dict[str, Any]] | None = None,
    reply_to_message_id: int | None = None,
    delivery_key: str | None = None,
    chain_origin_id: int | None = None,
    chain_hops: int = 0,
    last_error: str | None = None,
) -> dict[str, Any]:
    """Every column of a new message row, so every row of one insert has the same shape."""
    return {
        "session_id": session_id,
        "sender_participant_id": sender_participant_id,
        "role": role,
        "content": content,
        "external_message_id": external_message_id,
        "reply_to_message_id": reply_to_message_id,
        "channel": channel,
        "reply_target": reply_target,
        "attachments": attachments or [],
        "state": state,
        "attempts": 0,
        "last_error": last_error,
        "delivery_key": delivery_key,
        "delivery_in_doubt": False,
        "platform_message_ids": [],
        "reply_key": new_delivery_key() if state == MessageState.PENDING else None,
        "live_message_ids": None,
        "chain_origin_id": chain_origin_id,
        "chain_hops": chain_hops,
        "created_at": now,
        "updated_at": now,
    }
