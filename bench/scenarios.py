"""The runs of ``make bench``: each starts its own service process on its own fresh database,
loads it through the fake Slack and returns its figures.

The bridge and the plain baseline (:mod:`bench.baseline`) are both real processes answering
signed Slack events over 127.0.0.1 and posting to the same fake Slack Web API, so they are
measured the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.floors import postgres_floor, sqlite_floor
from bench.load import Burst, LoadGenerator, TimedSlack, percentile
from bench.procstat import RssSampler
from bridge.store.migrate import upgrade_url
from tests.support.postgres import PostgresCluster
from tests.support.processes import BridgeProcess, serving_bridge, write_toml

ROOT = Path(__file__).resolve().parents[1]
BOT_TOKEN, SIGNING_SECRET, TEAM = "xoxb-bench", "bench-signing-secret", "T0TEAM0001"
# Warm-up conversations live far above the measured ones, so a measured burst starts on
# conversations that do not exist yet.
WARM_UP_OFFSET = 500_000
STARTED = time.perf_counter()


def progress(step: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {step}", flush=True)


@dataclass(frozen=True)
class Sizes:
    floor_messages: int = 20_000
    # The burst: 10,000 signed DM events over 500 conversations from 64 clients.
    burst_messages: int = 10_000
    burst_conversations: int = 500
    concurrency: int = 64
    # The longest a burst waits for its replies, from its first POST: a slower service is
    # reported as replies received / this time, marked incomplete.
    burst_within: float = 240.0
    warm_up_messages: int = 300
    half_load_seconds: float = 15.0
    history_rows: int = 100_000
    history_probes: int = 40
    # Below the sizes (20,000 / 100,000): at the measured 80-150 msg/s they would take
    # over half an hour, against the ten minutes make bench may take; see the README.
    memory_messages: int = 12_000
    memory_sessions: int = 10_000
    memory_within: float = 150.0
    two_process_messages: int = 6_000
    sqlite_messages: int = 5_000
    smaller_within: float = 150.0
    # The streaming run: replies streamed in 20 chunks 50 ms apart, offered at this rate.
    streaming_messages: int = 100
    streaming_rate: float = 10.0
    upload_files: int = 20  # 5 MiB each, one at a time, then again four at a time


SMOKE = Sizes(
    floor_messages=300,
    burst_messages=300,
    burst_conversations=50,
    concurrency=16,
    burst_within=30.0,
    warm_up_messages=20,
    half_load_seconds=2.0,
    history_rows=2_000,
    history_probes=5,
    memory_messages=200,
    memory_sessions=100,
    memory_within=30.0,
    two_process_messages=200,
    sqlite_messages=200,
    smaller_within=30.0,
    streaming_messages=10,
    streaming_rate=5.0,
    upload_files=2,
)


async def migrated(url: str) -> str:
    await upgrade_url(url)
    return url


def bridge_config(path: Path, *, database_url: str, fake: TimedSlack) -> Path:
    return write_toml(
        path,
        {
            "database": {"url": database_url, "pool_size": 20},
            "pipeline": {"answer_concurrency": 64, "delivery_concurrency": 64},
            "agents": [
                {
                    "slug": "bench",
                    "slack": {
                        "bot_token": BOT_TOKEN,
                        "signing_secret": SIGNING_SECRET,
                        "api_base_url": fake.api_url,
                        # Throughput is measured like for like with the baseline, which
                        # neither streams nor reacts; the streaming run measures those.
                        "streaming": "off",
                        "status_reactions": False,
                    },
                }
            ],
        },
    )


@asynccontextmanager
async def bridges(
    work: Path, *, database_url: str, fake: TimedSlack, count: int = 1
) -> AsyncIterator[list[BridgeProcess]]:
    config = bridge_config(
        work / f"bench-{time.monotonic_ns()}.toml", database_url=database_url, fake=fake
    )
    async with AsyncExitStack() as stack:
        processes = [
            await stack.enter_async_context(serving_bridge(config, cwd=work, start_within=60))
            for _ in range(count)
        ]
        yield processes


def start_baseline(*, database_url: str, fake: TimedSlack) -> BridgeProcess:
    """``python -m bench.baseline`` as its own process, in the same wrapper as the bridge's
    (stderr read in a thread, the listening URL taken from its log)."""
    command = [sys.executable, "-m", "bench.baseline", "--port", "0"]
    command += ["--database-url", database_url, "--slack-api", fake.api_url]
    command += ["--signing-secret", SIGNING_SECRET, "--bot-token", BOT_TOKEN]
    popen = subprocess.Popen(
        command,
        cwd=ROOT,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return BridgeProcess(popen)


@asynccontextmanager
async def serving_baseline(*, database_url: str, fake: TimedSlack) -> AsyncIterator[BridgeProcess]:
    """The baseline, once it listens; killed on exit."""
    process = start_baseline(database_url=database_url, fake=fake)
    try:
        await process.wait_listening(60)
        yield process
    finally:
        await process.close()


def events_url(process: BridgeProcess) -> str:
    return f"{process.url}/slack/bench/events"


async def warm_up(load: LoadGenerator, sizes: Sizes) -> None:
    """First connections, caches and prepared statements, on conversations of their own."""
    await load.burst(
        messages=sizes.warm_up_messages,
        conversations=min(50, sizes.warm_up_messages),
        concurrency=16,
        within=60,
        offset=WARM_UP_OFFSET,
    )


async def measured_burst(
    load: LoadGenerator, sizes: Sizes, *, messages: int, within: float, cpu_of: int | None = None
) -> Burst:
    await warm_up(load, sizes)
    return await load.burst(
        messages=messages,
        conversations=sizes.burst_conversations,
        concurrency=sizes.concurrency,
        within=within,
        cpu_of=cpu_of,
    )


async def floor_run(sizes: Sizes, *, cluster: PostgresCluster) -> dict[str, Any]:
    progress("postgres: raw asyncpg floor")
    await migrated(cluster.create_database("floor"))
    floor = await postgres_floor(
        cluster.dsn("floor"),
        messages=sizes.floor_messages,
        concurrency=32,
        conversations=sizes.burst_conversations,
    )
    return {"pg_floor": floor}


async def bridge_burst_run(
    sizes: Sizes, *, work: Path, cluster: PostgresCluster, fake: TimedSlack
) -> dict[str, Any]:
    progress(f"postgres: the bridge under the burst ({sizes.burst_messages} events)")
    url = await migrated(cluster.create_database("bench_burst"))
    async with bridges(work, database_url=url, fake=fake) as (process,):
        burst = await full_burst(sizes, fake=fake, url=events_url(process), pid=process.pid)
    fake.forget()
    return {"pg_burst": burst.figures() | {"timeline": timeline(burst)}}


async def baseline_burst_run(
    sizes: Sizes, *, cluster: PostgresCluster, fake: TimedSlack
) -> dict[str, Any]:
    progress("postgres: the plain baseline (slack-bolt + SQLAlchemy ORM) under the same burst")
    cluster.create_database("bench_baseline")
    async with serving_baseline(database_url=cluster.url("bench_baseline"), fake=fake) as process:
        url = f"{process.url}/slack/events"
        burst = await full_burst(sizes, fake=fake, url=url, pid=process.pid)
    fake.forget()
    return {"baseline_burst": burst.figures() | {"timeline": timeline(burst)}}


async def full_burst(sizes: Sizes, *, fake: TimedSlack, url: str, pid: int) -> Burst:
    """The issue's burst against one process (the bridge or the baseline), its CPU counted."""
    load = LoadGenerator(fake=fake, urls=[url])
    return await measured_burst(
        load, sizes, messages=sizes.burst_messages, within=sizes.burst_within, cpu_of=pid
    )


def timeline(burst: Burst) -> dict[str, Any]:
    """Replies per second since the first POST, and when the last ack came: for the chart."""
    seconds = int(burst.ended - burst.started) + 1
    counts = [0] * seconds
    for at in burst.arrivals:
        counts[min(seconds - 1, int(at - burst.started))] += 1
    return {"replies_per_second": counts, "last_ack_second": burst.last_ack_at - burst.started}


async def steady_run(
    sizes: Sizes, *, work: Path, cluster: PostgresCluster, fake: TimedSlack, burst_rate: float
) -> dict[str, Any]:
    """Latency at half the burst's throughput, then history cost, on a fresh bridge."""
    progress("postgres: latency at half load, history")
    url = await migrated(cluster.create_database("bench_steady"))
    rate = max(burst_rate / 2, 1.0)
    async with bridges(work, database_url=url, fake=fake) as (process,):
        load = LoadGenerator(fake=fake, urls=[events_url(process)])
        await warm_up(load, sizes)
        half = await load.open_loop(
            rate=rate, seconds=sizes.half_load_seconds, conversations=sizes.burst_conversations
        )
        history_conv = sizes.burst_conversations + 1
        await fill_history(
            cluster.dsn("bench_steady"),
            conversation=f"slack:{TEAM}:D{history_conv:09d}",
            rows=sizes.history_rows,
        )
        empty_conv = sizes.burst_conversations + 2
        await load.one_by_one(messages=2, conversation=empty_conv)  # warm the empty session
        empty = await load.one_by_one(messages=sizes.history_probes, conversation=empty_conv)
        full = await load.one_by_one(messages=sizes.history_probes, conversation=history_conv)
    fake.forget()
    return {
        "half_load_rate": rate,
        "half_load_failures": half.failures,
        "half_load_unanswered": half.unanswered,
        "ack_p50_ms": percentile(half.acks, 0.50) * 1000,
        "ack_p99_ms": percentile(half.acks, 0.99) * 1000,
        "e2e_p50_ms": percentile(half.ends, 0.50) * 1000,
        "e2e_p99_ms": percentile(half.ends, 0.99) * 1000,
        "history_empty_p50_ms": percentile(empty, 0.5) * 1000,
        "history_full_p50_ms": percentile(full, 0.5) * 1000,
        "history_ratio": percentile(full, 0.5) / percentile(empty, 0.5),
    }


async def fill_history(dsn: str, *, conversation: str, rows: int) -> None:
    """A session of the bench agent already holding ``rows`` answered messages."""
    connection = await asyncpg.connect(dsn)
    try:
        agent_id = await connection.fetchval("SELECT id FROM agents WHERE slug = 'bench'")
        session_id = await connection.fetchval(
            "INSERT INTO chat_sessions (agent_id, external_conv_id, source_channel, is_group,"
            " message_count, created_at, last_message_at) VALUES ($1, $2, 'slack', false, $3,"
            " now(), now()) RETURNING id",
            agent_id,
            conversation,
            rows,
        )
        now = datetime.now(UTC)
        records = [
            (
                session_id,
                "user" if n % 2 == 0 else "assistant",
                f"old message {n}",
                f"old-{n}" if n % 2 == 0 else None,
                "slack",
                "{}",
                "[]",
                "answered" if n % 2 == 0 else "delivered",
                1,
                False,
                "[]",
                now,
                now,
            )
            for n in range(rows)
        ]
        await connection.copy_records_to_table(
            "chat_messages",
            records=records,
            columns=[
                "session_id",
                "role",
                "content",
                "external_message_id",
                "channel",
                "reply_target",
                "attachments",
                "state",
                "attempts",
                "delivery_in_doubt",
                "platform_message_ids",
                "created_at",
                "updated_at",
            ],
        )
        await connection.execute("ANALYZE chat_messages")
    finally:
        await connection.close()


async def memory_run(
    sizes: Sizes, *, work: Path, cluster: PostgresCluster, fake: TimedSlack
) -> dict[str, Any]:
    progress("postgres: memory")
    url = await migrated(cluster.create_database("bench_memory"))
    half = sizes.memory_messages // 2
    async with bridges(work, database_url=url, fake=fake) as (process,):
        load = LoadGenerator(fake=fake, urls=[events_url(process)])
        sampler = RssSampler(process.pid)
        sampler.start()

        async def burst(messages: int) -> Burst:
            return await load.burst(
                messages=messages,
                conversations=sizes.memory_sessions,
                concurrency=sizes.concurrency,
                within=sizes.memory_within,
            )

        first = await burst(half)
        half_rss = sampler.read()
        second = await burst(sizes.memory_messages - half)
        end_rss = sampler.read()
        await sampler.stop()
    fake.forget()
    peak = max(rss for _, rss in sampler.samples)
    return {
        "rss_peak_mb": peak / 2**20,
        "rss_half_mb": half_rss / 2**20,
        "rss_end_mb": end_rss / 2**20,
        "rss_end_over_half": end_rss / half_rss,
        "memory_complete": first.complete and second.complete,
    }


async def two_process_run(
    sizes: Sizes, *, work: Path, cluster: PostgresCluster, fake: TimedSlack
) -> dict[str, Any]:
    progress(f"postgres: two bridge processes ({sizes.two_process_messages} events)")
    url = await migrated(cluster.create_database("bench_two"))
    async with bridges(work, database_url=url, fake=fake, count=2) as processes:
        load = LoadGenerator(fake=fake, urls=[events_url(p) for p in processes])
        burst = await measured_burst(
            load, sizes, messages=sizes.two_process_messages, within=sizes.smaller_within
        )
    fake.forget()
    return {"two_process_burst": burst.figures()}


async def sqlite_run(sizes: Sizes, *, work: Path, fake: TimedSlack) -> dict[str, Any]:
    progress(f"sqlite: raw aiosqlite floor, the bridge under a burst ({sizes.sqlite_messages})")
    floor_path = work / "floor.db"
    await migrated(f"sqlite+aiosqlite:///{floor_path}")
    floor = await sqlite_floor(
        floor_path,
        messages=sizes.floor_messages,
        concurrency=32,
        conversations=sizes.burst_conversations,
    )
    url = await migrated(f"sqlite+aiosqlite:///{work / 'bench.db'}")
    async with bridges(work, database_url=url, fake=fake) as (process,):
        load = LoadGenerator(fake=fake, urls=[events_url(process)])
        burst = await measured_burst(
            load, sizes, messages=sizes.sqlite_messages, within=sizes.smaller_within
        )
    fake.forget()
    return {"sqlite_floor": floor, "sqlite_burst": burst.figures()}
