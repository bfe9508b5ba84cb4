"""``python -m bench [--smoke]``: every figure of ``make bench`` in one run.

It starts its own PostgreSQL, runs the bridge as a real process (echo agent, Slack channel
pointed at the local fake Slack Web API) and the plain baseline (:mod:`bench.baseline`) as
another, loads each with the same burst of signed Slack DM events and prints the issue's
Targets table, judged against figures measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.load import TimedSlack
from bench.report import chart, table, verdicts
from bench.scenarios import (
    BOT_TOKEN,
    SIGNING_SECRET,
    SMOKE,
    Sizes,
    baseline_burst_run,
    bridge_burst_run,
    floor_run,
    memory_run,
    sqlite_run,
    steady_run,
    two_process_run,
)
from bench.streaming import streaming_run
from bench.uploads import upload_run
from tests.support.postgres import PostgresCluster, ensure_postgres_installed

RESULTS = Path(__file__).with_name("results")


async def run(sizes: Sizes, *, work: Path) -> dict[str, Any]:
    ensure_postgres_installed()
    results: dict[str, Any] = {"sizes": asdict(sizes), "load_before": os.getloadavg()}
    cluster = PostgresCluster(base_dir=work / "postgres")
    cluster.start()
    try:
        results.update(await floor_run(sizes, cluster=cluster))
        async with TimedSlack(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET) as fake:
            results.update(await bridge_burst_run(sizes, work=work, cluster=cluster, fake=fake))
            results.update(await baseline_burst_run(sizes, cluster=cluster, fake=fake))
            burst_rate = results["pg_burst"]["throughput"]
            results.update(
                await steady_run(
                    sizes, work=work, cluster=cluster, fake=fake, burst_rate=burst_rate
                )
            )
            results.update(await memory_run(sizes, work=work, cluster=cluster, fake=fake))
            results.update(await two_process_run(sizes, work=work, cluster=cluster, fake=fake))
            results.update(await sqlite_run(sizes, work=work, fake=fake))
        results.update(await streaming_run(sizes, work=work, cluster=cluster))
        results.update(await upload_run(sizes, work=work, cluster=cluster))
    finally:
        cluster.close()
    results["load_after"] = os.getloadavg()
    pg = results["pg_burst"]["throughput"]
    # Flat copies of the headline throughputs, as earlier results files had them.
    results["pg_throughput"] = pg
    results["baseline_throughput"] = results["baseline_burst"]["throughput"]
    results["sqlite_throughput"] = results["sqlite_burst"]["throughput"]
    results["pg_two_process_throughput"] = results["two_process_burst"]["throughput"]
    results["ratios"] = {
        "pg_burst_over_floor": pg / results["pg_floor"],
        "pg_burst_over_baseline": pg / results["baseline_throughput"],
        "sqlite_burst_over_floor": results["sqlite_throughput"] / results["sqlite_floor"],
        "two_processes_over_one": results["pg_two_process_throughput"] / pg,
    }
    return results


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
    results["verdicts"] = verdicts(results)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "smoke" if args.smoke else "latest"
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    chart(results, args.out / f"{name}.png")
    print(table(results))
    load = "/".join(f"{x:.1f}" for x in results["load_before"])
    print(
        f"\n{results['machine']}; load average before {load}; {results['seconds']:.0f} s;"
        f" written to {args.out}/{name}.json"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
