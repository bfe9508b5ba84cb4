"""For tests that kill a real ``bridge serve`` mid-upload: its config (a webhook agent on one
platform, quick retries) migrated on SQLite, and the agent's replies as stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from bridge.store.models import ChatMessage, MessageState
from tests.support.processes import bridge_database, run_cli, wait_until, write_toml

PIPELINE = {"poll_interval_seconds": 0.5, "retry_base_seconds": 0.2}


def migrated_config(tmp_path: Path, database_url: str, agent: dict[str, Any]) -> Path:
    """``bridge.toml`` for ``agent`` alone (its in-memory test channel left out), the database
    migrated by the real command."""
    agent = {key: value for key, value in agent.items() if key != "inmemory"}
    config = write_toml(
        tmp_path / "bridge.toml",
        {"database": {"url": database_url}, "pipeline": PIPELINE, "agents": [agent]},
    )
    migrated = run_cli("migrate", "--config", str(config), cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    return config


async def agent_replies(database_url: str) -> list[ChatMessage]:
    async with (
        bridge_database(database_url, agents=[{"slug": "assistant"}]) as db,
        db.sessions() as session,
    ):
        query = select(ChatMessage).where(ChatMessage.role == "assistant")
        return list((await session.execute(query)).scalars())


async def wait_delivered(database_url: str) -> ChatMessage:
    """The one reply, once it is delivered."""

    async def delivered() -> bool:
        [reply] = await agent_replies(database_url)
        return reply.state == MessageState.DELIVERED

    await wait_until(delivered, within=30, what="the reply delivered after restart")
    [reply] = await agent_replies(database_url)
    return reply
