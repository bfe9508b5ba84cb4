"""``bridge export``: the documented fields of both line types, ``--since``, ``--workspace``
(exactly its sessions, soft-deleted ones too) and clear errors, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from bridge.cli import _with_database
from bridge.export.command import run_export
from bridge.store.models import AGENTS, MESSAGES, PARTICIPANTS, SESSIONS, utcnow
from tests.bridge.export.support import TWO_WORKSPACES, export, export_parser
from tests.support.harness import RunningBridge, make_settings, running_bridge

SESSION_FIELDS = {
    "type",
    "id",
    "workspace",
    "agent",
    "external_conv_id",
    "source_channel",
    "title",
    "is_group",
    "group_name",
    "parent_session",
    "peer_agent",
    "created_at",
    "last_message_at",
    "deleted_at",
}
MESSAGE_FIELDS = {
    "type",
    "id",
    "session_id",
    "role",
    "sender",
    "content",
    "state",
    "reply_to",
    "created_at",
    "edited_at",
    "deleted_at",
    "purged_at",
    "attachments",
    "input_tokens",
    "output_tokens",
}
OLD = datetime(2020, 1, 1, tzinfo=UTC)


def moment(text: str | None) -> datetime | None:
    """A time as exported: ISO 8601 in UTC, with ``Z``."""
    if text is None:
        return None
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


async def conversation(
    bridge: RunningBridge, text: str, *, agent: str = "assistant", conversation: str = "c-1"
) -> tuple[int, int, int]:
    """A user message and the echo reply to it: (session id, message id, reply id)."""
    result = await bridge.memory(agent).receive(
        text, conversation=f"inmemory:{conversation}", sender="u-1", sender_name="Ann"
    )
    reply = await bridge.reply_to(result.message_id, state="delivered")
    return result.session_id, result.message_id, reply.id


async def test_a_session_and_its_messages_with_every_documented_field(database_url: str) -> None:
    settings = make_settings(database_url, agents=TWO_WORKSPACES)
    async with running_bridge(settings) as bridge:
        session_id, asked, answered = await conversation(bridge, "hello\nthere")
        _, purged, _ = await conversation(bridge, "my secret")
        now = utcnow()
        async with bridge.sessions() as db, db.begin():
            agent_participant = await db.scalar(
                select(AGENTS.c.participant_id).where(AGENTS.c.slug == "assistant")
            )
            note = (
                await db.execute(
                    insert(MESSAGES)
                    .values(
                        session_id=session_id,
                        sender_participant_id=agent_participant,
                        role="system",
                        content="limit reached",
                        channel="inmemory",
                        reply_target={},
                        attachments=[],
                        state="recorded",
                        attempts=0,
                        delivery_in_doubt=False,
                        platform_message_ids=[],
                        reply_to_message_id=asked,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(MESSAGES.c.id)
                )
            ).scalar_one()
            attachment = {"name": "a.png", "content_type": "image/png", "size": 3}
            await db.execute(
                update(MESSAGES)
                .where(MESSAGES.c.id == asked)
                .values(attachments=[attachment], input_tokens=12, output_tokens=34)
            )
            # As retention leaves a message: no content, the row kept as a tombstone.
            await db.execute(
                update(MESSAGES)
                .where(MESSAGES.c.id == purged)
                .values(content="", purged_at=now, attachments=[attachment])
            )
            await db.execute(
                update(SESSIONS).where(SESSIONS.c.id == session_id).values(title="Greetings")
            )
            stored = {
                row.id: row
                for row in await db.execute(
                    select(MESSAGES).where(MESSAGES.c.session_id == session_id)
                )
            }
            session_row = (
                await db.execute(select(SESSIONS).where(SESSIONS.c.id == session_id))
            ).one()
            user = (
                await db.execute(select(PARTICIPANTS).where(PARTICIPANTS.c.external_id == "u-1"))
            ).one()

    lines = (await export(settings, "--session", str(session_id))).lines
    head, *messages = lines
    assert set(head) == SESSION_FIELDS
    assert head["type"] == "session"
    assert head["id"] == session_id
    assert head["workspace"] == "acme" and head["agent"] == "assistant"
    assert head["external_conv_id"] == "inmemory:c-1" and head["source_channel"] == "inmemory"
    assert head["title"] == "Greetings"
    assert head["is_group"] is False and head["group_name"] is None
    assert head["parent_session"] is None and head["peer_agent"] is None
    assert moment(head["created_at"]) == session_row.created_at
    assert moment(head["last_message_at"]) == session_row.last_message_at
    assert head["deleted_at"] is None

    assert [m["id"] for m in messages] == sorted(stored) and len(messages) == 5
    assert all(set(m) == MESSAGE_FIELDS and m["type"] == "message" for m in messages)
    by_id = {m["id"]: m for m in messages}
    user_sender = {
        "kind": "user",
        "channel": "inmemory",
        "external_id": "u-1",
        "display_name": user.display_name,
    }
    assert user.display_name == "Ann"
    question = by_id[asked]
    assert question["session_id"] == session_id
    assert question["role"] == "user" and question["content"] == "hello\nthere"
    assert question["sender"] == user_sender
    assert question["state"] == "answered" and question["reply_to"] is None
    assert question["attachments"] == [attachment]
    assert moment(question["created_at"]) == stored[asked].created_at
    assert question["edited_at"] is None and question["deleted_at"] is None
    assert question["purged_at"] is None
    reply = by_id[answered]
    assert reply["role"] == "assistant" and reply["reply_to"] == asked
    assert reply["content"] == stored[answered].content != ""
    assert reply["sender"] == {
        "kind": "agent",
        "channel": "agent",
        "external_id": "assistant",
        "display_name": "assistant",
    }
    assert reply["state"] == "delivered"
    assert (reply["input_tokens"], reply["output_tokens"]) == (None, None)
    assert (question["input_tokens"], question["output_tokens"]) == (12, 34)
    system = by_id[note]
    assert system["role"] == "system" and system["content"] == "limit reached"
    assert system["state"] == "recorded" and system["reply_to"] == asked
    assert system["sender"]["kind"] == "agent"
    tombstone = by_id[purged]
    assert tombstone["content"] == "" and tombstone["attachments"] == []
    assert moment(tombstone["purged_at"]) == stored[purged].purged_at
    assert tombstone["sender"] == user_sender and tombstone["role"] == "user"


async def test_since_keeps_newer_messages_and_the_sessions_that_have_them(
    database_url: str,
) -> None:
    settings = make_settings(database_url, agents=TWO_WORKSPACES)
    async with running_bridge(settings) as bridge:
        old_session, old_ask, old_reply = await conversation(bridge, "long ago", conversation="a")
        mixed, mixed_old, _ = await conversation(bridge, "then", conversation="b")
        _, mixed_new, mixed_new_reply = await conversation(bridge, "now", conversation="b")
        empty, _, _ = await conversation(bridge, "x", conversation="c")
        async with bridge.sessions() as db, db.begin():
            await db.execute(
                update(MESSAGES)
                .where(MESSAGES.c.session_id.in_([old_session, empty]))
                .values(created_at=OLD)
            )
            await db.execute(
                update(SESSIONS).where(SESSIONS.c.id == old_session).values(created_at=OLD)
            )
            await db.execute(
                update(MESSAGES)
                .where(MESSAGES.c.session_id == mixed, MESSAGES.c.id < mixed_new)
                .values(created_at=OLD)
            )
            await db.execute(update(SESSIONS).where(SESSIONS.c.id == mixed).values(created_at=OLD))
            await db.execute(delete_messages_of(empty))

    since = "2024-01-01"
    lines = (await export(settings, "--workspace", "acme", "--since", since)).lines
    # "old": nothing since and created before; "mixed": only its new messages; "empty": no
    # message since, but created since.
    assert [(line["type"], line["id"]) for line in lines] == [
        ("session", mixed),
        ("message", mixed_new),
        ("message", mixed_new_reply),
        ("session", empty),
    ]
    assert all(
        (moment(line["created_at"]) or OLD) >= datetime(2024, 1, 1, tzinfo=UTC)
        for line in lines
        if line["type"] == "message"
    )
    # One session: its line always, and its messages since the moment given.
    one = (await export(settings, "--session", str(old_session), "--since", since)).lines
    assert [(line["type"], line["id"]) for line in one] == [("session", old_session)]
    exactly = lines[1]["created_at"]
    kept = (await export(settings, "--session", str(mixed), "--since", exactly)).lines
    assert [line["id"] for line in kept] == [mixed, mixed_new, mixed_new_reply], (
        "a message created exactly at `since` is kept"
    )
    whole = (await export(settings, "--session", str(mixed))).lines
    assert [line["id"] for line in whole][:2] == [mixed, mixed_old]
    assert len(whole) == 5
    old = (await export(settings, "--session", str(old_session))).lines
    assert [line["id"] for line in old] == [old_session, old_ask, old_reply]


def delete_messages_of(session_id: int) -> Any:
    return MESSAGES.delete().where(MESSAGES.c.session_id == session_id)


async def test_a_workspace_export_holds_exactly_its_sessions_deleted_ones_too(
    database_url: str,
) -> None:
    settings = make_settings(database_url, agents=TWO_WORKSPACES)
    async with running_bridge(settings) as bridge:
        acme = [(await conversation(bridge, f"hi {n}", conversation=f"a-{n}"))[0] for n in range(3)]
        globex = [
            (await conversation(bridge, f"hey {n}", agent="helper", conversation=f"g-{n}"))[0]
            for n in range(2)
        ]
        async with bridge.sessions() as db, db.begin():
            await db.execute(
                update(SESSIONS).where(SESSIONS.c.id == acme[1]).values(deleted_at=utcnow())
            )
        messages_of = {
            session: [m.id for m in await bridge.messages(session)] for session in acme + globex
        }

    for workspace, expected in (("acme", acme), ("globex", globex)):
        lines = (await export(settings, "--workspace", workspace)).lines
        sessions = [line for line in lines if line["type"] == "session"]
        assert [s["id"] for s in sessions] == sorted(expected)
        assert {s["workspace"] for s in sessions} == {workspace}
        assert [(line["type"], line["id"]) for line in lines] == [
            pair
            for session in sorted(expected)
            for pair in [("session", session)] + [("message", m) for m in messages_of[session]]
        ]
        if workspace == "acme":
            (deleted,) = [s for s in sessions if s["id"] == acme[1]]
            assert moment(deleted["deleted_at"]) is not None


async def test_pages_smaller_than_the_export_change_nothing(database_url: str) -> None:
    """Keyset pages over sessions and over the messages of a page of sessions: the walk with
    pages of 2 returns the same lines as one page."""
    from bridge.export import start_export

    settings = make_settings(database_url, agents=TWO_WORKSPACES)
    async with running_bridge(settings) as bridge:
        for n in range(5):
            for _ in range(n % 3):
                await conversation(bridge, f"m {n}", conversation=f"p-{n}")
        await conversation(bridge, "other", agent="helper", conversation="other")
        outputs = []
        for size in (2, 3, 500):
            pages = await start_export(bridge.sessions, workspace="acme", page_size=size)
            outputs.append(b"".join([chunk async for chunk in pages]))
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0].count(b'"type":"message"') == 2 * (0 + 1 + 2 + 0 + 1)


async def test_an_unknown_session_or_workspace_is_one_clear_line(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(database_url, agents=TWO_WORKSPACES)
    async with running_bridge(settings):
        pass
    capsys.readouterr()
    for argv, said in (
        (("--session", "424242"), "bridge: no session 424242\n"),
        (("--workspace", "nowhere"), "bridge: no workspace 'nowhere'\n"),
    ):
        result = await export(settings, *argv)
        assert (result.code, result.output) == (1, b"")
        assert capsys.readouterr().err == said


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--session", "1", "--workspace", "acme"],
        ["--session", "0"],
        ["--session", "x"],
        ["--workspace", "acme", "--since", "yesterday"],
    ],
)
def test_the_arguments_are_checked(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        export_parser().parse_args(["export", *argv])
    assert exited.value.code == 2
    assert "usage: bridge export" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-05-01", datetime(2026, 5, 1, tzinfo=UTC)),
        ("2026-05-01T12:30:00", datetime(2026, 5, 1, 12, 30, tzinfo=UTC)),
        ("2026-05-01T12:30:00Z", datetime(2026, 5, 1, 12, 30, tzinfo=UTC)),
        ("2026-05-01T14:30:00+02:00", datetime(2026, 5, 1, 12, 30, tzinfo=UTC)),
    ],
)
def test_since_takes_a_date_or_a_datetime(raw: str, expected: datetime) -> None:
    args = export_parser().parse_args(["export", "--workspace", "acme", "--since", raw])
    assert args.since == expected and args.since.tzinfo is not None


class ClosedPipe(io.BytesIO):
    """A reader that went away (``bridge export ... | head``)."""

    def write(self, _data: Any) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_a_closed_output_stops_the_export_with_one_line(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(database_url, agents=TWO_WORKSPACES)
    async with running_bridge(settings) as bridge:
        session_id, _, _ = await conversation(bridge, "hello")
    capsys.readouterr()
    args = export_parser().parse_args(["export", "--session", str(session_id)])
    code = await asyncio.to_thread(
        run_export, args, settings, with_database=_with_database, out=ClosedPipe()
    )
    assert code == 1
    assert capsys.readouterr().err == "bridge: export stopped: the output was closed\n"
