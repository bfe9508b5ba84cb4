"""Upgrading a database of the 0008 schema (no workspaces) keeps everything working, on SQLite
and PostgreSQL: its agents and user tokens land in ``default``, its admin tokens stay
operators, and a real bridge started on it serves the old user their old session."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.settings import DatabaseSettings
from bridge.store.engine import create_engine
from bridge.store.migrate import current_revision, head_revision, upgrade
from bridge.store.models import AGENTS, TOKENS, WORKSPACES, UTCDateTime
from tests.support.api import ApiClient
from tests.support.harness import make_settings, running_bridge
from tests.support.postgres import PostgresCluster

USER_TOKEN = "brg_user-token-made-by-0008"
ADMIN_TOKEN = "brg_admin-token-made-by-0008"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no schema at all, of each dialect."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    cluster: PostgresCluster | None = request.getfixturevalue("postgres_cluster")
    if cluster is None:
        pytest.skip("NO POSTGRESQL available (see the warning above)")
    return cluster.create_database(f"t_{uuid.uuid4().hex[:16]}")


async def _insert(connection: AsyncConnection, sql: str, **values: object) -> int:
    """One row as the 0008 code wrote it, in plain SQL; its id."""
    statement = text(sql + " RETURNING id").bindparams(bindparam("now", type_=UTCDateTime()))
    return int((await connection.execute(statement, {"now": NOW, **values})).scalar_one())


NOW = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


async def _fill_like_0008(connection: AsyncConnection) -> tuple[int, int]:
    """An agent (and one no longer configured), a web session with a message, a user token
    and an admin token; the session's and the message's ids."""
    participant = (
        "INSERT INTO participants (kind, channel, external_id, display_name, created_at,"
        " updated_at) VALUES (:kind, :channel, :external_id, :external_id, :now, :now)"
    )
    agent = (
        "INSERT INTO agents (slug, name, backend, backend_options, system_prompt,"
        " history_messages, history_chars, participant_id, created_at, updated_at)"
        " VALUES (:slug, :slug, 'echo', '{}', '', 20, 20000, :participant, :now, :now)"
    )
    token = (
        "INSERT INTO api_tokens (name, token_hash, is_admin, participant_id, created_at)"
        " VALUES (:name, :hash, :admin, :participant, :now)"
    )
    ids: dict[str, int] = {}
    for slug in ("assistant", "retired"):
        speaker = await _insert(
            connection, participant, kind="agent", channel="agent", external_id=slug
        )
        ids[slug] = await _insert(connection, agent, slug=slug, participant=speaker)
    alice = await _insert(connection, participant, kind="user", channel="web", external_id="alice")
    root = await _insert(connection, participant, kind="user", channel="web", external_id="root")
    session_id = await _insert(
        connection,
        "INSERT INTO chat_sessions (agent_id, external_conv_id, source_channel, title, is_group,"
        " participant_id, message_count, created_at, last_message_at)"
        " VALUES (:agent, 'web:0008-session', 'web', 'from 0008', :no, :alice, 1, :now, :now)",
        agent=ids["assistant"],
        no=False,
        alice=alice,
    )
    await connection.execute(
        text(
            "INSERT INTO session_members (session_id, participant_id, joined_at)"
            " VALUES (:session, :alice, :now)"
        ).bindparams(bindparam("now", type_=UTCDateTime())),
        {"session": session_id, "alice": alice, "now": NOW},
    )
    message_id = await _insert(
        connection,
        "INSERT INTO chat_messages (session_id, sender_participant_id, role, content, channel,"
        " reply_target, attachments, state, attempts, delivery_in_doubt, platform_message_ids,"
        " created_at, updated_at, chain_hops)"
        " VALUES (:session, :alice, 'user', 'hello from 0008', 'web', '{}', '[]', 'answered', 0,"
        " :no, '[]', :now, :now, 0)",
        session=session_id,
        alice=alice,
        no=False,
    )
    for name, secret, admin, owner in (
        ("alice", USER_TOKEN, False, alice),
        ("root", ADMIN_TOKEN, True, root),
    ):
        digest = hashlib.sha256(secret.encode()).hexdigest()
        await _insert(connection, token, name=name, hash=digest, admin=admin, participant=owner)
    return session_id, message_id


@pytest.fixture
async def upgraded_from_0008(empty_database_url: str) -> AsyncIterator[tuple[str, int, int]]:
    engine = create_engine(DatabaseSettings(url=empty_database_url))
    try:
        await upgrade(engine, revision="0008")
        assert await current_revision(engine) == "0008"
        async with engine.begin() as connection:
            session_id, message_id = await _fill_like_0008(connection)
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
        async with engine.connect() as connection:
            (default_id,) = (
                await connection.execute(
                    select(WORKSPACES.c.id).where(WORKSPACES.c.slug == "default")
                )
            ).one()
            agents = dict(
                (await connection.execute(select(AGENTS.c.slug, AGENTS.c.workspace_id))).all()
            )
            tokens = dict(
                (await connection.execute(select(TOKENS.c.name, TOKENS.c.workspace_id))).all()
            )
        assert agents == {"assistant": default_id, "retired": default_id}
        assert tokens == {"alice": default_id, "root": None}
    finally:
        await engine.dispose()
    yield empty_database_url, session_id, message_id


async def test_a_0008_database_keeps_working_after_the_upgrade(
    upgraded_from_0008: tuple[str, int, int],
) -> None:
    url, session_id, message_id = upgraded_from_0008
    async with (
        running_bridge(make_settings(url)) as bridge,
        aiohttp.ClientSession() as http,
    ):
        alice = ApiClient(http=http, base_url=bridge.url, token=USER_TOKEN)
        root = ApiClient(http=http, base_url=bridge.url, token=ADMIN_TOKEN)

        me = (await alice.get("/me")).ok()
        assert (me["name"], me["is_admin"], me["workspace"]) == ("alice", False, "default")
        listed = (await alice.get("/sessions")).ok()["items"]
        assert [(s["id"], s["title"], s["agent"]) for s in listed] == [
            (session_id, "from 0008", "assistant")
        ]
        history = (await alice.get(f"/sessions/{session_id}/messages")).ok()["items"]
        assert [(m["id"], m["content"]) for m in history] == [(message_id, "hello from 0008")]

        operator = (await root.get("/me")).ok()
        assert (operator["is_admin"], operator["workspace"]) == (True, None)
        workspaces = (await root.get("/workspaces")).ok()["items"]
        assert [
            (w["slug"], w["agents"], w["active_tokens"], w["deleted_at"]) for w in workspaces
        ] == [("default", 2, 1, None)]
        assert [s["id"] for s in (await root.get("/sessions")).ok()["items"]] == [session_id]

        # The old user still talks in its old session.
        said = await alice.say(session_id, "hello after the upgrade")
        reply = await bridge.reply_to(said["id"], state="delivered")
        assert reply.session_id == session_id
