"""``bridge access approve / list / revoke`` as an operator runs them, on SQLite and PostgreSQL:
a real ``python -m bridge`` process against the database a DM asked for pairing in."""

from __future__ import annotations

import asyncio
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from bridge.ports.events import IngestResult
from bridge.store.models import GRANTS, PAIRING_CODES
from tests.support.processes import BridgeDatabase, bridge_database, run_cli, write_toml

AGENTS = [{"slug": "assistant", "access": {"dm": "pairing"}}, {"slug": "helper"}]
IDENTITY = "inmemory:user-1"
"""Who ``BridgeDatabase.ingest`` speaks as."""


async def access(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        run_cli, "access", *args, cwd=tmp_path, env={"BRIDGE_DATABASE__URL": database_url}
    )


def said(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failing command prints (exit 1, nothing on stdout)."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("bridge: ")
    return line


def code_of(result: IngestResult) -> str:
    assert result.refused == "pairing" and result.notice is not None, result
    found = re.search(r"code: ([A-Z0-9]{8}) ", result.notice)
    assert found is not None, result.notice
    return found.group(1)


async def grants(db: BridgeDatabase) -> list[tuple[str]]:
    async with db.sessions() as session:
        return [tuple(row) for row in await session.execute(select(GRANTS.c.identity))]


async def test_approve_list_and_revoke(database_url: str, tmp_path: Path) -> None:
    async with bridge_database(database_url, AGENTS) as db:
        assert said(await access(database_url, tmp_path, "list", "assistant")) == [
            "no identity is approved for assistant"
        ]
        code = code_of(await db.ingest("hello", message_id="m1"))
        assert await db.messages() == [], "a refused DM leaves no message"

        approved = await access(database_url, tmp_path, "approve", f" {code.lower()} ")
        assert said(approved) == [f"approved {IDENTITY} for assistant"]
        assert await grants(db) == [(IDENTITY,)]
        (line,) = said(await access(database_url, tmp_path, "list", "assistant"))
        identity, at = line.split("\t")
        assert identity == IDENTITY
        assert abs(datetime.fromisoformat(at) - datetime.now(UTC)) < timedelta(minutes=5)
        assert said(await access(database_url, tmp_path, "list", "helper")) == [
            "no identity is approved for helper"
        ]

        let_in = await db.ingest("hello again", message_id="m2")
        assert let_in.refused is None and let_in.message_id > 0
        used = failed(await access(database_url, tmp_path, "approve", code))
        assert code in used

        revoked = await access(database_url, tmp_path, "revoke", "assistant", IDENTITY)
        assert said(revoked) == [f"revoked {IDENTITY} for assistant"]
        assert await grants(db) == []
        again = failed(await access(database_url, tmp_path, "revoke", "assistant", IDENTITY))
        assert "nothing revoked" in again and IDENTITY in again
        assert code_of(await db.ingest("still me", message_id="m3")) != code


async def test_unknown_agents_and_expired_codes_are_one_line(
    database_url: str, tmp_path: Path
) -> None:
    async with bridge_database(database_url, AGENTS) as db:
        for args in (("list", "nobody"), ("revoke", "nobody", IDENTITY)):
            line = failed(await access(database_url, tmp_path, *args))
            assert "unknown agent 'nobody'" in line
        assert "no pairing code 'NOPE2345'" in failed(
            await access(database_url, tmp_path, "approve", "NOPE2345")
        )

        code = code_of(await db.ingest("hello", message_id="m1"))
        async with db.sessions() as session, session.begin():
            await session.execute(
                update(PAIRING_CODES).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        expired = failed(await access(database_url, tmp_path, "approve", code))
        assert "expired" in expired and code in expired
        assert await grants(db) == []

        # --config works as for the other commands.
        config = write_toml(tmp_path / "bridge.toml", {"database": {"url": database_url}})
        fresh = code_of(await db.ingest("hello again", message_id="m2"))
        approved = await asyncio.to_thread(
            run_cli, "access", "approve", fresh, "--config", str(config), cwd=tmp_path
        )
        assert said(approved) == [f"approved {IDENTITY} for assistant"]


def test_an_unmigrated_database_is_refused(tmp_path: Path) -> None:
    env = {"BRIDGE_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"}
    result = run_cli("access", "list", "assistant", cwd=tmp_path, env=env)
    assert "run `bridge migrate`" in failed(result)
