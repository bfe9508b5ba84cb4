"""A process killed with SIGKILL after ingest and before the answer, then restarted, gives
exactly one reply: on SQLite (the new process releases every claim at start) and on PostgreSQL
(the dead process's claims expire after ``claim_ttl_seconds``).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bridge.store.models import MessageState
from tests.fakes.webhook_agent import FakeWebhookAgent
from tests.support.harness import webhook_agent_config
from tests.support.processes import bridge_database, serving_bridge, wait_until, write_toml

TEXT = "are you still there?"


def delivered_lines(record_file: Path) -> list[dict[str, Any]]:
    if not record_file.exists():
        return []
    return [json.loads(line) for line in record_file.read_text().splitlines() if line.strip()]


def bridge_config(
    tmp_path: Path, name: str, *, database_url: str, fake: FakeWebhookAgent, record_file: Path
) -> tuple[Path, list[dict[str, Any]]]:
    """A config whose agent answers through ``fake`` and records deliveries in ``record_file``;
    claims expire after a second, so PostgreSQL takes a dead process's work over quickly."""
    agents = [
        webhook_agent_config(fake, timeout_seconds=300.0, memory={"record_file": str(record_file)})
    ]
    config = write_toml(
        tmp_path / name,
        {
            "database": {"url": database_url},
            "pipeline": {"claim_ttl_seconds": 1.0, "poll_interval_seconds": 0.2},
            "agents": agents,
        },
    )
    return config, agents


async def killed_once(
    config: Path, tmp_path: Path, ready: Callable[[], bool | Awaitable[bool]], *, what: str
) -> None:
    """Serves ``config`` until ``ready``, then kills that process with SIGKILL."""
    async with serving_bridge(config, cwd=tmp_path) as process:
        await wait_until(ready, within=15, what=what)
        process.kill()
        assert await process.wait() == -signal.SIGKILL


async def the_one_delivery(config: Path, tmp_path: Path, record_file: Path) -> dict[str, Any]:
    """Serves ``config`` until a reply is recorded, stops gracefully, and returns the one line
    recorded (a graceful stop finishes or hands back anything still in flight, so whatever
    the process would have done twice is now visible in the file or the database)."""
    async with serving_bridge(config, cwd=tmp_path) as process:
        await wait_until(lambda: bool(delivered_lines(record_file)), within=20, what="a reply")
        process.terminate()
        assert await process.wait() == 0, process.log
    (line,) = delivered_lines(record_file)
    return line


async def test_sigkill_before_the_answer_then_restart_gives_exactly_one_reply(
    database_url: str, tmp_path: Path, webhook_agent: FakeWebhookAgent
) -> None:
    """The issue's requirement: the work of a process that died mid-answer is neither lost
    (the next process answers it) nor doubled (one reply stored, one delivered)."""
    record_file = tmp_path / "delivered.jsonl"
    config, agents = bridge_config(
        tmp_path,
        "bridge.toml",
        database_url=database_url,
        fake=webhook_agent,
        record_file=record_file,
    )
    async with bridge_database(database_url, agents) as db:
        ingested = await db.ingest(TEXT, message_id="crash-1")

        # Bridge A asks the agent, which holds its answer; A dies before it comes back.
        webhook_agent.delay_seconds = 120.0
        await killed_once(
            config, tmp_path, lambda: len(webhook_agent.requests) == 1, what="bridge A to ask"
        )
        crashed = await db.message(ingested.message_id)
        assert crashed.state == MessageState.ANSWERING, "A had claimed it when it died"
        assert delivered_lines(record_file) == []

        # Bridge B takes the orphaned claim over and answers once.
        webhook_agent.delay_seconds = 0.0
        line = await the_one_delivery(config, tmp_path, record_file)
        assert line["text"] == f"echo: {TEXT}"
        assert len(webhook_agent.requests) == 2, "asked once by A, once by B"

        messages = await db.messages()
        user = next(m for m in messages if m.id == ingested.message_id)
        (reply,) = [m for m in messages if m.reply_to_message_id == ingested.message_id]
        assert [m.id for m in messages] == [user.id, reply.id], "nothing else was stored"
        assert (user.state, user.claimed_by) == (MessageState.ANSWERED, None)
        assert (reply.role, reply.state, reply.content) == (
            "assistant",
            MessageState.DELIVERED,
            f"echo: {TEXT}",
        )
        assert line["message_id"] == reply.id
        assert reply.platform_message_ids == [f"memory-{reply.id}"]


async def test_sigkill_during_delivery_then_restart_delivers_once_without_asking_again(
    database_url: str, tmp_path: Path, webhook_agent: FakeWebhookAgent
) -> None:
    """The reply is stored and its delivery started when the process dies: the next process
    delivers that same reply once, flagged in doubt with the same key, and does not ask the
    agent again. Bridge A's record file is a FIFO nobody reads, so its send blocks for good."""
    stuck = tmp_path / "stuck.fifo"
    os.mkfifo(stuck)
    record_file = tmp_path / "delivered.jsonl"
    config_a, agents = bridge_config(
        tmp_path, "a.toml", database_url=database_url, fake=webhook_agent, record_file=stuck
    )
    config_b, _ = bridge_config(
        tmp_path,
        "b.toml",
        database_url=database_url,
        fake=webhook_agent,
        record_file=record_file,
    )
    async with bridge_database(database_url, agents) as db:
        ingested = await db.ingest(TEXT, message_id="crash-2")

        async def delivery_started() -> bool:
            replies = [m for m in await db.messages() if m.reply_to_message_id is not None]
            # Claimed and the attempt recorded: from here on the send may be under way.
            return bool(replies) and (replies[0].state, replies[0].attempts) == (
                MessageState.DELIVERING,
                1,
            )

        await killed_once(config_a, tmp_path, delivery_started, what="A to start delivering")
        (stored,) = [m for m in await db.messages() if m.reply_to_message_id is not None]
        assert (stored.attempts, stored.delivery_in_doubt) == (1, True)

        line = await the_one_delivery(config_b, tmp_path, record_file)
        assert (line["message_id"], line["delivery_key"]) == (stored.id, stored.delivery_key)
        assert (line["in_doubt"], line["attempt"]) == (True, 2)
        assert line["text"] == f"echo: {TEXT}"
        assert len(webhook_agent.requests) == 1, "the stored reply is not asked for again"
        messages = await db.messages()
        assert [m.id for m in messages] == [ingested.message_id, stored.id]
        reply = messages[1]
        assert (reply.state, reply.delivery_in_doubt) == (MessageState.DELIVERED, False)
        assert messages[0].state == MessageState.ANSWERED
