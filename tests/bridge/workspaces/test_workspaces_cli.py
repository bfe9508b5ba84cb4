"""``bridge workspace ...`` and ``bridge token create --workspace`` as an operator runs them: a
real ``python -m bridge`` process against a database a bridge has recorded agents in, on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from bridge.store.models import CHANGES, SESSIONS, TOKENS, WORKSPACES
from tests.bridge.test_cli_access import failed, said
from tests.support.processes import BridgeDatabase, bridge_database, run_cli

AGENTS = [{"slug": "assistant"}, {"slug": "helper", "workspace": "acme"}]


async def bridge(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        run_cli, *args, cwd=tmp_path, env={"BRIDGE_DATABASE__URL": database_url}
    )


async def token_rows(db: BridgeDatabase) -> dict[str, tuple[bool, str | None, bool]]:
    """Each token: admin?, its workspace's slug, revoked?"""
    async with db.sessions() as session:
        rows = await session.execute(
            select(
                TOKENS.c.name, TOKENS.c.is_admin, WORKSPACES.c.slug, TOKENS.c.revoked_at
            ).outerjoin(WORKSPACES, WORKSPACES.c.id == TOKENS.c.workspace_id)
        )
        return {row.name: (row.is_admin, row.slug, row.revoked_at is not None) for row in rows}


async def session_deleted_at(db: BridgeDatabase) -> dict[str, datetime | None]:
    async with db.sessions() as session:
        rows = await session.execute(select(SESSIONS.c.external_conv_id, SESSIONS.c.deleted_at))
        return {conversation: deleted_at for conversation, deleted_at in rows}


async def session_events(db: BridgeDatabase) -> list[int]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(CHANGES.c.session_id)
            .where(CHANGES.c.kind == "session.updated")
            .order_by(CHANGES.c.id)
        )
        return list(rows.scalars())


async def test_tokens_of_each_kind(database_url: str, tmp_path: Path) -> None:
    async with bridge_database(database_url, AGENTS) as db:
        cases = {
            ("root", "--admin"): "created operator token 'root'",
            ("boss", "--admin", "--workspace", "acme"): "created admin token 'boss' of"
            " workspace 'acme'",
            ("carol", "--workspace", "acme"): "created token 'carol' of workspace 'acme'",
            ("alice",): "created token 'alice' of workspace 'default'",
        }
        for args, first in cases.items():
            lines = said(await bridge(database_url, tmp_path, "token", "create", *args))
            assert lines[0] == f"{first}; it is shown only once:"
            assert lines[-1].startswith("brg_")
        assert await token_rows(db) == {
            "root": (True, None, False),
            "boss": (True, "acme", False),
            "carol": (False, "acme", False),
            "alice": (False, "default", False),
        }
        unknown = failed(
            await bridge(database_url, tmp_path, "token", "create", "x", "--workspace", "nope")
        )
        assert "no workspace 'nope'" in unknown
        assert "x" not in await token_rows(db)


async def test_create_list_delete_and_restore(database_url: str, tmp_path: Path) -> None:
    async with bridge_database(database_url, AGENTS) as db:
        assert said(
            await bridge(database_url, tmp_path, "workspace", "create", "beta", "--name", "Beta")
        ) == ["created workspace 'beta' (Beta)"]
        assert "'beta' exists already" in failed(
            await bridge(database_url, tmp_path, "workspace", "create", "beta")
        )
        assert "is not a slug" in failed(
            await bridge(database_url, tmp_path, "workspace", "create", "Beta!")
        )
        for name, workspace in (("carol", "acme"), ("old", "acme"), ("alice", "default")):
            said(
                await bridge(
                    database_url, tmp_path, "token", "create", name, "--workspace", workspace
                )
            )
        said(await bridge(database_url, tmp_path, "token", "revoke", "old"))
        await db.ingest("hi", message_id="m1", agent="helper", conversation="inmemory:acme-1")
        await db.ingest("hi", message_id="m2", agent="assistant", conversation="inmemory:def-1")

        listed = said(await bridge(database_url, tmp_path, "workspace", "list"))
        assert listed == [
            "acme\tacme\t1 agents\t1 active tokens",
            "beta\tBeta\t0 agents\t0 active tokens",
            "default\tDefault\t1 agents\t1 active tokens",
        ]

        events_before = await session_events(db)
        assert said(await bridge(database_url, tmp_path, "workspace", "delete", "acme")) == [
            "deleted workspace 'acme': 1 session hidden, 1 token revoked"
        ]
        deleted = await session_deleted_at(db)
        assert deleted["inmemory:def-1"] is None
        moment = deleted["inmemory:acme-1"]
        assert moment is not None and abs(datetime.now(UTC) - moment) < timedelta(minutes=5)
        tokens = await token_rows(db)
        assert (tokens["carol"][2], tokens["old"][2], tokens["alice"][2]) == (True, True, False)
        async with db.sessions() as session:
            acme_session = (
                await session.execute(
                    select(SESSIONS.c.id).where(SESSIONS.c.external_conv_id == "inmemory:acme-1")
                )
            ).scalar_one()
        assert (await session_events(db))[len(events_before) :] == [acme_session]

        (acme_line,) = [
            line
            for line in said(await bridge(database_url, tmp_path, "workspace", "list"))
            if line.startswith("acme")
        ]
        assert acme_line == (
            f"acme\tacme\t1 agents\t0 active tokens\tdeleted {moment.isoformat(timespec='seconds')}"
        )
        assert "'acme' is deleted already" in failed(
            await bridge(database_url, tmp_path, "workspace", "delete", "acme")
        )
        assert "'acme' is deleted" in failed(
            await bridge(database_url, tmp_path, "token", "create", "eve", "--workspace", "acme")
        )

        assert said(await bridge(database_url, tmp_path, "workspace", "restore", "acme")) == [
            "restored workspace 'acme': 1 session and 1 token back"
        ]
        assert (await session_deleted_at(db))["inmemory:acme-1"] is None
        tokens = await token_rows(db)
        assert (tokens["carol"][2], tokens["old"][2]) == (False, True), "old stays revoked"
        assert "'acme' is not deleted" in failed(
            await bridge(database_url, tmp_path, "workspace", "restore", "acme")
        )
        for action in ("delete", "restore"):
            line = failed(await bridge(database_url, tmp_path, "workspace", action, "nope"))
            assert line == "bridge: no workspace 'nope'"
