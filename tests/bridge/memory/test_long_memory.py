"""Long memory through the real app on both databases: an openai agent with a window of four
messages and ``memory.summarize`` folds what the window drops into the session's summary,
incrementally, and sends the summary ahead of the window; ``/reset`` and the idle reset
forget it; a failed fold never stops the answer."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from sqlalchemy import update

from bridge.store.models import ChatSession
from tests.bridge.memory.conversation import (
    API_KEY,
    FOLDS,
    LEAD,
    SYSTEM_PROMPT,
    remembering_agent,
    say,
    summary_of,
    systems,
    window,
)
from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.harness import make_settings, running_bridge
from tests.support.metrics import metric
from tests.support.processes import wait_until


async def test_dropped_messages_are_folded_incrementally_and_sent_ahead_of_the_window(
    database_url: str, model: FakeOpenAIServer
) -> None:
    settings = make_settings(database_url, agents=[remembering_agent(model)])
    async with running_bridge(settings) as bridge:
        memory = bridge.memory()
        for text in ("m1", "m2", "m3"):
            messages = await say(memory, model, text)
            assert systems(messages) == [SYSTEM_PROMPT]
        assert window(messages) == ["m1", "re: m1", "m2", "re: m2"]
        assert model.folds == [], "nothing has left the window yet"

        # m4: the window holds m2 .. re: m3, so m1 and its reply are folded first.
        messages = await say(memory, model, "m4")
        (fold,) = model.folds
        assert fold.previous is None
        assert fold.lines == ("Ada: m1", "Assistant: re: m1")
        first = "[Ada: m1; Assistant: re: m1]"
        assert systems(messages) == [SYSTEM_PROMPT, LEAD + first]
        assert messages[1] == {"role": "system", "content": LEAD + first}  # right after
        assert window(messages) == ["m2", "re: m2", "m3", "re: m3"]
        fold_request = fold.record.json
        assert fold_request["model"] == "gpt-test" and "stream" not in fold_request
        assert fold.record.headers["Authorization"] == f"Bearer {API_KEY}"

        # m5: only m2 and its reply are new to fold; m1 is never sent again.
        messages = await say(memory, model, "m5")
        assert len(model.folds) == 2
        assert model.folds[1].previous == first
        assert model.folds[1].lines == ("Ada: m2", "Assistant: re: m2")
        second = f"{first} [Ada: m2; Assistant: re: m2]"
        assert systems(messages) == [SYSTEM_PROMPT, LEAD + second]
        assert window(messages) == ["m3", "re: m3", "m4", "re: m4"]

        session_id = (await bridge.messages())[0].session_id
        summary, through = await summary_of(bridge, session_id)
        assert summary == second
        m2 = next(m for m in await bridge.messages() if m.content == "m2")
        assert through == m2.id
        # What a fold costs counts with the answer it came before (the fake reports 1 + 1).
        m5 = next(m for m in await bridge.messages() if m.content == "m5")
        assert (m5.input_tokens, m5.output_tokens) == (2, 2)
        assert await metric(bridge, FOLDS + '"folded"}') == 2
        assert await metric(bridge, 'bridge_memory_folded_messages_total{agent="assistant"}') == 4
        every_folded = [line for fold in model.folds for line in fold.lines]
        assert len(every_folded) == len(set(every_folded)), "no message is folded twice"


async def test_reset_forgets_the_summary(database_url: str, model: FakeOpenAIServer) -> None:
    settings = make_settings(database_url, agents=[remembering_agent(model)])
    async with running_bridge(settings) as bridge:
        memory = bridge.memory()
        for text in ("m1", "m2", "m3", "m4"):
            await say(memory, model, text)
        session_id = (await bridge.messages())[0].session_id
        assert (await summary_of(bridge, session_id))[0] is not None

        await memory.receive("/reset")
        await memory.next_sent()
        assert await summary_of(bridge, session_id) == (None, None)

        messages = await say(memory, model, "fresh start")
        assert systems(messages) == [SYSTEM_PROMPT], "no summary after a reset"
        assert window(messages) == []
        for text in ("n2", "n3"):
            await say(memory, model, text)
        assert len(model.folds) == 1, "nothing of the new context has left the window"
        # n4: the new context overflows; only its own first exchange is folded, from scratch.
        messages = await say(memory, model, "n4")
        assert len(model.folds) == 2
        assert model.folds[1].previous is None
        assert model.folds[1].lines == ("Ada: fresh start", "Assistant: re: fresh start")
        assert systems(messages)[1] == LEAD + "[Ada: fresh start; Assistant: re: fresh start]"


async def test_the_idle_reset_forgets_the_summary(
    database_url: str, model: FakeOpenAIServer
) -> None:
    settings = make_settings(database_url, agents=[remembering_agent(model, idle_reset_hours=2)])
    async with running_bridge(settings) as bridge:
        memory = bridge.memory()
        for text in ("m1", "m2", "m3", "m4"):
            await say(memory, model, text)
        session_id = (await bridge.messages())[0].session_id
        assert (await summary_of(bridge, session_id))[0] is not None
        async with bridge.sessions() as db, db.begin():
            session = await db.get(ChatSession, session_id)
            assert session is not None
            await db.execute(
                update(ChatSession)
                .where(ChatSession.id == session_id)
                .values(last_message_at=session.last_message_at - timedelta(hours=3))
            )
        messages = await say(memory, model, "after lunch")
        assert systems(messages) == [SYSTEM_PROMPT]
        assert window(messages) == []
        assert await summary_of(bridge, session_id) == (None, None)
        assert len(model.folds) == 1, "nothing was folded for the new context"


async def test_a_failed_fold_still_answers_with_the_window_alone(
    database_url: str, model: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.memory.recall")
    settings = make_settings(database_url, agents=[remembering_agent(model)])
    async with running_bridge(settings) as bridge:
        memory = bridge.memory()
        for text in ("m1", "m2", "m3"):
            await say(memory, model, text)
        model.fail_folds_next(1)
        messages = await say(memory, model, "m4")
        (failed,) = model.folds
        assert failed.answer is None
        assert systems(messages) == [SYSTEM_PROMPT], "no summary, but an answer"
        assert window(messages) == ["m2", "re: m2", "m3", "re: m3"]
        (record,) = [r for r in caplog.records if r.getMessage() == "memory.fold_failed"]
        fields = record.fields  # type: ignore[attr-defined]
        assert "HTTP 500" in fields["reason"] and fields["outcome"] == "failed"
        assert API_KEY not in str(fields)
        assert await metric(bridge, FOLDS + '"failed"}') == 1
        session_id = (await bridge.messages())[0].session_id
        assert await summary_of(bridge, session_id) == (None, None)

        # The next answer folds everything dropped since: what failed is not lost.
        messages = await say(memory, model, "m5")
        assert model.folds[1].previous is None
        assert model.folds[1].lines == (
            "Ada: m1",
            "Assistant: re: m1",
            "Ada: m2",
            "Assistant: re: m2",
        )
        assert systems(messages)[1].startswith(LEAD + "[Ada: m1;")
        assert await metric(bridge, FOLDS + '"folded"}') == 1


async def test_a_fold_that_lost_the_race_stores_nothing_and_the_answer_goes_ahead(
    database_url: str, model: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    """While the model summarizes, another fold (another process) stores its summary: this
    fold's write finds the bookmark moved and leaves theirs alone."""
    caplog.set_level(logging.WARNING, logger="bridge.memory.recall")
    settings = make_settings(database_url, agents=[remembering_agent(model)])
    async with running_bridge(settings) as bridge:
        memory = bridge.memory()
        for text in ("m1", "m2", "m3"):
            await say(memory, model, text)
        session_id = (await bridge.messages())[0].session_id
        model.fold_gate = asyncio.Event()
        model.add_reply("re: m4")
        await memory.receive("m4", sender_name="Ada")
        await wait_until(lambda: len(model.folds) == 1, within=10, what="the fold request")
        first = (await bridge.messages())[0]
        async with bridge.sessions() as db, db.begin():
            await db.execute(
                update(ChatSession)
                .where(ChatSession.id == session_id)
                .values(summary="theirs", summary_through_message_id=first.id)
            )
        model.fold_gate.set()
        assert (await memory.next_sent()).text == "re: m4"
        assert systems(model.answers[-1].json["messages"]) == [SYSTEM_PROMPT]
        assert await summary_of(bridge, session_id) == ("theirs", first.id)
        assert await metric(bridge, FOLDS + '"lost"}') == 1
        assert await metric(bridge, FOLDS + '"folded"}') == 0
        (record,) = [r for r in caplog.records if r.getMessage() == "memory.fold_failed"]
        assert record.fields["outcome"] == "lost"  # type: ignore[attr-defined]


async def test_an_agent_without_summarize_never_folds(
    database_url: str, model: FakeOpenAIServer
) -> None:
    agent = remembering_agent(model, memory={"summarize": False})
    async with running_bridge(make_settings(database_url, agents=[agent])) as bridge:
        memory = bridge.memory()
        for text in ("m1", "m2", "m3", "m4", "m5"):
            messages = await say(memory, model, text)
        assert model.folds == []
        assert systems(messages) == [SYSTEM_PROMPT]
        assert window(messages) == ["m3", "re: m3", "m4", "re: m4"]


async def test_a_reply_stored_after_the_next_message_is_folded_with_what_it_answers(
    database_url: str, model: FakeOpenAIServer
) -> None:
    """A's reply is stored after B arrived (its id is larger than B's, its place in the
    conversation is not): the fold takes A with its reply, then B with its own, and B is
    not skipped for having a smaller id than A's reply."""
    agent = remembering_agent(model, history_messages=2)
    async with running_bridge(make_settings(database_url, agents=[agent])) as bridge:
        memory = bridge.memory()
        model.release = asyncio.Event()
        model.add_reply("re: A", "re: B")
        first = await memory.receive("A", sender_name="Ada")
        await wait_until(
            lambda: bool(model.streams) and model.streams[0].sent >= 2,
            within=10,
            what="the answer to A streaming",
        )
        second = await memory.receive("B", sender_name="Ada")
        model.release.set()
        assert [(await memory.next_sent()).text for _ in range(2)] == ["re: A", "re: B"]
        reply_to_a = await bridge.reply_to(first.message_id)
        assert reply_to_a.id > second.message_id, "the scenario: A's reply came after B"

        messages = await say(memory, model, "C")
        assert [fold.lines for fold in model.folds] == [("Ada: A", "Assistant: re: A")]
        assert window(messages) == ["B", "re: B"]
        await say(memory, model, "D")
        assert model.folds[1].lines == ("Ada: B", "Assistant: re: B")
        _, through = await summary_of(bridge, first.session_id)
        assert through == second.message_id
