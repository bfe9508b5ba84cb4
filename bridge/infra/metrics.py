"""Prometheus metrics, on a registry of the app's own (several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ingested = Counter(
            "bridge_messages_ingested", "Inbound messages stored", ["channel"], registry=r
        )
        self.duplicates = Counter(
            "bridge_duplicates_dropped",
            "Redelivered inbound messages dropped",
            ["channel"],
            registry=r,
        )
        self.answered = Counter(
            "bridge_messages_answered",
            "User messages answered by an agent",
            ["channel"],
            registry=r,
        )
        self.delivered = Counter(
            "bridge_messages_delivered",
            "Replies delivered to the platform",
            ["channel"],
            registry=r,
        )
        self.failed = Counter(
            "bridge_messages_failed",
            "Messages that failed for good",
            ["channel", "stage"],
            registry=r,
        )
        self.delivery_retries = Counter(
            "bridge_delivery_retries", "Delivery attempts scheduled again", ["channel"], registry=r
        )
        self.latency = Histogram(
            "bridge_ingest_to_delivery_seconds",
            "From storing a user message to delivering its reply",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.a2a_messages = Counter(
            "bridge_a2a_messages",
            "Messages stored from one agent to another (asks and hand-offs)",
            ["channel"],
            registry=r,
        )
        self.a2a_stopped = Counter(
            "bridge_a2a_chains_stopped",
            "Agent-to-agent messages refused by a loop budget or the peers list",
            ["reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "bridge_batch_size",
            "Items written in one transaction by group commit (ingest, replies, deliveries)"
            " or claimed at once (claim_answer, claim_deliver)",
            ["batch"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "bridge_batch_seconds",
            "Time to write one group-commit batch, from taking it to its commit",
            ["batch"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2.5),
            registry=r,
        )
        self.first_text = Histogram(
            "bridge_first_text_seconds",
            "From storing a user message to the first text of its reply shown on the platform",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.live_calls = Histogram(
            "bridge_live_updates_per_reply",
            "Platform calls that showed one reply while it was written (posts and edits)",
            ["channel"],
            buckets=(0, 1, 2, 5, 10, 20, 50, 100),
            registry=r,
        )
        self.refused = Counter(
            "bridge_refused",
            "Inbound messages refused by an agent's access settings (not stored)",
            ["agent", "reason"],
            registry=r,
        )
        self.limited = Counter(
            "bridge_limited",
            "User messages stored but not answered: over a rate limit or token budget",
            ["agent", "limit"],
            registry=r,
        )
        self.tokens = Counter(
            "bridge_model_tokens",
            "Model tokens answering messages cost, as the backends reported them",
            ["agent", "kind"],
            registry=r,
        )
        self.pending = Gauge(
            "bridge_pending_work", "Messages waiting, by state", ["state"], registry=r
        )
        self.memory_folds = Counter(
            "bridge_memory_folds",
            "Folds of dropped messages into a session's summary (long memory), by outcome:"
            " folded, failed (model, timeout, database) or lost (a reset or another fold first)",
            ["agent", "outcome"],
            registry=r,
        )
        self.memory_folded_messages = Counter(
            "bridge_memory_folded_messages",
            "Messages folded into session summaries (long memory)",
            ["agent"],
            registry=r,
        )
        # Retention (bridge/retention): counted by the process that did the work.
        self.retention_purged = Counter(
            "bridge_retention_messages_purged",
            "Messages whose content retention deleted (the row stays as a tombstone)",
            registry=r,
        )
        self.retention_archived = Counter(
            "bridge_retention_sessions_archived",
            "Idle sessions retention soft-deleted",
            registry=r,
        )
        self.retention_runs = Counter(
            "bridge_retention_runs",
            "Retention runs: done, skipped (another process holds the lease), lost, failed",
            ["outcome"],
            registry=r,
        )
        self.retention_last_run = Gauge(
            "bridge_retention_last_run_timestamp_seconds",
            "When this process last finished a retention run (Unix time)",
            registry=r,
        )
        # Platform files fetched by the answer step (bridge/files/fetch.py).
        self.files_fetched = Counter(
            "bridge_files_fetched",
            "Platform files the answer step tried to fetch: stored, refused, failed",
            ["channel", "outcome"],
            registry=r,
        )
        self.files_fetched_bytes = Counter(
            "bridge_files_fetched_bytes",
            "Bytes of platform files fetched and stored",
            ["channel"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
