"""Group commit of inbound messages: what batching must not change.

Concurrent ``ingest`` calls share one transaction, yet each caller still gets its own result:
a duplicate pair in one batch stores one row and gives both callers its id; one message failing
inside the transaction fails only its own caller; a batch spanning many sessions keeps each
session's messages (and, through the real pipeline, its replies) in order; a burst of first
messages makes one session and one participant; a follow-up meant only for a conversation the
agent is in is stored when the message opening that conversation comes before it in the same
batch, and ignored when nobody opened its conversation. ``GroupCommit`` itself is checked without
a database: a lone item is a batch of one, items arriving during a write form the next batch,
``stop()`` writes what is queued, a failing batch is retried item by item, and a broken
``write`` fails its batch's callers without stopping the writer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

import pytest
from sqlalchemy import ColumnElement, func, select

from bridge.flow.batching import GroupCommit
from bridge.flow.ingest import MAX_BATCH, Ingestor
from bridge.infra.metrics import Metrics
from bridge.ports.errors import InvalidMessage
from bridge.ports.events import InboundMessage, IngestResult
from bridge.ports.registry import ChannelRegistry
from bridge.settings import A2ASettings, AgentSettings
from bridge.store.directory import sync_agents
from bridge.store.messages import MessageStore
from bridge.store.models import ChatMessage, ChatSession, Participant, SessionMember
from bridge.store.wakeups import WorkSignals
from tests.support.core import Core, core, memory_message
from tests.support.harness import make_settings, running_bridge


@dataclass
class Batched:
    """The core's database with an Ingestor whose metrics (and batch cap) the test holds."""

    core: Core
    ingest: Ingestor
    metrics: Metrics

    def batches(self) -> int:
        """How many ingest batches were written so far (retries alone are not counted)."""
        value = self.metrics.registry.get_sample_value(
            "bridge_batch_size_count", {"batch": "ingest"}
        )
        return int(value or 0)

    async def count(self, model: type, *where: ColumnElement[bool]) -> int:
        query = select(func.count()).select_from(model).where(*where)
        async with self.core.sessions() as db:
            return int((await db.execute(query)).scalar_one())

    async def stored(self) -> list[ChatMessage]:
        async with self.core.sessions() as db:
            query = select(ChatMessage).order_by(ChatMessage.id)
            return list((await db.execute(query)).scalars())


@asynccontextmanager
async def batched(database_url: str, *, max_batch: int = MAX_BATCH) -> AsyncIterator[Batched]:
    async with core(database_url) as bridge:
        metrics = Metrics()
        ingest = Ingestor(
            store=MessageStore(sessions=bridge.sessions, signals=WorkSignals()),
            agents=await sync_agents(bridge.sessions, [AgentSettings(slug="assistant")]),
            metrics=metrics,
            budget=A2ASettings(),
            capabilities=ChannelRegistry().capabilities,
            max_batch=max_batch,
        )
        try:
            yield Batched(core=bridge, ingest=ingest, metrics=metrics)
        finally:
            await ingest.stop()


async def test_duplicate_pair_in_one_batch_stores_one_row(database_url: str) -> None:
    async with batched(database_url) as bridge:
        messages = [memory_message(f"m{n}", message_id=f"m{n}") for n in range(37)]
        messages[5:5] = [memory_message("twin", message_id="twin") for _ in range(3)]
        results = await asyncio.gather(*(bridge.ingest(m) for m in messages))
        assert bridge.batches() < len(messages)  # some batch held more than one message
        twins = [
            r for m, r in zip(messages, results, strict=True) if m.external_message_id == "twin"
        ]
        assert len({r.message_id for r in twins}) == 1
        assert sorted(r.duplicate for r in twins) == [False, True, True]
        assert sum(r.duplicate for r in results) == 2
        stored = await bridge.stored()
        assert [m.external_message_id for m in stored].count("twin") == 1
        assert len(stored) == 38
        assert next(m.id for m in stored if m.external_message_id == "twin") == twins[0].message_id

        before = bridge.batches()
        again = [memory_message(f"n{n}", message_id=f"n{n}") for n in range(10)]
        again.insert(4, memory_message("m7 redelivered", message_id="m7"))
        later = await asyncio.gather(*(bridge.ingest(m) for m in again))
        assert bridge.batches() - before < len(again)
        m7 = results[[m.external_message_id for m in messages].index("m7")]
        assert later[4] == IngestResult(
            session_id=m7.session_id, message_id=m7.message_id, duplicate=True
        )
        assert not any(r.duplicate for i, r in enumerate(later) if i != 4)
        assert len(await bridge.stored()) == 48


def unstorable(message: InboundMessage) -> InboundMessage:
    """A message that passes validation but whose row cannot be written (not JSON)."""
    return dataclasses.replace(message, reply_target=cast(dict[str, str], {"bad": object()}))


async def test_message_failing_in_the_transaction_fails_only_its_caller(
    database_url: str,
) -> None:
    async with batched(database_url) as bridge:
        messages = [memory_message(f"ok {n}", message_id=f"ok{n}") for n in range(40)]
        messages.insert(17, unstorable(memory_message("bad", message_id="bad")))
        results = await asyncio.gather(
            *(bridge.ingest(m) for m in messages), return_exceptions=True
        )
        assert bridge.batches() < len(messages)  # the bad one really shared a batch
        assert isinstance(results[17], Exception)
        assert "JSON serializable" in str(results[17])
        good = [r for i, r in enumerate(results) if i != 17]
        assert all(isinstance(r, IngestResult) and not r.duplicate for r in good)
        stored = await bridge.stored()
        assert [m.external_message_id for m in stored] == [f"ok{n}" for n in range(40)]
        by_key = {m.external_message_id: m.id for m in stored}
        assert [cast(IngestResult, r).message_id for r in good] == [
            by_key[f"ok{n}"] for n in range(40)
        ]


async def test_invalid_message_in_a_burst_fails_alone(database_url: str) -> None:
    async with batched(database_url) as bridge:
        messages = [memory_message(f"ok {n}", message_id=f"ok{n}") for n in range(20)]
        messages.insert(3, memory_message("   ", message_id="empty"))
        results = await asyncio.gather(
            *(bridge.ingest(m) for m in messages), return_exceptions=True
        )
        assert isinstance(results[3], InvalidMessage)
        assert all(isinstance(r, IngestResult) for i, r in enumerate(results) if i != 3)
        stored = await bridge.stored()
        assert [m.external_message_id for m in stored] == [f"ok{n}" for n in range(20)]


def interleaved(conversations: int, per_conversation: int, seed: int) -> list[tuple[int, int]]:
    """Every ``(conversation, index)``, shuffled across conversations, each one's in order."""
    lanes = [c for c in range(conversations) for _ in range(per_conversation)]
    random.Random(seed).shuffle(lanes)
    taken: dict[int, int] = defaultdict(int)
    order = []
    for lane in lanes:
        order.append((lane, taken[lane]))
        taken[lane] += 1
    return order


@pytest.mark.parametrize("max_batch", [MAX_BATCH, 7])
async def test_batch_spanning_sessions_keeps_each_session_in_order(
    database_url: str, max_batch: int
) -> None:
    order = interleaved(20, 5, seed=max_batch)
    async with batched(database_url, max_batch=max_batch) as bridge:
        calls = [
            asyncio.create_task(
                bridge.ingest(
                    memory_message(
                        f"c{c} #{i}", message_id=f"c{c}-{i}", conversation=f"inmemory:c{c}"
                    )
                )
            )
            for c, i in order
        ]
        results = await asyncio.gather(*calls)
        assert bridge.batches() < len(order)
        ids: dict[int, list[int]] = defaultdict(list)
        sessions: dict[int, set[int]] = defaultdict(set)
        for (c, _), result in zip(order, results, strict=True):
            ids[c].append(result.message_id)
            sessions[c].add(result.session_id)
        assert all(len(s) == 1 for s in sessions.values())
        assert len(set().union(*sessions.values())) == 20
        for c in range(20):
            assert ids[c] == sorted(ids[c]), f"conversation {c} stored out of order"
        stored = {m.id: m.content for m in await bridge.stored()}
        for c in range(20):
            assert [stored[i] for i in ids[c]] == [f"c{c} #{i}" for i in range(5)]


async def test_pipeline_replies_to_a_burst_in_each_conversations_order(
    database_url: str,
) -> None:
    order = interleaved(20, 5, seed=1)
    async with running_bridge(make_settings(database_url)) as bridge:
        memory = bridge.memory()
        calls = [
            asyncio.create_task(
                memory.receive(f"c{c} #{i}", message_id=f"c{c}-{i}", conversation=f"inmemory:c{c}")
            )
            for c, i in order
        ]
        results = await asyncio.gather(*calls)
        assert not any(r.duplicate for r in results)
        for _ in order:
            await memory.next_sent()
        replies: dict[str, list[str]] = defaultdict(list)
        for reply in memory.sent:
            replies[reply.external_conv_id].append(reply.text)
        assert replies == {f"inmemory:c{c}": [f"c{c} #{i}" for i in range(5)] for c in range(20)}


@pytest.mark.parametrize("max_batch", [MAX_BATCH, 16])
async def test_200_first_messages_from_one_sender_make_one_session(
    database_url: str, max_batch: int
) -> None:
    async with batched(database_url, max_batch=max_batch) as bridge:
        results = await asyncio.gather(
            *(
                bridge.ingest(
                    memory_message(
                        f"hi {n}", message_id=f"m{n}", sender="solo", conversation="inmemory:solo"
                    )
                )
                for n in range(200)
            )
        )
        assert -(-200 // max_batch) <= bridge.batches() < 200
        assert len({r.session_id for r in results}) == 1
        assert len({r.message_id for r in results}) == 200
        assert await bridge.count(ChatSession) == 1
        assert await bridge.count(Participant, Participant.kind == "user") == 1
        assert await bridge.count(SessionMember) == 1
        assert await bridge.count(ChatMessage) == 200
        async with bridge.core.sessions() as db:
            session = (await db.execute(select(ChatSession))).scalar_one()
        assert session.message_count == 200


async def test_follow_up_batched_with_the_message_opening_its_conversation_is_stored(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    opening = memory_message(
        "@assistant look",
        message_id="open",
        conversation="inmemory:thread",
        is_group=True,
        mentions=("assistant",),
    )
    stray = memory_message(
        "not for you",
        message_id="stray",
        conversation="inmemory:other",
        is_group=True,
        only_if_engaged=True,
    )
    follow_up = memory_message(
        "and this",
        message_id="follow",
        conversation="inmemory:thread",
        is_group=True,
        only_if_engaged=True,
    )
    caplog.set_level(logging.WARNING, logger="bridge.flow.batching")
    async with batched(database_url) as bridge:
        results = await asyncio.gather(*(bridge.ingest(m) for m in (opening, stray, follow_up)))
        assert bridge.batches() == 1  # one batch held all three ...
        assert not [r for r in caplog.records if r.getMessage() == "batch.retried_alone"]
        opened, ignored, followed = results  # ... and it was not retried item by item
        assert not opened.ignored and not opened.duplicate
        assert ignored == IngestResult(session_id=0, message_id=0, duplicate=False, ignored=True)
        assert not followed.ignored and not followed.duplicate
        assert followed.session_id == opened.session_id
        assert followed.message_id > opened.message_id
        stored = await bridge.stored()
        assert [(m.external_message_id, m.session_id, m.id) for m in stored] == [
            ("open", opened.session_id, opened.message_id),
            ("follow", opened.session_id, followed.message_id),
        ]
        assert await bridge.count(ChatSession) == 1
        assert (
            await bridge.count(ChatSession, ChatSession.external_conv_id == "inmemory:other") == 0
        )


class FakeWriter:
    """A ``write`` for GroupCommit that records each batch; it can hold a batch until
    released, fails any batch holding ``"bad"``, and answers ``"odd"`` with an exception.
    Set ``missing`` to break it: it then answers that many results too few."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.writing = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.missing = 0

    async def write(self, batch: Sequence[str]) -> list[str | BaseException]:
        self.batches.append(list(batch))
        self.writing.set()
        await self.release.wait()
        if "bad" in batch:
            raise ValueError("the transaction failed")
        results: list[str | BaseException] = [
            LookupError(item) if item == "odd" else item.upper() for item in batch
        ]
        return results[: len(results) - self.missing]

    def hold(self) -> None:
        self.release.clear()
        self.writing.clear()


def group(writer: FakeWriter, max_batch: int = 100) -> GroupCommit[str, str]:
    return GroupCommit(name="test", write=writer.write, max_batch=max_batch)


async def test_idle_group_commit_writes_a_lone_item_at_once() -> None:
    writer = FakeWriter()
    commit = group(writer)
    writer.hold()
    lone = asyncio.create_task(commit.submit("a"))
    for _ in range(10):  # a few turns of the event loop, no waiting for company
        await asyncio.sleep(0)
    assert writer.batches == [["a"]]
    writer.release.set()
    assert await lone == "A"
    assert await commit.submit("b") == "B"
    assert writer.batches == [["a"], ["b"]]
    await commit.stop()


async def test_items_arriving_during_a_write_form_the_next_batch() -> None:
    writer, metrics = FakeWriter(), Metrics()
    commit = GroupCommit(name="test", write=writer.write, max_batch=100, sizes=metrics.batch_size)
    writer.hold()
    first = asyncio.create_task(commit.submit("first"))
    await writer.writing.wait()
    later = [asyncio.create_task(commit.submit(f"x{n}")) for n in range(9)]
    await asyncio.sleep(0)  # let each submit queue its item
    writer.release.set()
    assert await first == "FIRST"
    assert await asyncio.gather(*later) == [f"X{n}" for n in range(9)]
    assert [len(b) for b in writer.batches] == [1, 9]
    observed = [
        metrics.registry.get_sample_value(f"bridge_batch_size_{name}", {"batch": "test"})
        for name in ("count", "sum")
    ]
    assert observed == [2, 10]
    await commit.stop()


async def test_max_batch_caps_a_batch() -> None:
    writer = FakeWriter()
    commit = group(writer, max_batch=4)
    assert len(await asyncio.gather(*(commit.submit(f"x{n}") for n in range(10)))) == 10
    assert [len(b) for b in writer.batches] == [4, 4, 2]
    await commit.stop()


async def test_stop_writes_what_is_queued_first() -> None:
    writer = FakeWriter()
    commit = group(writer)
    writer.hold()
    first = asyncio.create_task(commit.submit("first"))
    await writer.writing.wait()
    queued = [asyncio.create_task(commit.submit(f"q{n}")) for n in range(5)]
    await asyncio.sleep(0)
    stopping = asyncio.create_task(commit.stop())
    await asyncio.sleep(0)
    writer.release.set()
    await stopping
    assert all(task.done() for task in [first, *queued])
    assert [task.result() for task in queued] == [f"Q{n}" for n in range(5)]
    assert writer.batches == [["first"], [f"q{n}" for n in range(5)]]
    with pytest.raises(RuntimeError, match="stopped"):
        await commit.submit("too late")


async def test_failed_batch_is_retried_alone_and_fails_only_its_item() -> None:
    writer = FakeWriter()
    commit = group(writer)
    items = ["a", "b", "bad", "odd", "c"]
    results = await asyncio.gather(*(commit.submit(i) for i in items), return_exceptions=True)
    assert writer.batches == [items, ["a"], ["b"], ["bad"], ["odd"], ["c"]]
    assert results[:2] == ["A", "B"] and results[4] == "C"
    assert isinstance(results[2], ValueError)
    assert isinstance(results[3], LookupError)
    await commit.stop()


async def test_broken_write_fails_its_batch_and_the_writer_keeps_serving() -> None:
    writer = FakeWriter()
    commit = group(writer)
    async with asyncio.timeout(5):  # a regression hangs the callers: fail instead
        writer.missing = 3  # no result at all for a batch of three
        results = await asyncio.gather(
            *(commit.submit(i) for i in ("a", "b", "c")), return_exceptions=True
        )
        assert writer.batches == [["a", "b", "c"]]
        assert all(isinstance(r, RuntimeError) for r in results), results

        writer.missing = 1  # one result short: none can be trusted to be its caller's
        results = await asyncio.gather(
            *(commit.submit(i) for i in ("d", "e", "f")), return_exceptions=True
        )
        assert writer.batches[1:] == [["d", "e", "f"]]
        assert all(isinstance(r, RuntimeError) for r in results), results

        writer.missing = 0
        assert await commit.submit("g") == "G"
        assert list(await asyncio.gather(commit.submit("h"), commit.submit("i"))) == ["H", "I"]
        assert writer.batches[2:] == [["g"], ["h", "i"]]
        await commit.stop()
