"""The retention job on a real database: tombstones for old finished messages, archived idle
sessions, in batches, never twice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.infra.metrics import Metrics
from bridge.retention.job import RetentionJob
from bridge.retention.settings import RetentionSettings
from bridge.store.messages import MessageStore
from bridge.store.models import ChatSession, MessageState
from bridge.store.wakeups import WorkSignals
from tests.bridge.retention.rows import (
    AGENTS,
    age_messages,
    changes,
    chat_session,
    days_ago,
    idle_since,
    messages,
    stored,
)
from tests.support.processes import BridgeDatabase, bridge_database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[BridgeDatabase]:
    async with bridge_database(database_url, AGENTS) as database:
        yield database


def retention_job(db: BridgeDatabase, metrics: Metrics, **settings: Any) -> RetentionJob:
    return RetentionJob(
        settings=RetentionSettings(**settings),
        store=MessageStore(sessions=db.sessions, signals=WorkSignals()),
        metrics=metrics,
        holder="test-process",
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def batches(caplog: pytest.LogCaptureFixture, kind: str) -> list[dict[str, Any]]:
    return [
        record.fields  # type: ignore[attr-defined]
        for record in caplog.records
        if record.getMessage() == "retention.batch" and record.fields["kind"] == kind  # type: ignore[attr-defined]
    ]


async def test_old_finished_messages_become_tombstones_and_the_rest_is_kept(
    db: BridgeDatabase,
) -> None:
    session_id, old = await stored(db, 5, conversation="c1", prefix="old")
    _, (waiting,) = await stored(db, 1, conversation="c1", prefix="waiting")
    _, (after_waiting,) = await stored(db, 1, conversation="c1", prefix="behind")
    _, (recent,) = await stored(db, 1, conversation="c1", prefix="recent")
    await age_messages(db, old, days=3, attachments=[{"name": "a.txt"}], last_error="boom")
    await age_messages(db, [waiting], days=2.9, state=MessageState.PENDING)
    await age_messages(db, [after_waiting], days=2.8)
    await age_messages(db, [recent], days=0.5)
    before = await messages(db)
    count_before = (await chat_session(db, session_id)).message_count
    metrics = Metrics()
    job = retention_job(db, metrics, message_days=2)

    result = await job.run_once()

    assert (result.outcome, result.purged) == ("done", 5)
    after = await messages(db)
    assert list(after) == list(before), "every row stays, in its order"
    for message_id in old:
        tombstone = after[message_id]
        assert tombstone.content == "" and tombstone.attachments == []
        assert tombstone.last_error is None and tombstone.purged_at is not None
        assert (tombstone.session_id, tombstone.role, tombstone.state) == (
            session_id,
            "user",
            MessageState.ANSWERED,
        )
        assert tombstone.created_at == before[message_id].created_at
    for kept in (waiting, after_waiting, recent):
        assert after[kept].purged_at is None
        assert after[kept].content == before[kept].content != ""
    assert (await chat_session(db, session_id)).message_count == count_before == 8
    assert await changes(db, "message.updated") == [(session_id, i) for i in old]
    assert sample(metrics, "bridge_retention_messages_purged_total") == 5

    # The unfinished message held the scan; once it is answered, the next run goes on.
    await age_messages(db, [waiting], days=2.9)
    result = await job.run_once()
    assert result.purged == 2
    after = await messages(db)
    assert after[waiting].purged_at is not None and after[after_waiting].content == ""
    assert after[recent].content == "recent 0"
    assert (await job.run_once()).purged == 0, "nothing is purged twice"
    assert sample(metrics, "bridge_retention_messages_purged_total") == 7
    assert sample(metrics, "bridge_retention_runs_total", outcome="done") == 3
    assert sample(metrics, "bridge_retention_last_run_timestamp_seconds") > 0


async def test_idle_sessions_are_archived_and_active_ones_kept(db: BridgeDatabase) -> None:
    idle, _ = await stored(db, 1, conversation="idle")
    active, _ = await stored(db, 1, conversation="active")
    gone, _ = await stored(db, 1, conversation="gone")
    await idle_since(db, idle, days=10)
    await idle_since(db, active, days=6)
    await idle_since(db, gone, days=10)
    deleted_before = days_ago(20)
    async with db.sessions() as session, session.begin():
        row = await session.get(ChatSession, gone)
        assert row is not None
        row.deleted_at = deleted_before
    metrics = Metrics()

    result = await retention_job(db, metrics, idle_session_days=7).run_once()

    assert result.archived == 1
    assert (await chat_session(db, idle)).deleted_at is not None
    assert (await chat_session(db, active)).deleted_at is None
    assert (await chat_session(db, gone)).deleted_at == deleted_before, "left as it was"
    assert await changes(db, "session.updated") == [(idle, None)]
    assert sample(metrics, "bridge_retention_sessions_archived_total") == 1
    assert all(m.purged_at is None for m in (await messages(db)).values()), "no message_days"


async def test_fractions_of_a_day(db: BridgeDatabase) -> None:
    older, (before_cutoff,) = await stored(db, 1, conversation="older")
    newer, (after_cutoff,) = await stored(db, 1, conversation="newer")
    await age_messages(db, [before_cutoff], days=0.6)
    await age_messages(db, [after_cutoff], days=0.4)
    await idle_since(db, older, days=0.3)
    await idle_since(db, newer, days=0.2)

    result = await retention_job(db, Metrics(), message_days=0.5, idle_session_days=0.25).run_once()

    assert (result.purged, result.archived) == (1, 1)
    after = await messages(db)
    assert after[before_cutoff].purged_at is not None
    assert after[after_cutoff].purged_at is None
    assert (await chat_session(db, older)).deleted_at is not None
    assert (await chat_session(db, newer)).deleted_at is None


async def test_work_is_committed_in_batches(
    db: BridgeDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bridge.retention.job")
    _, old = await stored(db, 95, conversation="long")
    await age_messages(db, old, days=3)
    idle = [(await stored(db, 1, conversation=f"idle-{n}"))[0] for n in range(5)]
    for session_id in idle:
        await idle_since(db, session_id, days=3)
    metrics = Metrics()

    result = await retention_job(
        db, metrics, message_days=1, idle_session_days=1, batch_size=10
    ).run_once()

    assert (result.purged, result.archived) == (95, 5)
    purges = batches(caplog, "messages")
    assert len(purges) >= 10 and all(b["changed"] <= 10 for b in purges)
    assert sum(b["changed"] for b in purges) == 95
    archives = batches(caplog, "sessions")
    assert len(archives) >= 1 and sum(b["changed"] for b in archives) == 5
    assert all(m.content == "" for m in (await messages(db)).values() if m.id in old)
    assert sample(metrics, "bridge_retention_messages_purged_total") == 95
    (run,) = [r for r in caplog.records if r.getMessage() == "retention.run"]
    assert run.fields["purged"] == 95 and run.fields["archived"] == 5  # type: ignore[attr-defined]


async def test_sessions_are_archived_in_batches(
    db: BridgeDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bridge.retention.job")
    idle = [(await stored(db, 1, conversation=f"idle-{n}"))[0] for n in range(5)]
    for n, session_id in enumerate(idle):
        await idle_since(db, session_id, days=3 + n)

    result = await retention_job(db, Metrics(), idle_session_days=1, batch_size=2).run_once()

    assert result.archived == 5
    assert [b["changed"] for b in batches(caplog, "sessions")] == [2, 2, 1]
    assert all([(await chat_session(db, s)).deleted_at is not None for s in idle])


async def test_a_second_process_skips_while_the_first_holds_the_lease(
    db: BridgeDatabase,
) -> None:
    _, old = await stored(db, 3, conversation="c")
    await age_messages(db, old, days=3)
    first, second = Metrics(), Metrics()
    holder = retention_job(db, first, message_days=1)
    other = RetentionJob(
        settings=RetentionSettings(message_days=1),
        store=MessageStore(sessions=db.sessions, signals=WorkSignals()),
        metrics=second,
        holder="other-process",
    )
    assert (await holder.run_once()).purged == 3
    assert (await other.run_once()).outcome == "skipped"
    assert sample(second, "bridge_retention_runs_total", outcome="skipped") == 1
    await holder.lease.release()
    assert (await other.run_once()).outcome == "done"


async def test_nothing_runs_when_everything_is_kept_forever(db: BridgeDatabase) -> None:
    job = retention_job(db, Metrics())
    assert not job.enabled
    job.start()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "bridge-retention"]
    await job.stop()
    assert await job.lease.progress() == 0
