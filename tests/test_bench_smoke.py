"""``make bench`` at tiny sizes, so the benchmark cannot rot between real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = (
    "pg_floor",
    "pg_throughput",
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


def test_bench_smoke_prints_and_writes_every_figure(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads((tmp_path / "smoke.json").read_text())
    for name in FIGURES:
        assert figures[name] > 0, name
    assert figures["pg_failures"] == 0 and figures["sqlite_failures"] == 0
    assert "PostgreSQL throughput / floor" in result.stdout
    assert (tmp_path / "smoke.png").stat().st_size > 10_000
