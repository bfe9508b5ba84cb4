"""What ``make bench`` prints and draws: the issue's Targets table, measured and judged, the
figures behind its ratios, and the chart (bridge vs plain baseline vs floor)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    figure: str
    key: str  # dotted path into the results
    op: str  # ">=" or "<="
    target: float
    bursts: tuple[str, ...] = ()  # the bursts the figure comes from (flagged when incomplete)
    unit: str = ""


TARGETS: Sequence[Target] = (
    Target(
        "burst on PostgreSQL, end to end / raw floor",
        "ratios.pg_burst_over_floor",
        ">=",
        0.35,
        ("pg_burst",),
    ),
    Target(
        "same burst / the plain baseline",
        "ratios.pg_burst_over_baseline",
        ">=",
        3,
        ("pg_burst", "baseline_burst"),
    ),
    Target(
        "bridge CPU per message over the burst",
        "pg_burst.cpu_ms_per_message",
        "<=",
        1.5,
        ("pg_burst",),
        " ms",
    ),
    Target(
        "answer rate during the burst / after it",
        "pg_burst.answer_during_over_after",
        ">=",
        0.5,
        ("pg_burst",),
    ),
    Target("ack p99 during the burst", "pg_burst.ack_p99_ms", "<=", 1000, ("pg_burst",), " ms"),
    Target("half load: ack p99", "ack_p99_ms", "<=", 50, unit=" ms"),
    Target("half load: end-to-end p99", "e2e_p99_ms", "<=", 250, unit=" ms"),
    Target(
        "SQLite burst / its aiosqlite floor",
        "ratios.sqlite_burst_over_floor",
        ">=",
        0.35,
        ("sqlite_burst",),
    ),
    Target(
        "two processes on PostgreSQL / one",
        "ratios.two_processes_over_one",
        ">=",
        1.0,
        ("two_process_burst", "pg_burst"),
    ),
    Target("history of 100,000 messages / empty", "history_ratio", "<=", 1.2),
    Target(
        "streamed reply: first text p50",
        "streaming.first_text_p50_ms",
        "<=",
        300,
        ("streaming",),
        " ms",
    ),
    Target("peak RSS", "rss_peak_mb", "<=", 250, unit=" MB"),
    Target("RSS end / half-way", "rss_end_over_half", "<=", 1.1),
)

BURST_NAMES = {
    "pg_burst": "the bridge's PostgreSQL burst",
    "baseline_burst": "the baseline's burst",
    "sqlite_burst": "the bridge's SQLite burst",
    "two_process_burst": "the two-process burst",
    "streaming": "the streaming run",
}


def lookup(results: dict[str, Any], key: str) -> float | None:
    value: Any = results
    for part in key.split("."):
        value = value[part]
    return None if value is None else float(value)


def judge(target: Target, value: float | None) -> bool:
    if value is None:
        # Only the answer ratio may be None: nothing was left to answer after ingest.
        return target.key.endswith("answer_during_over_after")
    return value >= target.target if target.op == ">=" else value <= target.target


def _number(value: float, unit: str = "") -> str:
    if value != value:  # NaN
        return "n/a"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}{unit}"


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for target in TARGETS:
        value = lookup(results, target.key)
        incomplete = [name for name in target.bursts if not results[name]["complete"]]
        if target.key.startswith("rss"):
            incomplete += [] if results.get("memory_complete", True) else ["memory"]
        rows.append(
            {
                "figure": target.figure,
                "target": f"{target.op} {target.target:g}{target.unit}",
                "measured": value,
                "met": judge(target, value),
                "incomplete": incomplete,
                "unit": target.unit,
            }
        )
    return rows


def table(results: dict[str, Any]) -> str:
    lines = [("figure", "target", "measured", "")]
    for row in results["verdicts"]:
        value = row["measured"]
        shown = (
            _number(value, row["unit"]) if value is not None else "kept up" if row["met"] else "n/a"
        )
        if row["incomplete"]:
            shown += " *"
        lines.append((row["figure"], row["target"], shown, "met" if row["met"] else "NOT MET"))
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    text = [
        f"{figure:<{widths[0]}}  {target:>{widths[1]}}  {measured:>{widths[2]}}  {verdict}"
        for figure, target, measured, verdict in lines
    ]
    text.append("")
    text += behind(results)
    notes = incomplete_notes(results)
    if notes:
        text.append("")
        text += notes
    return "\n".join(text)


def behind(results: dict[str, Any]) -> list[str]:
    """The measured figures the ratios are made of."""
    pg, base = results["pg_burst"], results["baseline_burst"]
    sizes = results["sizes"]
    shape = (
        f"{sizes['burst_messages']:,} events, {sizes['burst_conversations']} conversations,"
        f" {sizes['concurrency']} clients"
    )

    def rate(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f} msg/s"

    def cpu(figures: dict[str, Any]) -> str:
        ms = figures["cpu_ms_per_message"]
        return "n/a" if ms is None else f"{ms:.2f} ms/msg ({figures['cpu_seconds']:.1f} s)"

    rows = [
        ("PostgreSQL floor (raw asyncpg)", rate(results["pg_floor"])),
        (f"bridge burst ({shape})", rate(pg["throughput"])),
        ("baseline burst (slack-bolt + SQLAlchemy ORM)", rate(base["throughput"])),
        (
            "ingest rate: bridge / baseline",
            f"{rate(pg['ingest_rate'])} / {rate(base['ingest_rate'])}",
        ),
        (
            "bridge answer rate: during ingest / after",
            f"{rate(pg['answer_rate_during'])} / {rate(pg['answer_rate_after'])}",
        ),
        (
            "baseline answer rate: during ingest / after",
            f"{rate(base['answer_rate_during'])} / {rate(base['answer_rate_after'])}",
        ),
        (
            "burst ack p50 / p99: bridge",
            f"{_number(pg['ack_p50_ms'])} / {_number(pg['ack_p99_ms'])} ms",
        ),
        (
            "burst ack p50 / p99: baseline",
            f"{_number(base['ack_p50_ms'])} / {_number(base['ack_p99_ms'])} ms",
        ),
        ("process CPU: bridge / baseline", f"{cpu(pg)} / {cpu(base)}"),
        (
            f"two bridge processes ({sizes['two_process_messages']:,} events)",
            rate(results["two_process_burst"]["throughput"]),
        ),
        ("SQLite floor (raw aiosqlite)", rate(results["sqlite_floor"])),
        (
            f"SQLite bridge burst ({sizes['sqlite_messages']:,} events)",
            rate(results["sqlite_burst"]["throughput"]),
        ),
        (
            f"streamed replies ({results['streaming']['messages']} at"
            f" {results['streaming']['rate']:g}/s, {results['streaming']['chunks']} chunks"
            f" {results['streaming']['chunk_delay_ms']} ms apart): first text p50 / p99,"
            " complete p50",
            f"{_number(results['streaming']['first_text_p50_ms'])} /"
            f" {_number(results['streaming']['first_text_p99_ms'])} /"
            f" {_number(results['streaming']['complete_p50_ms'])} ms",
        ),
        (
            "Slack calls per streamed reply: p50 / max",
            f"{results['streaming']['calls_per_reply_p50']:g} /"
            f" {results['streaming']['calls_per_reply_max']:g}",
        ),
        (
            f"half load ({results['half_load_rate']:,.0f} msg/s): ack p50 / e2e p50",
            f"{_number(results['ack_p50_ms'])} / {_number(results['e2e_p50_ms'])} ms",
        ),
        *file_rows(results["files"]),
    ]
    width = max(len(label) for label, _ in rows)
    return [f"{label:<{width}}  {value}" for label, value in rows]


def file_rows(files: dict[str, Any]) -> list[tuple[str, str]]:
    """Web uploads and downloads of one file size, one at a time and a few at a time."""
    size, count, many = f"{files['file_mib']:g} MiB", files["files"], files["concurrency"]
    rows = []
    for direction in ("upload", "download"):
        one, several = files[f"{direction}_c1"], files[f"{direction}_c{many}"]
        rows.append(
            (
                f"{size} {direction} ({count} files): MiB/s, p50, 1 / {many} at a time",
                f"{_number(one['mib_per_s'])}, {_number(one['p50_ms'])} ms /"
                f" {_number(several['mib_per_s'])}, {_number(several['p50_ms'])} ms",
            )
        )
    rows.append(
        (
            "bridge CPU per MiB: upload / download",
            f"{_number(files['upload_cpu_ms_per_mib'])} /"
            f" {_number(files['download_cpu_ms_per_mib'])} ms",
        )
    )
    return rows


def incomplete_notes(results: dict[str, Any]) -> list[str]:
    notes = []
    for name, description in BURST_NAMES.items():
        figures = results[name]
        if not figures["complete"]:
            notes.append(
                f"* incomplete: {description} got {figures['answered']:,} of"
                f" {figures['messages']:,} replies within its cap of {figures['seconds']:.0f} s;"
                " its rates are replies received / elapsed and its CPU per message an upper"
                " bound (ingest of the unanswered rest included)"
            )
    if not results.get("memory_complete", True):
        notes.append("* incomplete: the memory run's replies did not all come within its cap")
    if results.get("half_load_unanswered"):
        notes.append(
            f"! {results['half_load_unanswered']} half-load messages got no reply within 60 s"
        )
    return notes


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.8))
    bars = [
        ("PG floor", results["pg_floor"], "#999"),
        ("PG bridge", results["pg_burst"]["throughput"], "#2a6"),
        ("PG baseline", results["baseline_burst"]["throughput"], "#c84"),
        ("PG 2 bridges", results["two_process_burst"]["throughput"], "#2a6"),
        ("SQLite floor", results["sqlite_floor"], "#999"),
        ("SQLite bridge", results["sqlite_burst"]["throughput"], "#26a"),
    ]
    left.bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
    for index, (_, value, _) in enumerate(bars):
        left.annotate(f"{value:,.0f}", (index, value), ha="center", va="bottom", fontsize=8)
    left.set_yscale("log")
    left.set_ylabel("messages per second (log)")
    left.set_title("Burst throughput, end to end")
    left.tick_params(axis="x", rotation=25)

    for name, label, color in (
        ("pg_burst", "bridge", "#2a6"),
        ("baseline_burst", "baseline", "#c84"),
    ):
        line = results[name]["timeline"]
        middle.plot(
            range(len(line["replies_per_second"])),
            line["replies_per_second"],
            label=label,
            color=color,
            linewidth=1,
        )
        middle.axvline(line["last_ack_second"], color=color, linestyle="--", linewidth=1)
    middle.set_xlabel("seconds since the first POST (dashed: last event acknowledged)")
    middle.set_ylabel("replies per second")
    middle.set_title("Answering during and after the burst (PostgreSQL)")
    middle.legend()

    labels = [
        "burst ack p99\nbridge",
        "burst ack p99\nbaseline",
        "half load\nack p99",
        "half load\ne2e p99",
    ]
    values = [
        results["pg_burst"]["ack_p99_ms"],
        results["baseline_burst"]["ack_p99_ms"],
        results["ack_p99_ms"],
        results["e2e_p99_ms"],
    ]
    right.bar(labels, values, color=["#2a6", "#c84", "#a62", "#a62"])
    right.set_yscale("log")
    right.axhline(1000, color="#555", linestyle=":", linewidth=1)
    right.set_ylabel("milliseconds (log)")
    right.set_title(f"Latency (half load: {results['half_load_rate']:,.0f} msg/s)")
    figure.suptitle(results["machine"])
    figure.tight_layout()
    figure.savefig(path, dpi=100)
