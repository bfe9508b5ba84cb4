"""A crash between a batch's commit and its acknowledgements: every event answered once.

Inbound Slack events are stored by group commit, and each request is acknowledged only after
its batch committed. If the process dies right after a commit, Slack may have got none (or only
some) of those 200s, so it redelivers those events to the next process. That process must see
that the events are already stored (nothing committed is lost or stored twice) and answer each
one exactly once, whether the dead process had answered it, was posting its reply or had not
started yet.

The test runs the real ``bridge serve`` with a Slack agent (echo backend) pointed at the strict
Slack fake, on SQLite and on PostgreSQL. The first burst's responses are ignored: the test
waits until the database holds every event, kills the bridge with SIGKILL at once, starts a new
one on the same database and redelivers every event as a Slack retry.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import select

from bridge.settings import DatabaseSettings
from bridge.store.engine import create_engine, session_factory
from bridge.store.models import ChatMessage
from tests.fakes.slack import PushResult
from tests.support.load import (
    FaultySlack,
    LoadEvent,
    SendReport,
    assert_exactly_once,
    database_counts,
    dm_events,
    new_tag,
    posts_per_marker,
    slack_bridge_config,
    wait_answered,
    wait_idle,
)
from tests.support.processes import serving_bridge, wait_until

BOT_TOKEN = "xoxb-commit-crash-token"
SIGNING_SECRET = "commit-crash-signing-secret"
AGENT = "assistant"

EVENTS = 200
CONVERSATIONS = 20
CONCURRENCY = 32
# Generous caps; a healthy run needs a small fraction of them.
WITHIN = 30.0
REQUEST_DEADLINE = 10.0
pytestmark = pytest.mark.timeout(150)

DUPLICATE = re.compile(r" message\.duplicate .*\bexternal_id=(\S+)")
INGESTED = re.compile(r" message\.ingested ")


@pytest.fixture
async def fake() -> AsyncIterator[FaultySlack]:
    async with FaultySlack(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET) as running:
        yield running


def bridge_config(tmp_path: Path, *, database_url: str, fake: FaultySlack) -> Path:
    return slack_bridge_config(
        tmp_path / "bridge.toml", database_url=database_url, fake=fake, agent=AGENT
    )


async def push_all(
    fake: FaultySlack, url: str, events: Sequence[LoadEvent], *, retry_num: int | None
) -> list[PushResult | BaseException]:
    """Every event once, signed as Slack signs it, at most ``CONCURRENCY`` in flight; what
    each request got (a response, or the error when the connection died)."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def push(event: LoadEvent) -> PushResult:
        async with gate:
            return await fake.push_event(
                url, event.body, retry_num=retry_num, deadline=REQUEST_DEADLINE
            )

    return await asyncio.gather(*(push(event) for event in events), return_exceptions=True)


async def stored_user_messages(database_url: str) -> dict[str, int]:
    """The stored user messages, from a connection of the test's own: external id (the
    Slack ts) to row id."""
    engine = create_engine(DatabaseSettings(url=database_url, pool_size=1))
    try:
        async with session_factory(engine)() as db:
            rows = (
                await db.execute(
                    select(ChatMessage.external_message_id, ChatMessage.id).where(
                        ChatMessage.role == "user"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    stored: dict[str, int] = {}
    for external_id, message_id in rows:
        assert external_id not in stored, f"event {external_id} stored twice"
        stored[str(external_id)] = int(message_id)
    return stored


async def test_crash_after_commit_then_slack_redelivers_everything_answers_each_once(
    database_url: str, tmp_path: Path, fake: FaultySlack
) -> None:
    """Bridge A stores a burst of 200 DMs over 20 conversations and is killed the moment the
    last one is committed, its replies in several stages. Bridge B, on the same database,
    gets every event again as Slack's retry: it acknowledges each (a redelivery is a no-op, not
    an error), stores nothing new, loses nothing A committed, and every event ends with exactly
    one reply posted in its own DM."""
    tag = new_tag()
    events = dm_events(fake, count=EVENTS, conversations=CONVERSATIONS, tag=tag)
    by_ts = {event.ts: event for event in events}
    assert len(by_ts) == EVENTS
    config = bridge_config(tmp_path, database_url=database_url, fake=fake)

    async def all_stored() -> bool:
        return (await database_counts(database_url)).user_messages >= EVENTS

    # --- bridge A: stores the burst, dies right after the last commit ----------------------
    async with serving_bridge(config, cwd=tmp_path) as first:
        # Slack's view: no response of this burst counts (it is never looked at), as if
        # every acknowledgement had been lost with the crash.
        burst = asyncio.create_task(
            push_all(fake, f"{first.url}/slack/{AGENT}/events", events, retry_num=None)
        )
        await wait_until(all_stored, within=WITHIN, interval=0.02, what="every event stored")
        first.kill()
        assert await first.wait() == -signal.SIGKILL
        async with asyncio.timeout(WITHIN):
            await burst  # requests still open when the process died end in errors
    committed = await stored_user_messages(database_url)
    assert set(committed) == set(by_ts), "A committed exactly the events of the burst"
    answered_by_a = posts_per_marker(fake, tag)
    assert all(n == 1 for n in answered_by_a.values()), "A posted nothing twice"
    # The scenario needs both kinds: replies A posted (a redelivery must not answer them
    # again) and events A never answered (B must answer them). Typically a third are posted.
    assert 0 < len(answered_by_a) < EVENTS, f"A posted {len(answered_by_a)} replies"

    # --- bridge B: Slack redelivers every event, as a retry --------------------------------
    async with serving_bridge(config, cwd=tmp_path) as second:
        redelivered = await push_all(
            fake, f"{second.url}/slack/{AGENT}/events", events, retry_num=1
        )
        statuses = [
            result.status if isinstance(result, PushResult) else repr(result)
            for result in redelivered
        ]
        assert statuses == [200] * EVENTS, f"every redelivery acknowledged: {statuses}"
        assert all(
            result.request_headers.get("X-Slack-Retry-Num") == "1"
            for result in redelivered
            if isinstance(result, PushResult)
        )
        await wait_answered(fake, {e.marker for e in events}, tag=tag, within=WITHIN)
        await wait_idle(database_url, within=WITHIN)
        # A graceful stop finishes or hands back whatever is still in flight, so an answer
        # B would have given twice is posted (or stored) by the time it exits.
        second.terminate()
        assert await second.wait(within=30) == 0, second.log[-5000:]
        log = second.log

    # Every event answered exactly once, in its own DM; nothing posted that was not sent.
    report = SendReport(acknowledged={event.marker for event in events})
    counts = assert_exactly_once(fake, events, report, tag=tag)
    assert sorted(counts.values()) == [1] * EVENTS
    assert len(fake.posts) == EVENTS, "no post besides the one reply per event"

    # Nothing A committed was lost or stored again: the same rows, every redelivery a no-op.
    assert await stored_user_messages(database_url) == committed, (
        "the user messages are no longer the rows A committed"
    )
    duplicates = [found.group(1) for found in map(DUPLICATE.search, log.splitlines()) if found]
    assert sorted(duplicates) == sorted(by_ts), "B found each redelivered event stored once"
    assert not INGESTED.search(log), "B stored no event anew"

    totals = await database_counts(database_url)
    assert (totals.user_messages, totals.replies, totals.waiting) == (EVENTS, EVENTS, 0)
    assert totals.by_state == {"answered": EVENTS, "delivered": EVENTS}, totals.by_state
    assert totals.sessions == CONVERSATIONS
