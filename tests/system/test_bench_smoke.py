"""``make bench`` at tiny sizes, so the benchmark cannot rot between real runs, and the plain
baseline it measures the bridge against, checked to be the honest app it claims to be."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from bench.load import Burst, TimedSlack, Timings
from bench.scenarios import BOT_TOKEN, SIGNING_SECRET, serving_baseline
from tests.fakes import slack
from tests.support.processes import wait_until

ROOT = Path(__file__).resolve().parents[2]
FIGURES = (
    "pg_floor",
    "pg_throughput",
    "baseline_throughput",
    "ack_p50_ms",
    "ack_p99_ms",
    "e2e_p50_ms",
    "e2e_p99_ms",
    "history_ratio",
    "rss_peak_mb",
    "rss_end_over_half",
    "pg_two_process_throughput",
    "sqlite_floor",
    "sqlite_throughput",
)
BURSTS = ("pg_burst", "baseline_burst", "two_process_burst", "sqlite_burst")
ISSUE_ROWS = (
    "burst on PostgreSQL, end to end / raw floor",
    "same burst / the plain baseline",
    "bridge CPU per message over the burst",
    "answer rate during the burst / after it",
    "ack p99 during the burst",
    "half load: ack p99",
    "half load: end-to-end p99",
    "SQLite burst / its aiosqlite floor",
    "two processes on PostgreSQL / one",
    "history of 100,000 messages / empty",
    "streamed reply: first text p50",
    "peak RSS",
    "RSS end / half-way",
)


@pytest.mark.timeout(400)
def test_bench_smoke_prints_and_writes_every_figure(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads((tmp_path / "smoke.json").read_text())
    for name in FIGURES:
        assert figures[name] > 0, name
    for name in BURSTS:
        burst = figures[name]
        assert burst["complete"], (name, burst)  # tiny bursts finish well within their caps
        assert burst["failures"] == 0, (name, burst)
        assert burst["answered"] == burst["messages"]
    # CPU is read from /proc for the bridge and the baseline over their bursts.
    assert figures["pg_burst"]["cpu_ms_per_message"] > 0
    assert figures["baseline_burst"]["cpu_ms_per_message"] > 0
    streaming = figures["streaming"]
    assert streaming["complete"], streaming
    assert streaming["first_text_p50_ms"] > 0
    # Chunks are coalesced: a reply of 20 chunks costs fewer calls than it has chunks, status
    # reactions included.
    assert 0 < streaming["calls_per_reply_max"] < streaming["chunks"], streaming
    assert figures["half_load_failures"] == 0 and figures["half_load_unanswered"] == 0
    # Web uploads and downloads of a 5 MiB file, one at a time and four at a time.
    files = figures["files"]
    for phase in ("upload_c1", "upload_c4", "download_c1", "download_c4"):
        assert files[phase]["requests"] == files["files"] == 2, (phase, files)
        assert files[phase]["mib_per_s"] > 0 and files[phase]["p50_ms"] > 0, (phase, files)
    assert files["upload_cpu_ms_per_mib"] > 0 and files["download_cpu_ms_per_mib"] >= 0
    assert "5 MiB upload (2 files)" in result.stdout
    assert "5 MiB download (2 files)" in result.stdout
    assert [row["figure"] for row in figures["verdicts"]] == list(ISSUE_ROWS)
    for row in ISSUE_ROWS:
        assert row in result.stdout
    assert (tmp_path / "smoke.png").stat().st_size > 10_000


async def test_baseline_checks_signatures_then_stores_and_answers_each_dm(
    postgres_url: str,
) -> None:
    """The baseline is a real Slack app: a forged event is refused, a signed DM is acked,
    stored through its ORM tables and echoed once to the Slack Web API."""
    async with (
        TimedSlack(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET) as fake,
        serving_baseline(database_url=postgres_url, fake=fake) as process,
    ):
        url = f"{process.url}/slack/events"
        forged = slack.message(channel="D000000001", user="U000000001", text="forged")
        refused = await fake.push_event(url, forged, secret="not-the-signing-secret")
        assert refused.status == 401
        body = slack.message(channel="D000000001", user="U000000001", text="m-baseline")
        fake.expect(["m-baseline"])
        accepted = await fake.push_event(url, body)
        assert accepted.status == 200
        assert await fake.wait_expected(within=30)
        dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(dsn)
        try:

            async def reply_stored() -> bool:
                return bool(await connection.fetchval("SELECT count(*) FROM replies"))

            # The reply row is written once chat.postMessage has answered.
            await wait_until(reply_stored, within=30, what="the baseline's reply row")
            stored = await connection.fetch("SELECT channel, text FROM messages")
            replies = await connection.fetch("SELECT text FROM replies")
        finally:
            await connection.close()
    assert [tuple(row) for row in stored] == [("D000000001", "m-baseline")]
    assert [row["text"] for row in replies] == ["m-baseline"]
    assert [post["text"] for post in fake.posts] == ["m-baseline"]


def test_a_burst_cut_at_its_cap_reports_replies_over_elapsed_marked_incomplete() -> None:
    """A slow service must not hang the bench: what came within the cap is reported as such."""
    # 100 events from t=0; the last ack at 10 s; 30 replies by then, 50 more by the cap (60 s).
    arrivals = [0.3 * n for n in range(1, 31)] + [10 + n for n in range(1, 51)]
    burst = Burst(
        messages=100,
        started=0.0,
        last_ack_at=10.0,
        ended=60.0,
        arrivals=arrivals,
        timings=Timings(acks=[0.1] * 100),
        cpu_seconds=4.0,
    )
    figures = burst.figures()
    assert not figures["complete"] and figures["answered"] == 80
    assert figures["throughput"] == pytest.approx(80 / 60)
    assert figures["answer_rate_during"] == pytest.approx(30 / 10)
    assert figures["answer_rate_after"] == pytest.approx(50 / 50)
    assert figures["answer_during_over_after"] == pytest.approx(3.0)
    assert figures["cpu_ms_per_message"] == pytest.approx(4.0 / 80 * 1000)
