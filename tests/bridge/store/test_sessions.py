"""Find-or-create of sessions and participants: race-free within and across processes."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from bridge.ports.errors import InvalidMessage, UnknownAgent
from bridge.ports.events import MessageEdit
from bridge.store.models import ChatMessage, ChatSession, Participant, SessionMember, utcnow
from tests.support.core import Core, core, memory_message

ROOT = Path(__file__).resolve().parents[3]


async def count(bridge: Core, model: type) -> int:
    async with bridge.sessions() as db:
        return int((await db.execute(select(func.count()).select_from(model))).scalar_one())


async def assert_one_contended_session(bridge: Core, *, messages: int) -> None:
    async with bridge.sessions() as db:
        sessions = list((await db.execute(select(ChatSession))).scalars())
        assert len(sessions) == 1
        assert sessions[0].message_count == messages
        senders = (
            await db.execute(
                select(func.count()).select_from(Participant).where(Participant.kind == "user")
            )
        ).scalar_one()
        assert senders == 10
    assert await count(bridge, SessionMember) == 10
    assert await count(bridge, ChatMessage) == messages


async def test_200_concurrent_first_messages_give_one_session(database_url: str) -> None:
    async with core(database_url) as bridge:
        results = await asyncio.gather(
            *(
                bridge.ingest(
                    memory_message(
                        f"hi {n}",
                        message_id=f"m{n}",
                        sender=f"sender-{n % 10}",
                        conversation="inmemory:contended",
                    )
                )
                for n in range(200)
            )
        )
        assert len({r.session_id for r in results}) == 1
        assert not any(r.duplicate for r in results)
        await assert_one_contended_session(bridge, messages=200)


async def test_two_processes_racing_on_one_postgresql_give_one_session(postgres_url: str) -> None:
    start_at = time.time() + 2.0
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.contend",
            postgres_url,
            str(index),
            "100",
            str(start_at),
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        for index in range(2)
    ]
    outputs = [await p.communicate() for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()
    async with core(postgres_url) as bridge:
        await assert_one_contended_session(bridge, messages=200)


async def test_thread_session_links_to_its_channel_session(database_url: str) -> None:
    async with core(database_url) as bridge:
        result = await bridge.ingest(
            memory_message(
                "in a thread",
                message_id="t1",
                conversation="inmemory:chan:thread-1",
                parent_conv_id="inmemory:chan",
                is_group=True,
                group_name="#general",
            )
        )
        async with bridge.sessions() as db:
            thread = await db.get(ChatSession, result.session_id)
            assert thread is not None and thread.parent_session_id is not None
            parent = await db.get(ChatSession, thread.parent_session_id)
        assert parent is not None and parent.external_conv_id == "inmemory:chan"
        assert thread.is_group and thread.group_name == "#general"
        assert thread.participant_id is None  # a group session belongs to no single person


async def test_group_name_and_counters_follow_activity(database_url: str) -> None:
    async with core(database_url) as bridge:
        group = {"is_group": True, "conversation": "inmemory:grp"}
        first = await bridge.ingest(memory_message("a", message_id="g1", group_name="old", **group))
        await bridge.ingest(
            memory_message("b", message_id="g2", sender="user-2", group_name="renamed", **group)
        )
        async with bridge.sessions() as db:
            session = await db.get(ChatSession, first.session_id)
            members = (
                await db.execute(
                    select(func.count()).where(SessionMember.session_id == first.session_id)
                )
            ).scalar_one()
        assert session is not None
        assert (session.group_name, session.message_count, members) == ("renamed", 2, 2)
        assert session.last_message_at >= session.created_at


async def test_soft_deleted_session_is_revived_by_new_activity(database_url: str) -> None:
    async with core(database_url) as bridge:
        first = await bridge.ingest(memory_message("before", message_id="d1"))
        async with bridge.sessions() as db, db.begin():
            await db.execute(
                update(ChatSession)
                .where(ChatSession.id == first.session_id)
                .values(deleted_at=utcnow())
            )
        again = await bridge.ingest(memory_message("after", message_id="d2"))
        assert again.session_id == first.session_id
        async with bridge.sessions() as db:
            session = await db.get(ChatSession, first.session_id)
        assert session is not None and session.deleted_at is None


async def test_participant_display_name_is_kept_current(database_url: str) -> None:
    async with core(database_url) as bridge:
        for index, name in enumerate(["Ada", "Ada Lovelace"]):
            await bridge.ingest(
                memory_message(f"hi {index}", message_id=f"n{index}", sender_name=name)
            )
        async with bridge.sessions() as db:
            names = (
                await db.execute(select(Participant.display_name).where(Participant.kind == "user"))
            ).scalars()
            assert list(names) == ["Ada Lovelace"]


async def test_bad_input_is_refused_with_nothing_stored(database_url: str) -> None:
    async with core(database_url) as bridge:
        with pytest.raises(InvalidMessage, match="neither text nor attachments"):
            await bridge.ingest(memory_message("   ", message_id="e1"))
        with pytest.raises(InvalidMessage, match=r"sender\.external_id"):
            await bridge.ingest(memory_message("hi", message_id="e2", sender=""))
        with pytest.raises(UnknownAgent, match="nobody"):
            await bridge.ingest(memory_message("hi", message_id="e3", agent="nobody"))
        assert await count(bridge, ChatMessage) == 0
        assert await count(bridge, ChatSession) == 0


async def test_follow_up_is_stored_only_in_a_conversation_the_agent_has(database_url: str) -> None:
    async with core(database_url) as bridge:
        stray = await bridge.ingest(
            memory_message(
                "no mention", message_id="f1", conversation="inmemory:t", only_if_engaged=True
            )
        )
        assert stray.ignored and await count(bridge, ChatMessage) == 0
        await bridge.ingest(memory_message("@bot hi", message_id="f2", conversation="inmemory:t"))
        follow = await bridge.ingest(
            memory_message(
                "and also", message_id="f3", conversation="inmemory:t", only_if_engaged=True
            )
        )
        assert not follow.ignored and follow.message_id > 0
        assert await count(bridge, ChatMessage) == 2


async def test_edits_and_deletes_update_the_stored_message(database_url: str) -> None:
    async with core(database_url) as bridge:
        first = await bridge.ingest(memory_message("helo", message_id="e1"))
        edit = {
            "channel": "inmemory",
            "agent_slug": "assistant",
            "external_conv_id": "inmemory:conv-1",
        }
        assert await bridge.dispatch(MessageEdit(**edit, external_message_id="e1", text="hello"))
        assert not await bridge.dispatch(
            MessageEdit(**edit, external_message_id="unknown", text="x")
        )
        assert await bridge.dispatch(MessageEdit(**edit, external_message_id="e1", text=None))
        async with bridge.sessions() as db:
            message = await db.get(ChatMessage, first.message_id)
        assert message is not None
        assert message.content == "hello" and message.edited_at is not None
        assert message.deleted_at is not None
        assert await count(bridge, ChatMessage) == 1  # nothing new to answer
