"""``python -m bench [--smoke]``: every figure of ``make bench`` in one run.

It starts its own PostgreSQL, runs the bridge as a real process (echo agent, Slack channel
pointed at the local fake Slack Web API) and loads it with signed Slack DM events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.floors import postgres_floor, sqlite_floor
from bench.load import LoadGenerator, TimedSlack, Timings, percentile
from bridge.db.migrate import upgrade_url
from tests.support.postgres import PostgresCluster, ensure_postgres_installed
from tests.support.processes import BridgeProcess, serving_bridge, write_toml

RESULTS = Path(__file__).with_name("results")
STARTED = time.perf_counter()


def progress(step: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {step}", flush=True)


BOT_TOKEN, SIGNING_SECRET, TEAM = "xoxb-bench", "bench-signing-secret", "T0TEAM0001"


@dataclass(frozen=True)
class Sizes:
    floor_messages: int = 20_000
    throughput_messages: int = 10_000
    conversations: int = 1_000
    concurrency: int = 64
    half_load_seconds: float = 15.0
    history_rows: int = 100_000
    history_probes: int = 40
    # Below the sizes (20,000 / 100,000): at the measured 80-150 msg/s they would take
    # over half an hour, against the ten minutes make bench may take; see the README.
    memory_messages: int = 12_000
    memory_sessions: int = 10_000
    two_process_messages: int = 6_000
    sqlite_messages: int = 5_000


SMOKE = Sizes(
    floor_messages=300,
    throughput_messages=300,
    conversations=50,
    concurrency=16,
    half_load_seconds=2.0,
    history_rows=2_000,
    history_probes=5,
    memory_messages=600,
    memory_sessions=100,
    two_process_messages=300,
    sqlite_messages=300,
)


async def migrated(url: str) -> str:
    await upgrade_url(url)
    return url


async def measured_throughput(
    load: LoadGenerator, sizes: Sizes, *, messages: int
) -> tuple[float, Timings]:
    """A short warm-up (first connections, caches), then the measured closed loop."""
    await load.closed_loop(messages=min(500, messages), conversations=50, concurrency=16)
    return await load.closed_loop(
        messages=messages, conversations=sizes.conversations, concurrency=sizes.concurrency
    )


def bridge_config(path: Path, *, database_url: str, fake: TimedSlack) -> Path:
    return write_toml(
        path,
        {
            "database": {"url": database_url, "pool_size": 20},
            "pipeline": {"answer_concurrency": 32, "delivery_concurrency": 32},
            "agents": [
                {
                    "slug": "bench",
                    "slack": {
                        "bot_token": BOT_TOKEN,
                        "signing_secret": SIGNING_SECRET,
                        "api_base_url": fake.api_url,
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


def events_url(process: BridgeProcess) -> str:
    return f"{process.url}/slack/bench/events"


class RssSampler:
    """Peak and half-way resident memory of a process, from /proc."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    def read(self) -> int:
        with open(f"/proc/{self._pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    async def _run(self) -> None:
        while True:
            self.samples.append((time.perf_counter(), self.read()))
            await asyncio.sleep(0.25)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


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


async def run(sizes: Sizes, *, work: Path) -> dict[str, Any]:
    ensure_postgres_installed()
    results: dict[str, Any] = {"sizes": asdict(sizes)}
    cluster = PostgresCluster(base_dir=work / "postgres")
    cluster.start()
    try:
        floor_url = await migrated(cluster.create_database("floor"))
        progress("postgres floor")
        results["pg_floor"] = await postgres_floor(
            cluster.dsn("floor"),
            messages=sizes.floor_messages,
            concurrency=32,
            conversations=sizes.conversations,
        )
        del floor_url
        async with TimedSlack(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET) as fake:
            results.update(await _postgres_runs(sizes, work=work, cluster=cluster, fake=fake))
            results.update(await _memory_run(sizes, work=work, cluster=cluster, fake=fake))
            results.update(await _two_process_run(sizes, work=work, cluster=cluster, fake=fake))
            results.update(await _sqlite_runs(sizes, work=work, fake=fake))
    finally:
        cluster.close()
    results["ratios"] = {
        "pg_throughput_over_floor": results["pg_throughput"] / results["pg_floor"],
        "sqlite_throughput_over_floor": results["sqlite_throughput"] / results["sqlite_floor"],
        "two_processes_over_one": results["pg_two_process_throughput"] / results["pg_throughput"],
    }
    return results


async def _postgres_runs(
    sizes: Sizes, *, work: Path, cluster: PostgresCluster, fake: TimedSlack
) -> dict[str, Any]:
    progress("postgres: throughput, latency at half load, history")
    url = await migrated(cluster.create_database("bench_pg"))
    async with bridges(work, database_url=url, fake=fake) as (process,):
        load = LoadGenerator(fake=fake, urls=[events_url(process)])
        throughput, timings = await measured_throughput(
            load, sizes, messages=sizes.throughput_messages
        )
        half = await load.open_loop(
            rate=throughput / 2, seconds=sizes.half_load_seconds, conversations=sizes.conversations
        )
        history_conv = sizes.conversations + 1
        await fill_history(
            cluster.dsn("bench_pg"),
            conversation=f"slack:{TEAM}:D{history_conv:09d}",
            rows=sizes.history_rows,
        )
        empty_conv = sizes.conversations + 2
        await load.one_by_one(messages=2, conversation=empty_conv)  # warm the empty session
        empty = await load.one_by_one(messages=sizes.history_probes, conversation=empty_conv)
        full = await load.one_by_one(messages=sizes.history_probes, conversation=history_conv)
    return {
        "pg_throughput": throughput,
        "pg_failures": timings.failures + half.failures,
        "half_load_rate": throughput / 2,
        "ack_p50_ms": percentile(half.acks, 0.50) * 1000,
        "ack_p99_ms": percentile(half.acks, 0.99) * 1000,
        "e2e_p50_ms": percentile(half.ends, 0.50) * 1000,
        "e2e_p99_ms": percentile(half.ends, 0.99) * 1000,
        "history_empty_p50_ms": percentile(empty, 0.5) * 1000,
        "history_full_p50_ms": percentile(full, 0.5) * 1000,
        "history_ratio": percentile(full, 0.5) / percentile(empty, 0.5),
    }


async def _memory_run(
    sizes: Sizes, *, work: Path, cluster: PostgresCluster, fake: TimedSlack
) -> dict[str, Any]:
    progress("postgres: memory")
    url = await migrated(cluster.create_database("bench_memory"))
    async with bridges(work, database_url=url, fake=fake) as (process,):
        load = LoadGenerator(fake=fake, urls=[events_url(process)])
        sampler = RssSampler(process.pid)
        sampler.start()
        half = sizes.memory_messages // 2
        await load.closed_loop(
            messages=half, conversations=sizes.memory_sessions, concurrency=sizes.concurrency
        )
        half_rss = sampler.read()
        await load.closed_loop(
            messages=sizes.memory_messages - half,
            conversations=sizes.memory_sessions,
            concurrency=sizes.concurrency,
        )
        end_rss = sampler.read()
        await sampler.stop()
    peak = max(rss for _, rss in sampler.samples)
    return {
        "rss_peak_mb": peak / 2**20,
        "rss_half_mb": half_rss / 2**20,
        "rss_end_mb": end_rss / 2**20,
        "rss_end_over_half": end_rss / half_rss,
    }


async def _two_process_run(
    sizes: Sizes, *, work: Path, cluster: PostgresCluster, fake: TimedSlack
) -> dict[str, Any]:
    progress("postgres: two processes")
    url = await migrated(cluster.create_database("bench_two"))
    async with bridges(work, database_url=url, fake=fake, count=2) as processes:
        load = LoadGenerator(fake=fake, urls=[events_url(p) for p in processes])
        throughput, timings = await measured_throughput(
            load, sizes, messages=sizes.two_process_messages
        )
    return {"pg_two_process_throughput": throughput, "pg_two_process_failures": timings.failures}


async def _sqlite_runs(sizes: Sizes, *, work: Path, fake: TimedSlack) -> dict[str, Any]:
    progress("sqlite: floor and throughput")
    floor_path = work / "floor.db"
    await migrated(f"sqlite+aiosqlite:///{floor_path}")
    floor = await sqlite_floor(
        floor_path, messages=sizes.floor_messages, concurrency=32, conversations=sizes.conversations
    )
    url = await migrated(f"sqlite+aiosqlite:///{work / 'bench.db'}")
    async with bridges(work, database_url=url, fake=fake) as (process,):
        load = LoadGenerator(fake=fake, urls=[events_url(process)])
        throughput, timings = await measured_throughput(load, sizes, messages=sizes.sqlite_messages)
    return {
        "sqlite_floor": floor,
        "sqlite_throughput": throughput,
        "sqlite_failures": timings.failures,
    }


TARGETS: Sequence[tuple[str, str, str, float]] = (
    ("PostgreSQL throughput / floor", "ratios.pg_throughput_over_floor", ">=", 0.35),
    ("ack p99 at half load (ms)", "ack_p99_ms", "<=", 50),
    ("end-to-end p99 at half load (ms)", "e2e_p99_ms", "<=", 250),
    ("history ratio (100k / empty)", "history_ratio", "<=", 1.2),
    ("peak RSS (MB)", "rss_peak_mb", "<=", 250),
    ("RSS end / half-way", "rss_end_over_half", "<=", 1.1),
    ("two processes / one", "ratios.two_processes_over_one", ">=", 0.9),
)


def lookup(results: dict[str, Any], key: str) -> float:
    value: Any = results
    for part in key.split("."):
        value = value[part]
    return float(value)


def table(results: dict[str, Any]) -> str:
    rows = [
        ("PostgreSQL floor (raw asyncpg, msg/s)", f"{results['pg_floor']:.0f}", ""),
        ("PostgreSQL bridge throughput (msg/s)", f"{results['pg_throughput']:.0f}", ""),
        ("SQLite floor (raw aiosqlite, msg/s)", f"{results['sqlite_floor']:.0f}", ""),
        ("SQLite bridge throughput (msg/s)", f"{results['sqlite_throughput']:.0f}", ""),
        ("two processes throughput (msg/s)", f"{results['pg_two_process_throughput']:.0f}", ""),
        ("ack p50 at half load (ms)", f"{results['ack_p50_ms']:.1f}", ""),
        ("end-to-end p50 at half load (ms)", f"{results['e2e_p50_ms']:.1f}", ""),
    ]
    for label, key, op, target in TARGETS:
        value = lookup(results, key)
        met = value >= target if op == ">=" else value <= target
        rows.append((label, f"{value:.2f}", f"{op} {target:g} {'met' if met else 'NOT MET'}"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{label:<{width}}  {value:>10}  {target}" for label, value, target in rows)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["PG floor", "PG bridge", "PG 2 procs", "SQLite floor", "SQLite bridge"]
    values = [
        results["pg_floor"],
        results["pg_throughput"],
        results["pg_two_process_throughput"],
        results["sqlite_floor"],
        results["sqlite_throughput"],
    ]
    left.bar(names, values, color=["#999", "#2a6", "#2a6", "#999", "#26a"])
    left.set_ylabel("messages per second")
    left.set_title("Throughput")
    left.tick_params(axis="x", rotation=20)
    labels = ["ack p50", "ack p99", "e2e p50", "e2e p99"]
    latencies = [results[k] for k in ("ack_p50_ms", "ack_p99_ms", "e2e_p50_ms", "e2e_p99_ms")]
    right.bar(labels, latencies, color="#a62")
    right.axhline(50, color="#555", linestyle=":", linewidth=1)
    right.axhline(250, color="#555", linestyle="--", linewidth=1)
    right.set_ylabel("milliseconds")
    right.set_title(f"PostgreSQL latency at half load ({results['half_load_rate']:.0f} msg/s)")
    figure.suptitle(results["machine"])
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it still runs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else Sizes()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as work:
        results = asyncio.run(run(sizes, work=Path(work)))
    results["machine"] = machine()
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    name = "smoke" if args.smoke else "latest"
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    chart(results, args.out / f"{name}.png")
    print(table(results))
    print(f"\n{results['machine']}; {results['seconds']:.0f} s; written to {args.out}/{name}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
