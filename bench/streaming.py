"""The streaming run of ``make bench``: how soon a streamed reply shows, and what it costs.

The echo agent streams each reply in 20 chunks 50 ms apart; the Slack channel shows it with
native streaming and status reactions, as configured by default. Events are offered at a
steady rate, each in a DM of its own, so every Web API call the bridge makes for a reply can be
counted by its channel. Time to first text runs from sending the event to the fake Slack
receiving the first call that shows the reply's text (``chat.startStream``, or
``chat.postMessage`` where the reply was not streamed).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.load import TimedSlack, percentile
from bench.scenarios import BOT_TOKEN, SIGNING_SECRET, Sizes, events_url, migrated, progress
from tests.fakes import slack
from tests.support.postgres import PostgresCluster
from tests.support.processes import serving_bridge, write_toml

CHUNKS = 20
CHUNK_DELAY_MS = 50
CHUNK_CHARS = 20
TEXT_CHARS = CHUNKS * CHUNK_CHARS
SHOWING_METHODS = ("chat.startStream", "chat.postMessage")
REPLY_METHOD_PREFIXES = ("chat.", "reactions.", "assistant.")
"""The calls one reply costs (name look-ups belong to the inbound message, not the reply)."""


class StreamingSlack(TimedSlack):
    """The strict fake, noting when each reply first showed text and when it was complete."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.first_text: dict[str, float] = {}
        self.complete: dict[str, float] = {}

    def _seen(self, text: Any, *, final: bool) -> None:
        marker = str(text or "").split(" ", 1)[0]
        if not marker.startswith("s"):
            return
        now = time.perf_counter()
        self.first_text.setdefault(marker, now)
        if final and len(str(text)) >= TEXT_CHARS:
            self.complete.setdefault(marker, now)
            if marker in self._awaited:
                self._awaited.discard(marker)
                if not self._awaited:
                    self._all_arrived.set()

    def _chat_start_stream(self, params: dict[str, Any]) -> dict[str, Any]:
        result = super()._chat_start_stream(params)
        self._seen(params.get("markdown_text"), final=False)
        return result

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        result = super()._chat_post_message(params)
        self._seen(params.get("text"), final=True)
        return result

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        result = super()._chat_update(params)
        self._seen(params.get("text"), final=True)
        return result


def streaming_config(path: Path, *, database_url: str, fake: StreamingSlack) -> Path:
    return write_toml(
        path,
        {
            "database": {"url": database_url, "pool_size": 20},
            "agents": [
                {
                    "slug": "bench",
                    "echo_stream_chunk_chars": CHUNK_CHARS,
                    "echo_stream_delay_ms": CHUNK_DELAY_MS,
                    "slack": {
                        "bot_token": BOT_TOKEN,
                        "signing_secret": SIGNING_SECRET,
                        "api_base_url": fake.api_url,
                    },
                }
            ],
        },
    )


def _text(marker: str) -> str:
    filler = "streamed words " * (TEXT_CHARS // 15 + 1)
    return f"{marker} {filler}"[:TEXT_CHARS]


async def streaming_run(sizes: Sizes, *, work: Path, cluster: PostgresCluster) -> dict[str, Any]:
    messages, rate = sizes.streaming_messages, sizes.streaming_rate
    progress(f"postgres: streamed replies ({messages} events at {rate:g}/s)")
    url = await migrated(cluster.create_database("bench_streaming"))
    async with StreamingSlack(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET) as fake:
        config = streaming_config(work / "streaming.toml", database_url=url, fake=fake)
        async with serving_bridge(config, cwd=work, start_within=60) as process:
            started = time.perf_counter()
            fake.expect([f"s{n}" for n in range(messages)])
            sent = await _offer(fake, events_url(process), messages=messages, rate=rate)
            await fake.wait_expected(within=sizes.smaller_within)
            seconds = time.perf_counter() - started
        firsts = [fake.first_text[m] - at for m, at in sent.items() if m in fake.first_text]
        completes = [fake.complete[m] - at for m, at in sent.items() if m in fake.complete]
        calls = Counter(
            _channel_of(call.params)
            for call in fake.calls
            if call.method.startswith(REPLY_METHOD_PREFIXES)
        )
        methods = Counter(
            call.method for call in fake.calls if call.method.startswith(REPLY_METHOD_PREFIXES)
        )
    per_reply = [calls[f"D{9_000_000 + n:09d}"] for n in range(messages)]
    return {
        "streaming": {
            "messages": messages,
            "rate": rate,
            "chunks": CHUNKS,
            "chunk_delay_ms": CHUNK_DELAY_MS,
            "complete": len(completes) == messages,
            "answered": len(completes),
            "seconds": seconds,
            "first_text_p50_ms": percentile(firsts, 0.50) * 1000,
            "first_text_p99_ms": percentile(firsts, 0.99) * 1000,
            "complete_p50_ms": percentile(completes, 0.50) * 1000,
            "calls_per_reply_p50": percentile(per_reply, 0.50),
            "calls_per_reply_max": max(per_reply, default=0),
            "calls_by_method": dict(methods),
        }
    }


async def _offer(fake: StreamingSlack, url: str, *, messages: int, rate: float) -> dict[str, float]:
    """Send ``messages`` DM events at ``rate`` per second, each in its own DM; when each went."""
    sent: dict[str, float] = {}
    begin = time.perf_counter()

    async def one(n: int) -> None:
        marker, user = f"s{n}", f"U{9_000_000 + n:09d}"
        fake.add_user(user, f"user{n}", f"User {n}")
        body = slack.message(channel=f"D{9_000_000 + n:09d}", user=user, text=_text(marker))
        sent[marker] = time.perf_counter()
        await fake.push_event(url, body, deadline=30)

    tasks = []
    for n in range(messages):
        delay = begin + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return sent


def _channel_of(params: dict[str, Any]) -> str:
    return str(params.get("channel") or params.get("channel_id") or "")
